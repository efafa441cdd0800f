"""`offchain.market.rentals`: a rental folded from the escrow's raw logs agrees with the escrow's own view of it
(`getRental`) however it ends, and reads the same from its events alone once a later rental replaced it."""

from __future__ import annotations

import pytest
from brownie import chain, web3
from eth_utils import keccak

from offchain.chain.events import RentalStarted, decode_log
from offchain.market.rentals import RentalHistory
from offchain.protocol.reports import EscrowDomain, Report, ReportStatus, sign_batch
from offchain.protocol.status import DeclineReason, RentalStatus, SlashReason
from scripts.deploy import SuiteParams
from tests.offchain.conftest import ORACLE_KEYS, PRICE

PARAMS = SuiteParams()  # what the `suite` fixture deployed with
DURATION = 3_600
JOB = keccak(text="rentals test job")


def history(suite, rental_id: int) -> RentalHistory | None:
    """The rental folded from the escrow's raw logs of it."""
    logs = web3.eth.get_logs(
        {
            "address": suite.escrow.address,
            "fromBlock": suite.escrow.tx.block_number,
            "toBlock": "latest",
            "topics": [None, "0x" + rental_id.to_bytes(32, "big").hex()],
        }
    )
    return RentalHistory.fold(decode_log("RentalEscrow", log) for log in logs)


def open_rental(suite, offer: int, renter) -> int:
    return suite.escrow.openRental(offer, DURATION, PRICE, JOB, {"from": renter}).return_value


def report(
    suite,
    relayer,
    rental_id: int,
    seq: int,
    period_end: int,
    delivered: int,
    util_bps: int,
    status: ReportStatus = ReportStatus.RUNNING,
) -> None:
    """Applies one report as two of the three oracles would."""
    reports = [
        Report(
            rental_id=rental_id,
            seq=seq,
            period_end=period_end,
            delivered_seconds=delivered,
            avg_util_bps=util_bps,
            status=status,
        )
    ]
    domain = EscrowDomain(
        chain_id=web3.eth.chain_id,
        escrow=suite.escrow.address,
        oracle_set_version=suite.read(lambda r: r.oracle_set()).version,
    )
    signatures = [sign_batch(reports, domain, key) for key in ORACLE_KEYS[:2]]
    suite.escrow.submitReports([r.as_tuple() for r in reports], signatures, {"from": relayer})


def assert_agrees_with_the_escrow(suite, rental: RentalHistory) -> None:
    """The folded rental reads what `getRental` returns of it (the opening time aside, which logs do not carry)."""
    on_chain = suite.read(lambda r: r.rental(rental.rental_id))
    assert (rental.status, rental.renter, rental.price_per_second, rental.duration) == (
        on_chain.status,
        on_chain.renter,
        on_chain.price_per_second,
        on_chain.duration,
    )
    assert (rental.last_seq, rental.reported_seconds, rental.delivered_seconds, rental.earned) == (
        on_chain.last_seq,
        on_chain.reported_seconds,
        on_chain.delivered_seconds,
        on_chain.earned,
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
    report(suite, relayer, rental_id, 1, since + 10, 10, 9_000)
    report(suite, relayer, rental_id, 2, since + 30, 5, 3_000)
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
    assert terminated.avg_util_bps == round((10 * 9_000 + 5 * 3_000) / 15)

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
    report(suite, relayer, rental_id, 1, since + 20, 20, 10_000, outcome)

    rental = history(suite, rental_id)

    assert_agrees_with_the_escrow(suite, rental)
    assert rental.status is RentalStatus[outcome.name]
    assert (rental.reported_seconds, rental.delivered_seconds, rental.ends_at) == (20, 20, since + DURATION)
    assert rental.earned == rental.settlement.provider_payout + rental.settlement.fee == 20 * PRICE
    assert rental.earned + rental.refunded == rental.deposit


def test_a_rental_its_first_report_started(suite, offer, renter, relayer):
    rental_id = open_rental(suite, offer, renter)
    opened_at = web3.eth.get_block("latest").timestamp
    chain.sleep(30)
    chain.mine()
    report(suite, relayer, rental_id, 1, opened_at + 15, 12, 8_000)

    rental = history(suite, rental_id)

    assert_agrees_with_the_escrow(suite, rental)
    assert (rental.status, rental.started_at, rental.started_by_report) == (RentalStatus.RUNNING, opened_at, True)


def test_a_replaced_rental_reads_from_its_events_alone(suite, offer, provider, renter, relayer):
    rental_id, since = started(suite, provider, offer, renter)
    report(suite, relayer, rental_id, 1, since + 30, 25, 6_000, ReportStatus.COMPLETED)
    settled = history(suite, rental_id)
    assert_agrees_with_the_escrow(suite, settled)

    later = open_rental(suite, offer, renter)

    assert suite.read(lambda r: r.rental(rental_id)).status is RentalStatus.NONE and later != rental_id
    replaced = history(suite, rental_id)
    assert replaced == settled
    assert (replaced.status, replaced.duration, replaced.last_seq, replaced.reported_seconds) == (
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
    assert RentalHistory.fold([start]) is None
