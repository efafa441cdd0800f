"""RentalEscrow.submitReports: report validation, clamping, implicit start, final reports and skipping."""

import brownie
import pytest

from offchain.protocol.reports import ReportStatus, rental_id
from tests.contracts.helpers import PRICE, RentalStatus, SkipReason, block_time, error, report, wait
from tests.contracts.unit.RentalEscrow.escrow_helpers import DURATION, event, unchecked_report

ROOT = b"\x22" * 32


@pytest.fixture
def running_rental(escrow, list_offer, open_rental, provider2, renter2):
    """A second running rental, on provider2's offer; returns (rental id, start time)."""
    rid = open_rental(renter2, list_offer(provider2), duration=DURATION)
    return rid, escrow.start(rid, {"from": provider2}).timestamp


def test_report_accrues_delivered_time(escrow, rid, started, submit):
    wait(600)

    tx = submit([report(rid, 1, started + 600, 590, root=ROOT)])

    assert event(tx, "ReportApplied") == {
        "rentalId": rid,
        "seq": 1,
        "periodEnd": started + 600,
        "deliveredSeconds": 590,
        "avgUtilBps": 10_000,
        "earned": PRICE * 590,
        "telemetryRoot": "0x" + ROOT.hex(),
    }
    state = escrow.getRental(rid)
    assert (state["lastSeq"], state["reportedSeconds"], state["deliveredSeconds"]) == (1, 600, 590)
    assert state["earned"] == PRICE * 590


def test_reports_apply_while_escrow_paused(escrow, rid, started, deployer, submit):
    escrow.pause({"from": deployer})
    wait(600)

    submit([report(rid, 1, started + 600, 600)])

    assert escrow.getRental(rid)["lastSeq"] == 1


def test_consecutive_reports_accumulate(escrow, rid, started, submit):
    wait(600)
    submit([report(rid, 1, started + 300, 300)])

    submit([report(rid, 2, started + 600, 200)])

    state = escrow.getRental(rid)
    assert (state["lastSeq"], state["reportedSeconds"], state["deliveredSeconds"]) == (2, 600, 500)
    assert state["earned"] == PRICE * 500


def test_report_with_skipped_seq_reverts(rid, started, submit):
    wait(600)

    with brownie.reverts(error("Escrow_UnexpectedSeq", rid, 1, 2)):
        submit([report(rid, 2, started + 600, 600)])


def test_report_repeating_last_seq_reverts(rid, started, submit):
    wait(600)
    submit([report(rid, 1, started + 300, 300)])

    with brownie.reverts(error("Escrow_UnexpectedSeq", rid, 2, 1)):
        submit([report(rid, 1, started + 600, 300)])


def test_report_period_ending_in_the_future_reverts(rid, started, submit):
    future = block_time() + 3_600

    with brownie.reverts(revert_pattern=rf"Escrow_PeriodEndInFuture: {rid}, {future}, \d+"):
        submit([report(rid, 1, future, 0)])


def test_report_period_ending_at_the_start_reverts(rid, started, submit):
    wait(60)

    with brownie.reverts(error("Escrow_PeriodEndNotAfterLast", rid, started, started)):
        submit([report(rid, 1, started, 0)])


def test_report_period_ending_at_the_last_period_end_reverts(rid, started, submit):
    wait(600)
    submit([report(rid, 1, started + 300, 300)])

    with brownie.reverts(error("Escrow_PeriodEndNotAfterLast", rid, started + 300, started + 300)):
        submit([report(rid, 2, started + 300, 0)])


def test_report_delivering_more_than_its_period_reverts(rid, started, submit):
    wait(600)
    submit([report(rid, 1, started + 300, 300)])

    with brownie.reverts(error("Escrow_DeliveredExceedsPeriod", rid, 101, 100)):
        submit([report(rid, 2, started + 400, 101)])


def test_report_with_utilisation_above_10000_bps_reverts(rid, started, submit):
    wait(600)

    with brownie.reverts(error("Escrow_UtilisationOutOfRange", rid, 10_001)):
        submit([unchecked_report(rid, 1, started + 600, 600, util=10_001)])


def test_report_with_unknown_status_reverts(rid, started, submit):
    wait(600)

    with brownie.reverts(error("Escrow_UnknownReportStatus", rid, 3)):
        submit([unchecked_report(rid, 1, started + 600, 600, status=3)])


def test_report_past_the_rental_end_is_clamped_to_the_end(escrow, rid, started, submit):
    wait(DURATION + 100)

    tx = submit([report(rid, 1, started + DURATION + 100, DURATION + 100)])

    applied = event(tx, "ReportApplied")
    assert (applied["periodEnd"], applied["deliveredSeconds"], applied["earned"]) == (
        started + DURATION,
        DURATION,
        PRICE * DURATION,
    )
    assert escrow.getRental(rid)["reportedSeconds"] == DURATION


def test_first_report_starts_an_unstarted_rental_from_its_opening(escrow, rid, submit):
    opened = escrow.getRental(rid)["since"]
    wait(300)

    tx = submit([report(rid, 1, opened + 300, 300)])

    assert event(tx, "RentalStarted") == {"rentalId": rid, "startedAt": opened, "byReport": True}
    state = escrow.getRental(rid)
    assert (state["status"], state["since"], state["reportedSeconds"]) == (RentalStatus.RUNNING, opened, 300)
    assert state["earned"] == PRICE * 300


def test_completed_report_finalises_at_once(escrow, offer, rid, started, submit):
    wait(600)

    tx = submit([report(rid, 1, started + 600, 600, status=ReportStatus.COMPLETED)])

    assert escrow.getRental(rid)["status"] == RentalStatus.COMPLETED
    assert event(tx, "RentalFinalized")["status"] == RentalStatus.COMPLETED
    assert escrow.liveRentalOf(offer) == 0


def test_failed_report_finalises_at_once(escrow, offer, rid, started, submit):
    wait(600)

    tx = submit([report(rid, 1, started + 600, 600, status=ReportStatus.FAILED)])

    assert escrow.getRental(rid)["status"] == RentalStatus.FAILED
    assert event(tx, "RentalFinalized")["refund"] == PRICE * (DURATION - 600)
    assert escrow.liveRentalOf(offer) == 0


def test_batch_skips_report_of_final_rental_and_applies_live_one(escrow, rid, started, running_rental, submit):
    live, live_started = running_rental
    wait(600)
    submit([report(rid, 1, started + 300, 300, status=ReportStatus.COMPLETED)])

    tx = submit([report(rid, 2, started + 600, 300), report(live, 1, live_started + 600, 600)])

    assert event(tx, "ReportSkipped") == {"rentalId": rid, "seq": 2, "reason": SkipReason.RENTAL_CLOSED}
    assert event(tx, "ReportApplied")["rentalId"] == live
    assert escrow.getRental(live)["lastSeq"] == 1
    assert escrow.getRental(rid)["lastSeq"] == 1


def test_batch_skips_report_of_unknown_rental(escrow, offer, rid, running_rental, submit):
    live, live_started = running_rental
    wait(600)
    unknown = rental_id(offer, 2)

    tx = submit([report(unknown, 1, live_started + 600, 600), report(live, 1, live_started + 600, 600)])

    assert event(tx, "ReportSkipped") == {"rentalId": unknown, "seq": 1, "reason": SkipReason.UNKNOWN_RENTAL}
    assert escrow.getRental(live)["lastSeq"] == 1


def test_batch_skips_report_of_rental_past_its_start_timeout(escrow, rid, running_rental, submit, params):
    live, live_started = running_rental
    opened = escrow.getRental(rid)["since"]
    wait(params.start_timeout + 1)

    tx = submit([report(rid, 1, opened + 300, 300), report(live, 1, live_started + 600, 600)])

    assert event(tx, "ReportSkipped") == {"rentalId": rid, "seq": 1, "reason": SkipReason.START_TIMED_OUT}
    assert escrow.getRental(rid)["status"] == RentalStatus.OPEN
    assert escrow.getRental(live)["lastSeq"] == 1


def test_batch_with_every_report_skipped_reverts(offer, rid, started, submit):
    wait(600)
    submit([report(rid, 1, started + 300, 300, status=ReportStatus.COMPLETED)])

    with brownie.reverts(error("Escrow_BatchHadNoEffect")):
        submit([report(rid, 2, started + 600, 300), report(rental_id(offer, 9), 1, started + 600, 0)])


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
            300 - i * 10 - seq,
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
        assert (state["lastSeq"], state["reportedSeconds"], state["deliveredSeconds"]) == (3, 900, delivered)
        assert state["earned"] == PRICE * delivered
    assert escrow.getRental(rentals[0])["status"] == RentalStatus.COMPLETED
    assert [escrow.getRental(r)["status"] for r in rentals[1:]] == [RentalStatus.RUNNING] * 3
