"""RentalEscrow.submitReports: cumulative totals, crediting from the totals, clamping, implicit start and final
reports. Every SkipReason has its own test in test_escrow_skips.py."""

import brownie
import pytest

from offchain.protocol.reports import ReportStatus, rental_id
from tests.contracts.helpers import PRICE, RentalStatus, SkipReason, SlashReason, block_time, error, report, wait
from tests.contracts.unit.RentalEscrow.escrow_helpers import (
    DURATION,
    earnings,
    event,
    fee_of,
    sla_slash_bps,
)

ROOT = b"\x22" * 32
FLOOR = 4_000  # utilisation floor of the weighted offer, so that utilisation changes the price
WEIGHTED_PRICE = 1_237  # with FLOOR, most totals earn a fractional amount, so rounding shows


@pytest.fixture
def weighted(escrow, list_offer, open_rental, provider2, renter2):
    """A running rental of a utilisation-weighted offer of provider2; returns (rental id, start time)."""
    rid = open_rental(renter2, list_offer(provider2, price=WEIGHTED_PRICE, util_floor_bps=FLOOR), duration=DURATION)
    return rid, escrow.start(rid, {"from": provider2}).timestamp


def test_report_applies_its_totals(escrow, rid, started, submit):
    wait(600)

    tx = submit([report(rid, 1, started + 600, 590, root=ROOT)])

    assert event(tx, "ReportApplied") == {
        "rentalId": rid,
        "seq": 1,
        "coveredUntil": started + 600,
        "deliveredSeconds": 590,
        "utilSeconds": 590,
        "telemetryRoot": "0x" + ROOT.hex(),
    }
    state = escrow.getRental(rid)
    assert (state["lastSeq"], state["coveredSeconds"], state["deliveredSeconds"], state["utilSeconds"]) == (
        1,
        600,
        590,
        590,
    )
    assert state["earned"] == PRICE * 590


def test_reports_apply_while_escrow_paused(escrow, rid, started, deployer, submit):
    escrow.pause({"from": deployer})
    wait(600)

    submit([report(rid, 1, started + 600, 600)])

    assert escrow.getRental(rid)["lastSeq"] == 1


def test_later_report_replaces_the_totals(escrow, rid, started, submit):
    wait(600)
    submit([report(rid, 1, started + 300, 300)])

    submit([report(rid, 2, started + 600, 500)])

    state = escrow.getRental(rid)
    assert (state["lastSeq"], state["coveredSeconds"], state["deliveredSeconds"]) == (2, 600, 500)
    assert state["earned"] == PRICE * 500


def test_report_skipping_58_seqs_credits_the_formula_on_its_totals(escrow, weighted, submit):
    rid, started = weighted
    wait(3_000)
    submit([report(rid, 1, started + 60, 59, util=31)])

    tx = submit([report(rid, 60, started + 3_000, 2_911, util=1_777)])

    assert event(tx, "ReportApplied")["seq"] == 60
    state = escrow.getRental(rid)
    assert (state["lastSeq"], state["coveredSeconds"], state["deliveredSeconds"], state["utilSeconds"]) == (
        60,
        3_000,
        2_911,
        1_777,
    )
    expected = earnings(WEIGHTED_PRICE, 2_911, 1_777, FLOOR)
    assert WEIGHTED_PRICE * (2_911 * FLOOR + 1_777 * (10_000 - FLOOR)) % 10_000 != 0
    assert state["earned"] == expected


def test_first_report_may_carry_any_seq(escrow, rid, started, submit):
    wait(600)

    submit([report(rid, 7, started + 600, 600)])

    assert escrow.getRental(rid)["lastSeq"] == 7


def test_report_adding_no_coverage_applies_its_seq_and_credits_nothing(escrow, rid, started, submit):
    wait(600)
    submit([report(rid, 1, started + 300, 300)])

    tx = submit([report(rid, 2, started + 300, 300)])

    assert event(tx, "ReportApplied")["seq"] == 2
    state = escrow.getRental(rid)
    assert (state["lastSeq"], state["coveredSeconds"], state["earned"]) == (2, 300, PRICE * 300)


def test_earned_is_the_formula_on_the_last_totals_to_the_unit(escrow, weighted, submit):
    rid, started = weighted
    wait(DURATION)
    totals = [(61, 60, 7), (122, 119, 53), (183, 181, 54), (3_599, 3_400, 2_221)]
    reports = [report(rid, seq, started + c, d, util=u) for seq, (c, d, u) in enumerate(totals, start=1)]

    earned = []
    for one in reports:
        submit([one])
        earned.append(escrow.getRental(rid)["earned"])

    assert earned == [earnings(WEIGHTED_PRICE, d, u, FLOOR) for _, d, u in totals]


def test_batch_mixing_valid_skipped_and_stale_reports_applies_the_valid_ones(escrow, offer, rid, started, submit):
    wait(900)
    unknown = rental_id(offer, 2)
    batch = [
        report(rid, 1, started + 300, 290),
        report(unknown, 1, started + 300, 300),
        report(rid, 3, started + 600, 580),
        report(rid, 2, started + 450, 440),  # stale: an older report landing after a newer one
        report(rid, 4, started + 900, 570),  # delivered below the applied total
        report(rid, 5, started + 900, 870, util=860),
    ]

    tx = submit(batch)

    assert [e["seq"] for e in tx.events["ReportApplied"]] == [1, 3, 5]
    assert [(e["rentalId"], e["seq"], e["reason"]) for e in tx.events["ReportSkipped"]] == [
        (unknown, 1, SkipReason.UNKNOWN_RENTAL),
        (rid, 2, SkipReason.SEQ_NOT_INCREASING),
        (rid, 4, SkipReason.TOTALS_DECREASED),
    ]
    state = escrow.getRental(rid)
    assert (state["lastSeq"], state["coveredSeconds"], state["deliveredSeconds"], state["utilSeconds"]) == (
        5,
        900,
        870,
        860,
    )
    assert state["earned"] == PRICE * 870


def test_report_past_the_rental_end_is_clamped_to_the_end(escrow, rid, started, submit):
    wait(DURATION + 100)

    tx = submit([report(rid, 1, started + DURATION + 100, DURATION + 100)])

    applied = event(tx, "ReportApplied")
    assert (applied["coveredUntil"], applied["deliveredSeconds"], applied["utilSeconds"]) == (
        started + DURATION,
        DURATION,
        DURATION,
    )
    state = escrow.getRental(rid)
    assert (state["coveredSeconds"], state["earned"]) == (DURATION, PRICE * DURATION)


def test_clamping_keeps_utilisation_within_the_clamped_delivery(escrow, weighted, submit):
    rid, started = weighted
    wait(DURATION + 100)

    tx = submit([report(rid, 1, started + DURATION + 100, DURATION + 50, util=DURATION + 20)])

    applied = event(tx, "ReportApplied")
    assert (applied["deliveredSeconds"], applied["utilSeconds"]) == (DURATION, DURATION)
    assert escrow.getRental(rid)["earned"] == WEIGHTED_PRICE * DURATION


def test_report_after_termination_is_clamped_to_the_new_end(escrow, weighted, renter2, submit):
    rid, started = weighted
    wait(1_000)
    ended = escrow.terminate(rid, {"from": renter2}).timestamp
    wait(500)
    now = block_time()

    tx = submit([report(rid, 1, now, now - started - 10, util=now - started - 20)])

    applied = event(tx, "ReportApplied")
    assert (applied["coveredUntil"], applied["deliveredSeconds"], applied["utilSeconds"]) == (
        ended,
        ended - started,
        ended - started,
    )
    assert escrow.getRental(rid)["earned"] == WEIGHTED_PRICE * (ended - started)


def test_report_after_termination_cannot_earn_beyond_what_the_deposit_kept(escrow, rid, started, renter, submit):
    wait(1_000)
    ended = escrow.terminate(rid, {"from": renter}).timestamp
    wait(500)

    submit([report(rid, 1, block_time(), ended - started)])
    tx = submit([report(rid, 2, block_time(), block_time() - started, status=ReportStatus.COMPLETED)])

    finalized = event(tx, "RentalFinalized")
    assert (finalized["providerPayout"] + finalized["fee"], finalized["refund"]) == (PRICE * (ended - started), 0)


def test_first_report_starts_an_unstarted_rental_from_its_opening(escrow, rid, submit):
    opened = escrow.getRental(rid)["since"]
    wait(300)

    tx = submit([report(rid, 1, opened + 300, 300)])

    assert event(tx, "RentalStarted") == {"rentalId": rid, "startedAt": opened, "byReport": True}
    state = escrow.getRental(rid)
    assert (state["status"], state["since"], state["coveredSeconds"]) == (RentalStatus.RUNNING, opened, 300)
    assert state["earned"] == PRICE * 300


def test_completed_report_finalises_at_once(escrow, offer, rid, started, submit):
    wait(600)

    tx = submit([report(rid, 1, started + 600, 600, status=ReportStatus.COMPLETED)])

    assert escrow.getRental(rid)["status"] == RentalStatus.COMPLETED
    assert event(tx, "RentalFinalized")["status"] == RentalStatus.COMPLETED
    assert escrow.liveRentalOf(offer) == 0


def test_completion_report_settles_the_covered_time_not_delivered_as_missed(
    escrow, registry, weighted, provider2, renter2, submit, params
):
    rid, started = weighted
    wait(1_000)
    submit([report(rid, 3, started + 400, 395, util=200)])

    tx = submit([report(rid, 9, started + 1_000, 930, util=611, status=ReportStatus.COMPLETED)])

    earned = earnings(WEIGHTED_PRICE, 930, 611, FLOOR)
    fee = fee_of(earned, params.fee_bps)
    slash_bps = sla_slash_bps(70, 1_000, params.sla_bps, params.sla_slash_bps)
    assert slash_bps != 0
    assert event(tx, "RentalFinalized") == {
        "rentalId": rid,
        "status": RentalStatus.COMPLETED,
        "providerPayout": earned - fee,
        "fee": fee,
        "refund": WEIGHTED_PRICE * DURATION - earned,
        "deliveredSeconds": 930,
        "missedSeconds": 1_000 - 930,
        "slashed": registry.collateralOf(rid >> 32) * slash_bps // 10_000,
        "slashReason": SlashReason.SLA_BREACH,
    }
    assert registry.getProvider(provider2)["secondsMissed"] == 70
    assert escrow.balanceOf(renter2) == WEIGHTED_PRICE * DURATION - earned


def test_failed_report_finalises_at_once(escrow, offer, rid, started, submit):
    wait(600)

    tx = submit([report(rid, 1, started + 600, 600, status=ReportStatus.FAILED)])

    assert escrow.getRental(rid)["status"] == RentalStatus.FAILED
    assert event(tx, "RentalFinalized")["refund"] == PRICE * (DURATION - 600)
    assert escrow.liveRentalOf(offer) == 0


def test_empty_batch_reverts(submit):
    with brownie.reverts(error("Escrow_EmptyBatch")):
        submit([])


def test_batch_of_many_reports_across_several_rentals(
    escrow, provider, provider2, renter, renter2, list_offer, open_rental, submit
):
    rentals = [
        open_rental(r, list_offer(p))
        for p, r in ((provider, renter), (provider2, renter2), (provider, renter2), (provider2, renter))
    ]
    starts = [escrow.start(r, {"from": p}).timestamp for r, p in zip(rentals, (provider, provider2) * 2)]
    wait(900)
    batch = [
        report(
            r,
            seq,
            s + 300 * seq,
            sum(300 - i * 10 - n for n in range(1, seq + 1)),
            status=ReportStatus.COMPLETED if seq == 3 and i == 0 else ReportStatus.RUNNING,
        )
        for seq in (1, 2, 3)
        for i, (r, s) in enumerate(zip(rentals, starts))
    ]

    tx = submit(batch)

    assert len(tx.events["ReportApplied"]) == 12
    for i, r in enumerate(rentals):
        state = escrow.getRental(r)
        delivered = sum(300 - i * 10 - seq for seq in (1, 2, 3))
        assert (state["lastSeq"], state["coveredSeconds"], state["deliveredSeconds"]) == (3, 900, delivered)
        assert state["earned"] == PRICE * delivered
    assert escrow.getRental(rentals[0])["status"] == RentalStatus.COMPLETED
    assert [escrow.getRental(r)["status"] for r in rentals[1:]] == [RentalStatus.RUNNING] * 3
