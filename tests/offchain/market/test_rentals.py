"""`offchain.market.rentals`: a rental folded from the escrow's raw logs agrees with the escrow's own view of it
(`getRental`) however it ends, and reads the same from its events alone once a later rental replaced it; its
periods are the differences of the cumulative reports, its claims and lifetime payout those the escrow credited."""

from __future__ import annotations

import pytest
from brownie import chain, web3
from eth_utils import keccak

from offchain.chain.events import RentalStarted, decode_log
from offchain.market.rentals import RentalHistory, earnings
from offchain.protocol.messages import gpu_uuid_hash
from offchain.protocol.reports import Report, ReportStatus
from offchain.protocol.status import DeclineReason, RentalStatus, SkipReason, SlashReason
from scripts.deploy import SuiteParams
from tests.offchain.chain.helpers import report_args
from tests.offchain.conftest import PRICE

PARAMS = SuiteParams()  # what the `suite` fixture deployed with
DURATION = 3_600
JOB = keccak(text="rentals test job")


def history(suite, rental_id: int, util_floor_bps: int = 10_000) -> RentalHistory | None:
    """The rental folded from the escrow's raw logs of it (the `offer` fixture's floor is 100 %)."""
    logs = web3.eth.get_logs(
        {
            "address": suite.escrow.address,
            "fromBlock": suite.escrow.tx.block_number,
            "toBlock": "latest",
            "topics": [None, "0x" + rental_id.to_bytes(32, "big").hex()],
        }
    )
    return RentalHistory.fold((decode_log("RentalEscrow", log) for log in logs), util_floor_bps)


def open_rental(suite, offer: int, renter) -> int:
    return suite.escrow.openRental(offer, DURATION, PRICE, JOB, {"from": renter}).return_value


def report(
    suite,
    relayer,
    rental_id: int,
    seq: int,
    covered_until: int,
    delivered: int,
    util: int,
    status: ReportStatus = ReportStatus.RUNNING,
) -> None:
    """Lands one cumulative report (totals `delivered` and `util` seconds) as two of the three oracles would."""
    reports = [
        Report(
            rental_id=rental_id,
            seq=seq,
            covered_until=covered_until,
            delivered_seconds=delivered,
            util_seconds=util,
            status=status,
        )
    ]
    suite.escrow.submitReports(*report_args(suite, reports), {"from": relayer})


def assert_agrees_with_the_escrow(suite, rental: RentalHistory) -> None:
    """The folded rental reads what `getRental` returns of it (the opening time aside, which logs do not carry)."""
    on_chain = suite.read(lambda r: r.rental(rental.rental_id))
    assert (rental.status, rental.renter, rental.price_per_second, rental.duration) == (
        on_chain.status,
        on_chain.renter,
        on_chain.price_per_second,
        on_chain.duration,
    )
    assert (rental.last_seq, rental.covered_seconds, rental.delivered_seconds, rental.util_seconds) == (
        on_chain.last_seq,
        on_chain.covered_seconds,
        on_chain.delivered_seconds,
        on_chain.util_seconds,
    )
    if on_chain.status is not RentalStatus.NONE:
        assert (rental.earned, rental.claimed, rental.util_floor_bps) == (
            on_chain.earned,
            on_chain.claimed,
            on_chain.util_floor_bps,
        )
    opened_at = web3.eth.get_block(rental.opened.block_number).timestamp
    assert rental.model_copy(update={"opened_at": opened_at}).since == on_chain.since


def started(suite, provider, offer, renter) -> tuple[int, int]:
    rental_id = open_rental(suite, offer, renter)
    since = suite.escrow.start(rental_id, {"from": provider}).timestamp
    chain.sleep(40)
    chain.mine()
    return rental_id, since


def test_a_rental_cancelled_before_its_start(suite, offer, renter):
    rental_id = open_rental(suite, offer, renter)
    suite.escrow.terminate(rental_id, {"from": renter})

    rental = history(suite, rental_id)

    assert_agrees_with_the_escrow(suite, rental)
    assert rental.status is RentalStatus.CANCELLED and rental.status.is_final
    assert (rental.started_at, rental.ends_at, rental.terminated, rental.avg_util_bps) == (None, None, None, None)
    assert rental.refunded == rental.settlement.refund == rental.deposit == PRICE * DURATION


def test_a_declined_rental_keeps_its_reason(suite, offer, provider, renter):
    rental_id = open_rental(suite, offer, renter)
    suite.escrow.decline(rental_id, DeclineReason.EXCEEDS_OFFER, {"from": provider})

    rental = history(suite, rental_id)

    assert_agrees_with_the_escrow(suite, rental)
    assert (rental.status, rental.decline_reason) == (RentalStatus.DECLINED, DeclineReason.EXCEEDS_OFFER)
    assert (rental.earned, rental.refunded, rental.settlement.slashed) == (0, rental.deposit, 0)


def test_a_rental_never_started_times_out_with_a_slash(suite, offer, renter, relayer):
    rental_id = open_rental(suite, offer, renter)
    chain.sleep(PARAMS.start_timeout + 1)
    suite.escrow.claimStartTimeout(rental_id, {"from": relayer})

    rental = history(suite, rental_id)

    assert_agrees_with_the_escrow(suite, rental)
    assert rental.status is RentalStatus.TIMED_OUT and rental.started is None
    assert rental.settlement.slash_reason is SlashReason.START_TIMEOUT and rental.settlement.slashed > 0
    assert rental.refunded == rental.deposit


def test_a_terminated_rental_expires_with_its_reports(suite, offer, provider, renter, relayer):
    rental_id, since = started(suite, provider, offer, renter)
    report(suite, relayer, rental_id, 1, since + 10, 10, 9)
    report(suite, relayer, rental_id, 2, since + 30, 15, 10)
    ends_at = suite.escrow.terminate(rental_id, {"from": renter}).timestamp

    terminated = history(suite, rental_id)
    assert_agrees_with_the_escrow(suite, terminated)
    assert (terminated.status, terminated.terminated_at, terminated.ends_at) == (
        RentalStatus.TERMINATED,
        ends_at,
        ends_at,
    )
    assert (terminated.booked_duration, terminated.duration) == (DURATION, ends_at - since)
    assert terminated.refunded == terminated.termination_refund == PRICE * (since + DURATION - ends_at)
    assert terminated.avg_util_bps == round(10 * 10_000 / 15)
    assert [(p.start, p.covered_until, p.delivered_seconds, p.util_bps) for p in terminated.periods] == [
        (since, since + 10, 10, 9_000),
        (since + 10, since + 30, 5, 2_000),
    ]
    assert sum(p.earned for p in terminated.periods) == terminated.earned == 15 * PRICE

    chain.sleep(PARAMS.report_grace + 1)
    suite.escrow.finalize(rental_id, {"from": relayer})
    expired = history(suite, rental_id)

    assert_agrees_with_the_escrow(suite, expired)
    assert expired.status is RentalStatus.EXPIRED
    assert expired.settlement.missed_seconds == expired.duration - 15
    assert expired.earned + expired.refunded == expired.deposit


@pytest.mark.parametrize("outcome", [ReportStatus.COMPLETED, ReportStatus.FAILED])
def test_a_rental_its_last_report_settles(suite, offer, provider, renter, relayer, outcome):
    rental_id, since = started(suite, provider, offer, renter)
    report(suite, relayer, rental_id, 1, since + 20, 20, 20, outcome)

    rental = history(suite, rental_id)

    assert_agrees_with_the_escrow(suite, rental)
    assert rental.status is RentalStatus[outcome.name]
    assert (rental.covered_seconds, rental.delivered_seconds, rental.ends_at) == (20, 20, since + DURATION)
    assert rental.earned == rental.settlement.provider_payout + rental.settlement.fee == 20 * PRICE
    assert rental.earned + rental.refunded == rental.deposit


def test_a_rental_its_first_report_started(suite, offer, renter, relayer):
    rental_id = open_rental(suite, offer, renter)
    opened_at = web3.eth.get_block("latest").timestamp
    chain.sleep(30)
    chain.mine()
    report(suite, relayer, rental_id, 1, opened_at + 15, 12, 9)

    rental = history(suite, rental_id)

    assert_agrees_with_the_escrow(suite, rental)
    assert (rental.status, rental.started_at, rental.started_by_report) == (RentalStatus.RUNNING, opened_at, True)


def test_a_replaced_rental_reads_from_its_events_alone(suite, offer, provider, renter, relayer):
    rental_id, since = started(suite, provider, offer, renter)
    report(suite, relayer, rental_id, 1, since + 30, 25, 15, ReportStatus.COMPLETED)
    settled = history(suite, rental_id)
    assert_agrees_with_the_escrow(suite, settled)

    later = open_rental(suite, offer, renter)

    assert suite.read(lambda r: r.rental(rental_id)).status is RentalStatus.NONE and later != rental_id
    replaced = history(suite, rental_id)
    assert replaced == settled
    assert (replaced.status, replaced.duration, replaced.last_seq, replaced.covered_seconds) == (
        RentalStatus.COMPLETED,
        DURATION,
        1,
        30,
    )
    assert (replaced.delivered_seconds, replaced.avg_util_bps) == (25, 6_000)


def test_events_apply_only_to_their_own_rental_after_its_opening(suite, offer, provider, renter):
    first = open_rental(suite, offer, renter)
    suite.escrow.terminate(first, {"from": renter})
    second = open_rental(suite, offer, renter)
    suite.escrow.start(second, {"from": provider})
    start = history(suite, second).started
    assert isinstance(start, RentalStarted)

    with pytest.raises(ValueError, match=f"rental {second} does not follow rental {first}"):
        history(suite, first).apply(start)
    assert RentalHistory.fold([start], 10_000) is None


def half_floor_offer(suite, provider) -> int:
    """An offer of one new GPU whose price is half for time and half for utilisation."""
    hashes = [gpu_uuid_hash("GPU-rentals-test-half-floor")]
    suite.registry.registerGpus(hashes, {"from": provider})
    terms = (b"L4".ljust(32, b"\0"), 23_034, 7, 60, 86_400, b"us-east".ljust(16, b"\0"), 5_000, False, hashes)
    return suite.registry.createOffer(terms, {"from": provider}).return_value


def test_earnings_of_cumulative_reports_and_claims_match_the_escrow_to_the_unit(
    suite, offer, provider, renter, relayer
):
    half = half_floor_offer(suite, provider)
    rental_id = suite.escrow.openRental(half, DURATION, 7, JOB, {"from": renter}).return_value
    since = suite.escrow.start(rental_id, {"from": provider}).timestamp
    chain.sleep(100)
    chain.mine()
    report(suite, relayer, rental_id, 3, since + 33, 31, 17)
    suite.escrow.claimPayout(rental_id, {"from": relayer})
    report(suite, relayer, rental_id, 2, since + 50, 45, 20)  # an older seq: skipped
    report(suite, relayer, rental_id, 61, since + 90, 87, 53)  # gaps in seq are fine

    rental = history(suite, rental_id, util_floor_bps=5_000)

    assert_agrees_with_the_escrow(suite, rental)
    assert [(s.seq, s.reason) for s in rental.skipped] == [(2, SkipReason.SEQ_NOT_INCREASING)]
    first, second = rental.periods
    assert (first.earned, second.earned) == (earnings(7, 31, 17, 5_000), earnings(7, 87, 53, 5_000) - first.earned)
    assert (second.start, second.delivered_seconds, second.util_seconds, second.util_bps) == (
        since + 33,
        56,
        36,
        round(36 * 10_000 / 56),
    )
    (claim,) = rental.claims
    assert rental.claimed == claim.earned == first.earned and rental.provider_paid == claim.provider_payout
    assert rental.claimable == rental.earned - first.earned > 0

    suite.escrow.terminate(rental_id, {"from": renter})
    chain.sleep(PARAMS.report_grace + 1)
    suite.escrow.finalize(rental_id, {"from": relayer})
    settled = history(suite, rental_id, util_floor_bps=5_000)

    assert settled.settlement.provider_payout + settled.settlement.fee == settled.earned
    assert (settled.provider_paid, settled.claimable) == (settled.settlement.provider_payout, 0)
    assert settled.earned + settled.refunded == settled.deposit
