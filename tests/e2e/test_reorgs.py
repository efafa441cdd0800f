"""Finality against a reorg, with the three oracles as processes: a batch the leader's tx manager took as final
(two confirmations) is taken out of the chain by a reorg of depth 3, and the rental still settles with each of
its reports applied once on the final chain.

The block producer here is the test's own (`PausableBlocks`): it mines a block a second, as the exchange's does,
but stops while the test lines the reorg up, so the batch is at most three blocks deep when the reorg comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from typing import AsyncIterator

from brownie import web3

from offchain.chain.rpc import connect
from offchain.ops.cluster import OracleCluster
from offchain.ops.inprocess import ExchangeTimers
from offchain.oracle.service import TXMGR_FILE
from offchain.oracle.store import ReportState
from offchain.protocol.status import RentalStatus
from offchain.telemetry.replay import ReplaySource
from tests.e2e.conftest import SINGLE_SUBMITTER, oracle_processes, running_agent, stored_reports
from tests.e2e.test_settlement import TRACE, job, open_rental, put_spec, rental_state

CONFIRMATIONS = 2
REORG_DEPTH = 3
#: The exchange's own block producer mines once when it starts, then never again within a test.
NO_BLOCKS = ExchangeTimers(block_interval_seconds=3_600)


class PausableBlocks:
    """Mines an empty block every second, except while paused."""

    def __init__(self, rpc_url: str) -> None:
        self._w3 = connect(rpc_url)
        self.running = asyncio.Event()
        self.running.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.running.wait()
            await self._w3.provider.make_request("evm_mine", [])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    @contextlib.asynccontextmanager
    async def producing(self) -> AsyncIterator[PausableBlocks]:
        stop = asyncio.Event()
        task = asyncio.create_task(self.run(stop))
        try:
            yield self
        finally:
            stop.set()
            self.running.set()
            await task
            await self._w3.provider.disconnect()


def applied(suite, rental_id: int, from_block: int) -> list[dict]:
    """The rental's ReportApplied events on the canonical chain, with the block of each."""
    escrow = web3.eth.contract(address=suite.escrow.address, abi=suite.escrow.abi)
    logs = escrow.events.ReportApplied().get_logs(from_block=from_block, argument_filters={"rentalId": rental_id})
    return [{**dict(log["args"]), "blockNumber": log["blockNumber"]} for log in logs]


def batch_states(cluster: OracleCluster) -> dict[str, str]:
    """The leader's report transactions and the state of each in its tx manager."""
    db = sqlite3.connect(cluster.oracles[0].state_dir / TXMGR_FILE)
    try:
        return dict(db.execute("SELECT key, state FROM tx WHERE key LIKE 'reports:%'").fetchall())
    finally:
        db.close()


def metric(page: str, name: str) -> float:
    """The sum of a metric's samples on a Prometheus text page."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in page.splitlines() if line.startswith(name))


def test_a_reorg_of_depth_3_after_a_confirmed_batch_lands_each_report_once(
    suite, chain_settings, provider, renter, list_offer, tmp_path
):
    offer_id = list_offer([gpu.uuid for gpu in ReplaySource(TRACE).gpus()])
    spec = job("sleep 3; echo trained")
    put_spec(tmp_path, spec)
    from_block = web3.eth.block_number
    blocks = PausableBlocks(chain_settings.rpc_url)

    async def main() -> tuple[int, list[dict], str, dict[str, str]]:
        settings = {"CHAIN__CONFIRMATIONS": str(CONFIRMATIONS)}
        async with (
            oracle_processes(chain_settings, tmp_path, settings, SINGLE_SUBMITTER) as cluster,
            blocks.producing(),
        ):
            async with running_agent(
                chain_settings, tmp_path, provider.address, ReplaySource(TRACE, rebase=True), cluster.urls, NO_BLOCKS
            ) as ex:
                rental_id = await asyncio.to_thread(open_rental, suite, offer_id, spec, renter)
                await ex.until_chain(
                    lambda: rental_state(suite, rental_id).status.is_final, 60, "the completion report to land"
                )
                blocks.running.clear()
                landed_in = applied(suite, rental_id, from_block)[-1]["blockNumber"]
                if web3.eth.block_number < landed_in + CONFIRMATIONS - 1:
                    web3.provider.make_request("evm_mine", [])
                last_seq = max(s.report.seq for s, _ in stored_reports(tmp_path, 0, rental_id))

                def final_and_landed() -> bool:
                    states = dict((s.report.seq, state) for s, state in stored_reports(tmp_path, 0, rental_id))
                    return states[last_seq] == ReportState.LANDED and "confirmed" in batch_states(cluster).values()

                await ex.until_chain(final_and_landed, 20, "the leader to take the batch as final")
                assert web3.eth.block_number - landed_in < REORG_DEPTH, "the batch is deeper than the reorg"

                web3.provider.make_request("anvil_reorg", [REORG_DEPTH, []])
                # anvil stamps the replacement blocks with their parent's time and carries on from there, seconds
                # behind the wall clock (a real chain's replacements keep the time): the reports would be ahead of
                # the chain's clock (CoverageInFuture). The next block takes the wall clock again.
                web3.provider.make_request("evm_setNextBlockTimestamp", [int(time.time())])
                after = await asyncio.to_thread(rental_state, suite, rental_id)
                assert after.status is RentalStatus.RUNNING, "the reorg kept the batch"
                assert applied(suite, rental_id, from_block) == []
                blocks.running.set()

                await ex.until_chain(
                    lambda: rental_state(suite, rental_id).status.is_final, 30, "the reorged-out report to land again"
                )
                await ex.until_chain(
                    lambda: (
                        dict((s.report.seq, st) for s, st in stored_reports(tmp_path, 0, rental_id))[last_seq]
                        == ReportState.LANDED
                    ),
                    20,
                    "the leader to settle the report again",
                )
                page = await cluster.oracles[0].metrics()
                return last_seq, applied(suite, rental_id, from_block), page, batch_states(cluster)

    last_seq, events, page, txs = asyncio.run(main())

    rental_id = events[-1]["rentalId"]
    state = rental_state(suite, rental_id)
    assert state.status is RentalStatus.COMPLETED
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs)), f"a report landed twice on the final chain: {seqs}"
    assert seqs[-1] == last_seq
    assert (state.last_seq, state.covered_until, state.delivered_seconds) == (
        last_seq,
        events[-1]["coveredUntil"],
        events[-1]["deliveredSeconds"],
    )
    assert "failed" not in txs.values(), f"a batch transaction failed: {txs}"
    assert metric(page, 'gpuex_oracle_reorgs_total{depth="final"}') >= 1
    assert metric(page, "gpuex_oracle_reports_relanded_total") >= 1
    assert metric(page, "gpuex_oracle_confirmations ") == CONFIRMATIONS
