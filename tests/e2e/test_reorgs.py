"""Finality against a reorg, with the three oracles as processes: a batch the leader's tx manager took as final
(two confirmations) is taken out of the chain by a reorg of depth 3, and the rental still settles with each of
its reports applied once on the final chain.

The block producer here is the test's own (`PausableBlocks`): it mines a block a second, as the exchange's does,
with anvil's automine off, but stops while the test lines the reorg up, so the batch is at most three blocks deep
when the reorg comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from typing import AsyncIterator

from brownie import web3
from web3.types import RPCEndpoint

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
    """Mines every block while the test runs, one a second except while paused. Anvil's automine is off meanwhile,
    so a transaction waits for the next block, as on a real chain, and the chain before each block is kept as a
    snapshot, from which `reorg` replaces the blocks after it."""

    def __init__(self, rpc_url: str) -> None:
        self._w3 = connect(rpc_url)
        self._lock = asyncio.Lock()
        self._running = asyncio.Event()
        self._running.set()
        #: The snapshot of the chain at each head this producer mined on, by the head's number.
        self._snapshots: dict[int, str] = {}

    async def _call(self, method: str, params: list) -> object:
        response = await self._w3.provider.make_request(RPCEndpoint(method), params)
        if "error" in response:
            raise RuntimeError(f"{method} failed: {response['error']}")
        return response["result"]

    async def _mine(self) -> None:
        head = await self._w3.eth.block_number
        self._snapshots[head] = str(await self._call("evm_snapshot", []))
        await self._call("evm_mine", [])

    async def mine(self) -> None:
        """Mines one block now, paused or not."""
        async with self._lock:
            await self._mine()

    async def pause(self) -> None:
        """Stops the blocks; once it returns, no block is being mined."""
        self._running.clear()
        async with self._lock:
            pass

    def resume(self) -> None:
        self._running.set()

    async def reorg(self, depth: int, timestamp: int) -> None:
        """Replaces the last `depth` blocks with as many empty ones, the first stamped `timestamp`: a reorg whose
        branch dropped the transactions of the blocks it replaced, as an RPC node drops those that no one sends
        again. The chain goes back to the snapshot taken before those blocks, rather than through `anvil_reorg`:
        after a long suite on one anvil, the head that `anvil_reorg` builds has been seen to hold no state, while a
        snapshot's revert is what every test's isolation relies on."""
        async with self._lock:
            fork = await self._w3.eth.block_number - depth
            if fork not in self._snapshots:
                raise RuntimeError(f"no snapshot of block {fork}: its successor was not mined by this producer")
            await self._call("evm_revert", [self._snapshots[fork]])
            self._snapshots = {number: sid for number, sid in self._snapshots.items() if number < fork}
            await self._call("evm_setNextBlockTimestamp", [timestamp])
            for _ in range(depth):
                await self._mine()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self._running.wait()
            async with self._lock:
                if self._running.is_set() and not stop.is_set():
                    await self._mine()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    @contextlib.asynccontextmanager
    async def producing(self) -> AsyncIterator[PausableBlocks]:
        """Turns automine off and mines until the way out. There the base fee is zero again, as the suite's anvil
        starts, automine is back on and what is pending is mined. A block that fails to be mined fails the test."""
        await self._call("evm_setAutomine", [False])
        stop = asyncio.Event()
        task = asyncio.create_task(self.run(stop))
        try:
            yield self
        finally:
            stop.set()
            self._running.set()
            try:
                await task
            finally:
                await self._call("anvil_setNextBlockBaseFeePerGas", [hex(0)])
                await self._call("evm_setAutomine", [True])
                await self._call("evm_mine", [])
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
                await blocks.pause()
                landed_in = applied(suite, rental_id, from_block)[-1]["blockNumber"]
                if web3.eth.block_number < landed_in + CONFIRMATIONS - 1:
                    await blocks.mine()
                last_seq = max(s.report.seq for s, _ in stored_reports(tmp_path, 0, rental_id))

                def final_and_landed() -> bool:
                    states = dict((s.report.seq, state) for s, state in stored_reports(tmp_path, 0, rental_id))
                    return states[last_seq] == ReportState.LANDED and "confirmed" in batch_states(cluster).values()

                await ex.until_chain(final_and_landed, 20, "the leader to take the batch as final")
                assert web3.eth.block_number - landed_in < REORG_DEPTH, "the batch is deeper than the reorg"

                # The replacements keep the wall clock, as a real chain's do; stamped with their parents' times, they
                # would put the reports ahead of the chain's clock (CoverageInFuture).
                await blocks.reorg(REORG_DEPTH, int(time.time()))
                after = await asyncio.to_thread(rental_state, suite, rental_id)
                assert after.status is RentalStatus.RUNNING, "the reorg kept the batch"
                assert applied(suite, rental_id, from_block) == []
                blocks.resume()

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
