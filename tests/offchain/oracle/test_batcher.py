"""The leader's landing policy on a real anvil: per rental only the latest accepted report lands, and only when it
is due (its job ended, the rental's time is up, the renter terminated it, or a checkpoint interval of coverage
passed since the last landing); a report the chain skipped is settled and never sent again.

The escrow of this module has a 1-of-1 oracle set (oracle 0, the leader), so a batch needs no peer."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import AsyncIterator, NamedTuple, Sequence

import aiohttp
import pytest
from brownie import accounts, chain, web3

from offchain.chain.contracts import contract
from offchain.chain.rpc import connect
from offchain.chain.tx.manager import TxManager
from offchain.oracle.batcher import Batcher
from offchain.oracle.chainview import ChainView
from offchain.oracle.metrics import OracleMetrics
from offchain.oracle.store import NewSubmission, ReportState, SubmissionKey, SubmissionStore
from offchain.protocol.digest import TelemetryDomain
from offchain.protocol.messages import TelemetryReport, chain_reports
from offchain.protocol.reports import BatchSigner, ReportStatus, submit_args
from offchain.protocol.status import RentalStatus
from scripts.deploy import SuiteParams, deploy_suite
from tests.offchain.chain.helpers import fork_point, reorg, settle
from tests.offchain.conftest import ORACLES
from tests.offchain.oracle.helpers import PERIOD, RENTAL_SECONDS, UTIL_PER_PERIOD, report, submission

NEVER = 10**9  # a checkpoint interval no rental reaches


@pytest.fixture(scope="module")
def suite(deployer, treasury, token):
    """Registry + escrow whose oracle set is oracle 0 alone."""
    return deploy_suite(deployer, token, token, treasury, [ORACLES[0].address], 1, SuiteParams())


class Leader(NamedTuple):
    batcher: Batcher
    store: SubmissionStore
    metrics: OracleMetrics
    txmgr: TxManager
    domain: TelemetryDomain
    view: ChainView


@asynccontextmanager
async def leader(settings, checkpoint_interval: int, peers: Sequence[str] = ()) -> AsyncIterator[Leader]:
    """Oracle 0's batcher, store, tx manager and chain view (following the chain), as `OracleService` wires them,
    asking `peers` (base URLs) to co-sign."""
    w3 = connect(settings.chain.rpc_url)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    view = ChainView(w3, settings.chain)
    await view.start_following()
    follower = asyncio.create_task(view.follow(0.02))
    store = SubmissionStore(settings.state_dir / "oracle.sqlite3")
    txmgr = TxManager(w3, settings.state_dir / "txmgr.sqlite3", settings.private_key, settings.chain.chain_id)
    await txmgr.start()
    metrics = OracleMetrics()
    async with aiohttp.ClientSession() as session:
        batcher = Batcher(
            store=store,
            chain=view,
            txmgr=txmgr,
            session=session,
            escrow=contract(w3, "RentalEscrow", settings.chain.escrow),
            signer=BatchSigner(settings.private_key, settings.chain.chain_id, settings.chain.escrow),
            peers=peers,
            max_batch_reports=settings.max_batch_reports,
            metrics=metrics,
            checkpoint_interval_seconds=checkpoint_interval,
        )
        try:
            yield Leader(
                batcher,
                store,
                metrics,
                txmgr,
                TelemetryDomain(settings.chain.chain_id, settings.chain.registry),
                view,
            )
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
            txmgr.close()
            store.close()
            await w3.provider.disconnect()


def accept(settings, oracle: Leader, *reports: TelemetryReport) -> None:
    """Stores reports as ingest would after verifying them."""
    for telemetry in reports:
        signed = submission(settings, telemetry)
        oracle.store.add([NewSubmission(signed, oracle.domain.digest(telemetry), signed.model_dump_json().encode())])


async def land(oracle: Leader) -> list[tuple[int, int]]:
    """Closes a batch and, if one was sent, waits for it and settles it; the (rental, seq) it carried."""
    outcome = await oracle.batcher.close_batch()
    if outcome.tx_key is None:
        return []
    carried = [(s.report.rental_id, s.report.seq) for s in oracle.store.batched(outcome.tx_key)]
    await settle(oracle.txmgr, outcome.tx_key)
    await oracle.batcher.settle_batches()
    return carried


def states(oracle: Leader, rental, seqs) -> list[ReportState | None]:
    return [oracle.store.state(SubmissionKey(rental.rental_id, seq)) for seq in seqs]


def on_chain(suite, rental):
    return suite.read(lambda r: r.rental(rental.rental_id))


def test_only_the_latest_report_lands_once_a_checkpoint_interval_of_coverage_passed(settings, rental, suite):
    """Reports 1 and 2 never land: report 3 carries their totals, and the chain takes it after seq 0 (a gap)."""
    chain.sleep(6 * PERIOD)
    chain.mine()

    async def scenario():
        async with leader(settings, checkpoint_interval=3 * PERIOD) as oracle:
            accept(settings, oracle, report(rental, 1), report(rental, 2))
            assert await land(oracle) == []  # two periods covered: not due
            accept(settings, oracle, report(rental, 3))
            assert await land(oracle) == [(rental.rental_id, 3)]
            assert states(oracle, rental, (1, 2, 3)) == [ReportState.SUPERSEDED] * 2 + [ReportState.LANDED]
            accept(settings, oracle, report(rental, 4), report(rental, 5))
            assert await land(oracle) == []  # two periods past the landed coverage
            accept(settings, oracle, report(rental, 6))
            assert await land(oracle) == [(rental.rental_id, 6)]
            assert await land(oracle) == []  # nothing is landed twice
            return oracle.metrics.render()

    metrics = asyncio.run(scenario())
    applied = on_chain(suite, rental)
    assert (applied.last_seq, applied.covered_seconds, applied.delivered_seconds, applied.util_seconds) == (
        6,
        6 * PERIOD,
        6 * PERIOD,
        6 * UTIL_PER_PERIOD,
    )
    lines = metrics.splitlines()
    assert 'gpuex_oracle_landings_total{reason="checkpoint"} 2' in lines
    assert 'gpuex_oracle_reports_settled_total{state="landed"} 2' in lines
    assert "gpuex_oracle_reports_held 0" in lines


def test_a_final_report_lands_at_once(settings, rental, suite):
    chain.sleep(2 * PERIOD)
    chain.mine()
    completion = report(rental, 2, status=ReportStatus.COMPLETED)

    async def scenario():
        async with leader(settings, checkpoint_interval=NEVER) as oracle:
            accept(settings, oracle, report(rental, 1))
            assert await land(oracle) == []
            accept(settings, oracle, completion)
            assert await land(oracle) == [(rental.rental_id, 2)]
            return oracle.metrics.landings.value("final")

    assert asyncio.run(scenario()) == 1
    applied = on_chain(suite, rental)
    assert (applied.status, applied.last_seq, applied.delivered_seconds) == (RentalStatus.COMPLETED, 2, 2 * PERIOD)


def test_the_latest_report_lands_once_the_rentals_time_is_up(settings, rental, suite):
    """Both ways: the report covers the rental to its end, or the chain's clock passed the end."""
    chain.sleep(RENTAL_SECONDS + PERIOD)
    chain.mine()
    to_the_end = report(rental, 2, covered_until=rental.since + RENTAL_SECONDS)

    async def scenario():
        async with leader(settings, checkpoint_interval=NEVER) as oracle:
            accept(settings, oracle, report(rental, 1))
            assert await land(oracle) == [(rental.rental_id, 1)]  # the agent went quiet: the clock passed the end
            accept(settings, oracle, to_the_end)
            assert await land(oracle) == [(rental.rental_id, 2)]
            return oracle.metrics.landings.value("time_up")

    assert asyncio.run(scenario()) == 2
    assert on_chain(suite, rental).covered_seconds == RENTAL_SECONDS


def test_the_latest_report_lands_when_the_renter_terminates(settings, rental, suite, renter):
    chain.sleep(2 * PERIOD)
    chain.mine()

    async def scenario():
        async with leader(settings, checkpoint_interval=NEVER) as oracle:
            accept(settings, oracle, report(rental, 1))
            assert await land(oracle) == []
            await asyncio.to_thread(suite.escrow.terminate, rental.rental_id, {"from": renter})
            for _ in range(100):  # the chain view drops the rental once its follower sees the termination
                if carried := await land(oracle):
                    break
                await asyncio.sleep(0.02)
            assert carried == [(rental.rental_id, 1)]
            end = (await asyncio.to_thread(on_chain, suite, rental)).end
            accept(settings, oracle, report(rental, 2, covered_until=end, delivered_seconds=end - rental.since))
            assert await land(oracle) == [(rental.rental_id, 2)]
            return oracle.metrics.landings.value("terminated"), end

    landings, end = asyncio.run(scenario())
    assert landings == 2
    applied = on_chain(suite, rental)
    assert (applied.status, applied.covered_until, applied.last_seq) == (RentalStatus.TERMINATED, end, 2)


def test_a_report_covering_time_after_the_block_is_held_until_the_chains_clock_passes_it(settings, rental, suite):
    """The escrow would skip it (`CoverageInFuture`): it stays held, out of every batch, and lands once a block is
    stamped at or after its coverage."""
    chain.sleep(2 * PERIOD)
    chain.mine()
    ahead = report(rental, 1, covered_until=chain[-1].timestamp + 20, status=ReportStatus.COMPLETED)

    async def scenario():
        async with leader(settings, checkpoint_interval=NEVER) as oracle:
            accept(settings, oracle, ahead)
            assert await land(oracle) == []
            assert states(oracle, rental, (1,)) == [ReportState.HELD]
            await asyncio.to_thread(chain.sleep, 21)
            await asyncio.to_thread(chain.mine)
            assert await land(oracle) == [(rental.rental_id, 1)]
            assert states(oracle, rental, (1,)) == [ReportState.LANDED]

    asyncio.run(scenario())
    applied = on_chain(suite, rental)
    assert (applied.status, applied.last_seq) == (RentalStatus.COMPLETED, 1)


def test_a_checkpoint_ahead_of_the_chains_clock_lands_the_latest_earlier_report_the_chain_takes(
    settings, rental, suite
):
    """An agent that reports more often than blocks come always has its latest report a little ahead of the latest
    block: the checkpoint lands the rental's latest earlier report instead, and the latest one stays held."""
    chain.sleep(3 * PERIOD)
    chain.mine()

    async def scenario():
        async with leader(settings, checkpoint_interval=3 * PERIOD) as oracle:
            accept(settings, oracle, *(report(rental, seq) for seq in (1, 2, 3, 4)))
            assert chain[-1].timestamp < report(rental, 4).covered_until
            assert await land(oracle) == [(rental.rental_id, 3)]
            assert states(oracle, rental, (1, 2, 3, 4)) == [ReportState.SUPERSEDED] * 2 + [
                ReportState.LANDED,
                ReportState.HELD,
            ]
            assert await land(oracle) == []  # one period past the landed coverage: not due

    asyncio.run(scenario())
    applied = on_chain(suite, rental)
    assert (applied.last_seq, applied.covered_seconds) == (3, 3 * PERIOD)


def test_a_report_the_chain_skips_is_settled_and_never_sent_again(settings, open_rental, suite, provider):
    """The provider starts its rental between the batch's closing and its transaction, moving the rental's `since`
    past the report's coverage: the escrow skips the batched report (`TotalsDecreased`), which is settled
    `skipped`."""
    chain.sleep(3 * PERIOD)
    chain.mine()

    async def scenario():
        async with leader(settings, checkpoint_interval=NEVER) as oracle:
            accept(settings, oracle, report(open_rental, 1, status=ReportStatus.COMPLETED))
            outcome = await oracle.batcher.close_batch()
            assert outcome.reports == 1
            await asyncio.to_thread(suite.escrow.start, open_rental.rental_id, {"from": provider})
            await settle(oracle.txmgr, outcome.tx_key)
            await oracle.batcher.settle_batches()
            assert states(oracle, open_rental, (1,)) == [ReportState.SKIPPED]
            assert await land(oracle) == []
            return oracle.metrics.reports_settled.value("skipped")

    assert asyncio.run(scenario()) == 1
    applied = on_chain(suite, open_rental)
    assert (applied.status, applied.last_seq) == (RentalStatus.RUNNING, 0)


def test_a_report_of_a_rental_that_is_no_longer_live_is_dropped(settings, rental, suite, renter):
    chain.sleep(2 * PERIOD)
    chain.mine()
    suite.escrow.terminate(rental.rental_id, {"from": renter})
    chain.sleep(RENTAL_SECONDS)
    suite.escrow.finalize(rental.rental_id, {"from": renter})

    async def scenario():
        async with leader(settings, checkpoint_interval=NEVER) as oracle:
            accept(settings, oracle, report(rental, 1, status=ReportStatus.COMPLETED))
            assert await land(oracle) == []
            return states(oracle, rental, (1,))

    assert asyncio.run(scenario()) == [ReportState.DROPPED]


def test_a_batch_confirmed_while_the_leader_was_down_is_settled_after_its_restart(settings, rental, suite):
    chain.sleep(2 * PERIOD)
    chain.mine()

    async def before_the_crash():
        async with leader(settings, checkpoint_interval=NEVER) as oracle:
            accept(settings, oracle, report(rental, 1, status=ReportStatus.COMPLETED))
            outcome = await oracle.batcher.close_batch()
            await settle(oracle.txmgr, outcome.tx_key)  # mined; the leader stops before it settles the batch
            return states(oracle, rental, (1,))

    async def after_the_restart():
        async with leader(settings, checkpoint_interval=NEVER) as oracle:
            assert await land(oracle) == []
            return states(oracle, rental, (1,)), oracle.metrics.reports_settled.value("landed")

    assert asyncio.run(before_the_crash()) == [ReportState.BATCHED]
    assert asyncio.run(after_the_restart()) == ([ReportState.LANDED], 1)
    assert on_chain(suite, rental).status is RentalStatus.COMPLETED


def test_the_checkpoint_interval_is_an_oracle_setting_from_the_environment(make_settings, monkeypatch):
    assert make_settings(0).checkpoint_interval_seconds == 3_600
    monkeypatch.setenv("GPUEX_ORACLE_CHECKPOINT_INTERVAL_SECONDS", "120")
    assert make_settings(0).checkpoint_interval_seconds == 120


def applied_seqs(suite, rental) -> list[int]:
    escrow = web3.eth.contract(address=suite.escrow.address, abi=suite.escrow.abi)
    logs = escrow.events.ReportApplied().get_logs(from_block=0, argument_filters={"rentalId": rental.rental_id})
    return [log["args"]["seq"] for log in logs]


def test_a_batch_reorged_out_after_it_was_final_lands_again_through_its_transaction(settings, rental, suite):
    chain.sleep(2 * PERIOD)
    chain.mine()

    async def scenario():
        async with leader(settings, checkpoint_interval=NEVER) as oracle:
            accept(settings, oracle, report(rental, 1), report(rental, 2, status=ReportStatus.COMPLETED))
            fork = fork_point()
            assert await land(oracle) == [(rental.rental_id, 2)]
            chain.mine(2)
            reorg(fork)  # the batch's block and two above it
            await oracle.batcher.settle_batches()
            waiting_again = oracle.store.state(SubmissionKey(rental.rental_id, 2))
            (tx_key,) = oracle.store.in_flight()
            await settle(oracle.txmgr, tx_key)
            await oracle.batcher.settle_batches()
            return waiting_again, states(oracle, rental, (1, 2)), oracle.metrics

    waiting_again, final_states, metrics = asyncio.run(scenario())
    assert waiting_again is ReportState.BATCHED
    assert final_states == [ReportState.SUPERSEDED, ReportState.LANDED]
    assert metrics.reports_relanded.value("resent") == 1 and metrics.reports_relanded.value("rebatched") == 0
    assert metrics.reports_batched.value == 1  # while it waited for its transaction again
    assert applied_seqs(suite, rental) == [2]
    assert (on_chain(suite, rental).status, on_chain(suite, rental).last_seq) == (RentalStatus.COMPLETED, 2)


def test_a_landing_by_another_transaction_that_a_reorg_took_is_held_and_landed_again(settings, rental, suite):
    """Another sender landed the report (the store settled it from the chain); no transaction of this oracle will
    bring it back after the reorg, so the batcher holds it and lands it in a batch of its own. The rental's time
    is up, so its latest report is due whatever landed before."""
    chain.sleep(RENTAL_SECONDS + PERIOD)
    chain.mine()
    latest = report(rental, 1)
    version = suite.read(lambda r: r.oracle_set()).version

    async def scenario():
        async with leader(settings, checkpoint_interval=NEVER) as oracle:
            accept(settings, oracle, latest)
            reports = chain_reports([submission(settings, latest)])
            signer = BatchSigner(settings.private_key, settings.chain.chain_id, settings.chain.escrow)
            args = submit_args(reports, [signer.sign(reports, version)], version)
            fork = fork_point()
            suite.escrow.submitReports(*args, {"from": accounts[9]})
            assert await land(oracle) == []
            settled_from_chain = states(oracle, rental, (1,))
            chain.mine(2)
            reorg(fork)  # the other sender's block and two above it
            await oracle.batcher.settle_batches()
            held_again = states(oracle, rental, (1,))
            relanded = await land(oracle)
            return settled_from_chain, held_again, relanded, oracle.metrics

    settled_from_chain, held_again, relanded, metrics = asyncio.run(scenario())
    assert settled_from_chain == [ReportState.LANDED]
    assert held_again == [ReportState.HELD]
    assert relanded == [(rental.rental_id, 1)]
    assert metrics.reports_relanded.value("rebatched") == 1 and metrics.reports_relanded.value("resent") == 0
    assert applied_seqs(suite, rental) == [1]
    assert (on_chain(suite, rental).status, on_chain(suite, rental).last_seq) == (RentalStatus.RUNNING, 1)


def test_without_a_reorg_a_landing_is_read_again_once_and_after_one_every_recent_landing_is(settings, rental, suite):
    chain.sleep(2 * PERIOD)
    chain.mine()

    async def scenario():
        async with leader(settings, checkpoint_interval=NEVER) as oracle:
            accept(settings, oracle, report(rental, 1, status=ReportStatus.COMPLETED))
            await land(oracle)
            reads: list[int] = []
            refresh = oracle.view.refresh_rental

            async def counted(rental_id: int):
                reads.append(rental_id)
                return await refresh(rental_id)

            oracle.view.refresh_rental = counted  # type: ignore[method-assign]
            await oracle.batcher.settle_batches()
            after_landing = len(reads)
            await oracle.batcher.settle_batches()
            await oracle.batcher.settle_batches()
            quiet = len(reads) - after_landing
            chain.mine()
            fork = fork_point()
            chain.mine()
            await asyncio.sleep(0.5)  # the follower (polling every 20 ms) delivers the new blocks
            seen = oracle.view.reorgs_seen
            reorg(fork)  # an empty block replaced: nothing of the rental's changes
            chain.mine()
            for _ in range(250):
                if oracle.view.reorgs_seen != seen:
                    break
                await asyncio.sleep(0.02)
            assert oracle.view.reorgs_seen != seen, "the follower did not see the reorg"
            await oracle.batcher.settle_batches()
            return after_landing, quiet, len(reads) - after_landing - quiet, states(oracle, rental, (1,))

    after_landing, quiet, after_reorg, final_states = asyncio.run(scenario())
    assert (after_landing, quiet, after_reorg) == (1, 0, 1)
    assert final_states == [ReportState.LANDED]
