"""Agent -> oracles -> chain -> balances, end to end: three real oracles (2-of-3, each batching, co-signing
with its peers and keeping in its turn), one real provider agent running real jobs with replayed or simulated telemetry,
the real escrow on anvil. Each scenario checks the rental's final state, every escrow balance it moved, and the
landing policy: every report the agent sent is held by the oracles, and the chain applied the latest once."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import pytest
from brownie import web3
from eth_utils import keccak

from offchain.agent.jobspec import JobSpec, JobSpecStore
from offchain.agent.rentals import Phase
from offchain.chain.reads import Rental
from offchain.oracle.store import ReportState
from offchain.protocol.reports import ReportStatus
from offchain.protocol.status import DeclineReason, RentalStatus
from offchain.telemetry.replay import ReplaySource
from offchain.telemetry.simulated import Outage, SimulatedSource
from tests.e2e.conftest import PARAMS, running_exchange, stored_reports
from tests.offchain.conftest import PRICE

TRACE = Path(__file__).resolve().parents[1] / "data" / "trace-simulated-2gpu.jsonl"
DURATION = 300  # seconds paid for; every scenario ends long before
BPS = 10_000
#: Seconds between a job's exit and the agent seeing it, which its reports cover with nothing delivered: they count as
#: missed, and on a rental of seconds the SLA may slash them. A rental whose reports landed, whoever landed them,
#: misses no more than this.
EXIT_LATENCY_SECONDS = 5
SLASH_NONE, SLASH_START_TIMEOUT, SLASH_SLA = 0, 1, 2


def job(script: str) -> JobSpec:
    """A shell script, run in a container of the busybox job image (the in-process agent's default image)."""
    return JobSpec(command=("sh", "-c", script))


def rental_state(suite, rental_id: int) -> Rental:
    return suite.read(lambda r: r.rental(rental_id))


def events(suite, name: str, rental_id: int, from_block: int) -> list[dict]:
    escrow = web3.eth.contract(address=suite.escrow.address, abi=suite.escrow.abi)
    logs = getattr(escrow.events, name)().get_logs(from_block=from_block, argument_filters={"rentalId": rental_id})
    return [dict(log["args"]) for log in logs]


@dataclass(frozen=True)
class Balances:
    provider: int
    treasury: int
    renter: int
    compensation: int

    @classmethod
    def of(cls, suite, provider, treasury, renter) -> "Balances":
        provider_, treasury_, renter_ = suite.read(
            lambda r: asyncio.gather(
                r.balances(provider.address), r.balances(treasury.address), r.balances(renter.address)
            )
        )
        return cls(provider_.escrow, treasury_.escrow, renter_.escrow, renter_.compensation)

    def __sub__(self, other: "Balances") -> "Balances":
        return Balances(
            self.provider - other.provider,
            self.treasury - other.treasury,
            self.renter - other.renter,
            self.compensation - other.compensation,
        )


def open_rental(suite, offer_id: int, spec: JobSpec, renter) -> int:
    return suite.escrow.openRental(offer_id, DURATION, PRICE, spec.spec_hash(), {"from": renter}).return_value


def put_spec(state_root: Path, spec: JobSpec) -> None:
    JobSpecStore(state_root / "agent" / "specs").put(spec)


def sla_slash(collateral: int, missed: int, elapsed: int) -> int:
    """RentalMath.slaSlashBps applied to the collateral, as the registry slashes it."""
    if elapsed == 0 or missed * BPS <= (BPS - PARAMS.sla_bps) * elapsed:
        return 0
    return collateral * (PARAMS.sla_slash_bps * missed // elapsed) // BPS


def assert_latest_landed(suite, rental_id: int, from_block: int, state_root: Path) -> list:
    """The landing policy held: the oracles hold every report the agent sent (the peers the same ones; a peer may
    miss one the chain had already applied when it came), the chain applied a rising subsequence of them, once
    each, ending with the latest, each as its cumulative totals clamped to the rental's end, and skipped none; every
    report an oracle holds has landed or was superseded by a later one that did."""
    held = [stored_reports(state_root, i, rental_id) for i in range(3)]
    reports = [submission.report for submission, _ in held[0]]
    assert reports, "the oracles accepted no report"
    assert [r.seq for r in reports] == list(range(1, len(reports) + 1))
    for other in held[1:]:
        assert len(other) >= len(reports) - 1, "a peer missed reports"
        assert all(s.report == reports[s.report.seq - 1] for s, _ in other), "the oracles hold different reports"
    applied = events(suite, "ReportApplied", rental_id, from_block)
    seqs = [e["seq"] for e in applied]
    assert seqs == sorted(set(seqs)) and seqs[-1] == reports[-1].seq, "the latest report did not land, or twice"
    # An oracle marks a batch's reports landed at its next epoch, and one that another oracle landed at its own next
    # turn or once the rental is final; the exchange may stop before then.
    assert all(
        state in (ReportState.LANDED, ReportState.SUPERSEDED)
        or (state in (ReportState.BATCHED, ReportState.HELD) and s.report.seq <= seqs[-1])
        for oracle in held
        for s, state in oracle
    ), "a report neither landed nor carried by a later one"
    state = rental_state(suite, rental_id)
    expected = []
    for seq in seqs:
        r = reports[seq - 1]
        covered = min(r.covered_until - state.since, state.duration)
        delivered = min(r.delivered_seconds, covered)
        expected.append((seq, state.since + covered, delivered, min(r.util_seconds, delivered), r.telemetry_root))
    assert [
        (e["seq"], e["coveredUntil"], e["deliveredSeconds"], e["utilSeconds"], bytes(e["telemetryRoot"]))
        for e in applied
    ] == expected
    assert events(suite, "ReportSkipped", rental_id, from_block) == []
    return reports


def assert_settled(
    suite, rental_id: int, offer_id: int, from_block: int, moved: Balances, status: RentalStatus, elapsed: int
) -> dict:
    """The one RentalFinalized of the rental and the balances it moved: provider and treasury split price x
    delivered seconds by the fee, the renter gets the rest of the deposit, and the collateral slashed for the
    SLA (if missed seconds exceed its share of `elapsed`) is the renter's compensation."""
    (final,) = events(suite, "RentalFinalized", rental_id, from_block)
    state = rental_state(suite, rental_id)
    assert state.status is status and final["status"] == status
    delivered = state.delivered_seconds
    earned = PRICE * delivered
    assert state.earned == earned
    fee = earned * PARAMS.fee_bps // BPS
    assert (final["providerPayout"], final["fee"], final["refund"]) == (
        earned - fee,
        fee,
        PRICE * state.duration - earned,
    )
    assert (final["deliveredSeconds"], final["missedSeconds"]) == (delivered, elapsed - delivered)
    slashed = sla_slash(suite.read(lambda r: r.collateral_of(offer_id)), elapsed - delivered, elapsed)
    assert (final["slashed"], final["slashReason"]) == (slashed, SLASH_SLA if slashed else SLASH_NONE)
    assert moved == Balances(
        provider=earned - fee, treasury=fee, renter=PRICE * DURATION - earned, compensation=slashed
    )
    return final


@pytest.fixture(scope="module")
def replay_offer(list_offer):
    """An offer of the GPUs of the replayed trace (rented by one scenario after another)."""
    return list_offer([gpu.uuid for gpu in ReplaySource(TRACE).gpus()])


def run_to_final(
    suite, chain_settings, provider, renter, tmp_path, offer_id: int, spec: JobSpec, source, seconds: float = 60
) -> int:
    """Opens a rental of `offer_id` running `spec` and runs the exchange until the rental is final."""
    put_spec(tmp_path, spec)

    async def main() -> int:
        async with running_exchange(chain_settings, tmp_path, provider.address, source) as ex:
            rental_id = await asyncio.to_thread(open_rental, suite, offer_id, spec, renter)
            await ex.until_chain(
                lambda: rental_state(suite, rental_id).status.is_final, seconds, f"rental {rental_id} to be final"
            )
            await ex.until(lambda: ex.agent.book.get(rental_id).phase is Phase.DONE, 10, "the agent to be done")
            return rental_id

    return asyncio.run(main())


def test_completed_job_pays_the_provider_for_delivered_seconds(
    suite, chain_settings, provider, treasury, renter, replay_offer, tmp_path
):
    spec = job("sleep 4; echo trained")
    before, from_block = Balances.of(suite, provider, treasury, renter), web3.eth.block_number

    rental_id = run_to_final(
        suite, chain_settings, provider, renter, tmp_path, replay_offer, spec, ReplaySource(TRACE, rebase=True)
    )

    reports = assert_latest_landed(suite, rental_id, from_block, tmp_path)
    assert len(reports) >= 3 and {r.status for r in reports[:-1]} == {ReportStatus.RUNNING}
    assert (reports[-1].status, reports[-1].exit_code) == (ReportStatus.COMPLETED, 0)
    assert all(r.simulated for r in reports)
    state = rental_state(suite, rental_id)
    assert state.delivered_seconds == reports[-1].delivered_seconds >= 3
    moved = Balances.of(suite, provider, treasury, renter) - before
    assert_settled(
        suite,
        rental_id,
        replay_offer,
        from_block,
        moved,
        RentalStatus.COMPLETED,
        elapsed=reports[-1].covered_until - state.since,
    )


def test_failed_job_settles_failed_with_its_exit_code(
    suite, chain_settings, provider, treasury, renter, replay_offer, tmp_path
):
    spec = job("sleep 3; exit 3")
    before, from_block = Balances.of(suite, provider, treasury, renter), web3.eth.block_number

    rental_id = run_to_final(
        suite, chain_settings, provider, renter, tmp_path, replay_offer, spec, ReplaySource(TRACE, rebase=True)
    )

    reports = assert_latest_landed(suite, rental_id, from_block, tmp_path)
    assert (reports[-1].status, reports[-1].exit_code) == (ReportStatus.FAILED, 3)
    state = rental_state(suite, rental_id)
    moved = Balances.of(suite, provider, treasury, renter) - before
    assert_settled(
        suite,
        rental_id,
        replay_offer,
        from_block,
        moved,
        RentalStatus.FAILED,
        elapsed=reports[-1].covered_until - state.since,
    )


def test_downtime_beyond_the_sla_slashes_collateral_to_the_renter(
    suite, chain_settings, provider, treasury, renter, list_offer, tmp_path
):
    # GPU 1 of 2 is down for 5 s of a ~10 s rental: far more than the 5% the 95% SLA allows.
    source = SimulatedSource("NVIDIA H100 80GB HBM3", 2, seed=4242, outages=[Outage(gpu_index=1, start_s=2, end_s=7)])
    offer_id = list_offer([gpu.uuid for gpu in source.gpus()])
    spec = job("sleep 8")
    before, from_block = Balances.of(suite, provider, treasury, renter), web3.eth.block_number

    rental_id = run_to_final(suite, chain_settings, provider, renter, tmp_path, offer_id, spec, source)

    reports = assert_latest_landed(suite, rental_id, from_block, tmp_path)
    assert reports[-1].status is ReportStatus.COMPLETED
    state = rental_state(suite, rental_id)
    elapsed = reports[-1].covered_until - state.since
    assert elapsed - state.delivered_seconds >= 4, "the outage's seconds were not missed"
    moved = Balances.of(suite, provider, treasury, renter) - before
    final = assert_settled(suite, rental_id, offer_id, from_block, moved, RentalStatus.COMPLETED, elapsed)
    assert final["slashed"] > 0 and final["slashReason"] == SLASH_SLA
    assert moved.compensation == final["slashed"]


def test_renter_termination_stops_the_job_and_the_keeper_finalises(
    suite, chain_settings, provider, treasury, renter, replay_offer, tmp_path
):
    spec = job("touch started; sleep 300")
    put_spec(tmp_path, spec)
    before, from_block = Balances.of(suite, provider, treasury, renter), web3.eth.block_number

    async def main() -> tuple[int, int]:
        async with running_exchange(chain_settings, tmp_path, provider.address, ReplaySource(TRACE, rebase=True)) as ex:
            rental_id = await asyncio.to_thread(open_rental, suite, replay_offer, spec, renter)
            started = tmp_path / "agent" / "rentals" / str(rental_id) / "work" / "started"
            await ex.until(lambda: len(ex.reports(rental_id)) >= 3, 30, "three reports at the oracles")
            assert started.exists()
            tx = await asyncio.to_thread(suite.escrow.terminate, rental_id, {"from": renter})
            ends_at = tx.events["RentalTerminated"]["endsAt"]
            await ex.until(lambda: ex.agent.book.get(rental_id).exit_code is not None, 15, "the job to be stopped")
            await ex.until(lambda: ex.agent.book.get(rental_id).phase is Phase.DONE, 10, "the agent to be done")
            await ex.until_chain(
                lambda: rental_state(suite, rental_id).status.is_final,
                PARAMS.report_grace + 30,
                "the keeper to finalise the rental",
            )
            assert [a.tx_key for a in ex.keeper_actions(rental_id)] == [f"finalize:{rental_id}"]
            return rental_id, ends_at

    rental_id, ends_at = asyncio.run(main())

    reports = assert_latest_landed(suite, rental_id, from_block, tmp_path)
    assert {r.status for r in reports} == {ReportStatus.RUNNING}
    assert reports[-1].covered_until >= ends_at, "the last report covers the time up to the termination"
    assert events(suite, "ReportApplied", rental_id, from_block)[-1]["coveredUntil"] == ends_at
    state = rental_state(suite, rental_id)
    assert state.end == ends_at
    moved = Balances.of(suite, provider, treasury, renter) - before
    assert_settled(suite, rental_id, replay_offer, from_block, moved, RentalStatus.EXPIRED, elapsed=state.duration)


def test_start_timeout_refunds_and_compensates_the_renter(
    suite, chain_settings, provider, treasury, renter, list_offer, tmp_path
):
    offer_id = list_offer()  # its provider runs no agent for it
    spec = job("echo never runs")
    before, from_block = Balances.of(suite, provider, treasury, renter), web3.eth.block_number

    async def main() -> int:
        async with running_exchange(chain_settings, tmp_path, provider.address, None) as ex:
            rental_id = await asyncio.to_thread(open_rental, suite, offer_id, spec, renter)
            await ex.until_chain(
                lambda: rental_state(suite, rental_id).status.is_final,
                PARAMS.start_timeout + 30,
                "the keeper to claim the start timeout",
            )
            assert [a.tx_key for a in ex.keeper_actions(rental_id)] == [f"timeout:{rental_id}"]
            return rental_id

    rental_id = asyncio.run(main())

    assert rental_state(suite, rental_id).status is RentalStatus.TIMED_OUT
    compensation = suite.read(lambda r: r.collateral_of(offer_id)) * PARAMS.start_slash_bps // BPS
    (final,) = events(suite, "RentalFinalized", rental_id, from_block)
    assert (final["providerPayout"], final["fee"], final["refund"], final["deliveredSeconds"]) == (
        0,
        0,
        PRICE * DURATION,
        0,
    )
    assert (final["slashed"], final["slashReason"]) == (compensation, SLASH_START_TIMEOUT)
    moved = Balances.of(suite, provider, treasury, renter) - before
    assert moved == Balances(provider=0, treasury=0, renter=PRICE * DURATION, compensation=compensation)
    assert events(suite, "ReportApplied", rental_id, from_block) == []


def test_a_rental_the_agent_cannot_serve_is_declined_and_refunded_in_full(
    suite, chain_settings, provider, treasury, renter, replay_offer, tmp_path
):
    """The renter never hands over its spec: the agent declines within its spec wait (half the start timeout), the
    renter gets the whole deposit back, nothing is slashed, and the keeper has nothing to do."""
    spec_hash = keccak(text="a spec the renter never sends")
    before, from_block = Balances.of(suite, provider, treasury, renter), web3.eth.block_number
    declines = suite.read(lambda r: r.provider(provider.address)).declines

    async def main() -> int:
        async with running_exchange(chain_settings, tmp_path, provider.address, ReplaySource(TRACE, rebase=True)) as ex:
            tx = await asyncio.to_thread(
                suite.escrow.openRental, replay_offer, DURATION, PRICE, spec_hash, {"from": renter}
            )
            rental_id = tx.return_value
            await ex.until_chain(
                lambda: rental_state(suite, rental_id).status.is_final, PARAMS.start_timeout, "the decline"
            )
            assert ex.keeper_actions(rental_id) == []
            return rental_id

    rental_id = asyncio.run(main())

    assert rental_state(suite, rental_id).status is RentalStatus.DECLINED
    (declined,) = events(suite, "RentalDeclined", rental_id, from_block)
    assert declined["reason"] == DeclineReason.SPEC_MISSING
    (final,) = events(suite, "RentalFinalized", rental_id, from_block)
    assert (final["refund"], final["slashed"], final["providerPayout"]) == (PRICE * DURATION, 0, 0)
    moved = Balances.of(suite, provider, treasury, renter) - before
    assert moved == Balances(provider=0, treasury=0, renter=PRICE * DURATION, compensation=0)
    assert suite.read(lambda r: r.provider(provider.address)).declines == declines + 1
