"""One oracle process: the HTTP app (ingest, co-signing, health, metrics) and, unless it co-signs only
(`submit = never`), the batcher, the keeper and the tx manager that sends their transactions from the oracle's own
key. Every oracle of the set that submits takes its turns at landing due reports and settling due rentals
(`offchain.oracle.rotation`); at start it checks that the turns of the whole set end well within the escrow's
reportGrace (`rotation.check_handoff`) and refuses to run otherwise."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiohttp
from aiohttp import web
from web3 import AsyncWeb3

from offchain.chain.contracts import contract
from offchain.chain.rpc import ChainUnreachable, connect
from offchain.chain.tx.manager import TxManager
from offchain.config import OracleSettings, SubmitPolicy
from offchain.oracle.app import create_app
from offchain.oracle.batcher import Batcher
from offchain.oracle.chainview import ChainView
from offchain.oracle.keeper import Keeper
from offchain.oracle.metrics import OracleMetrics
from offchain.oracle.rotation import Rotation, check_handoff
from offchain.oracle.store import SubmissionStore
from offchain.protocol.reports import BatchSigner

log = logging.getLogger(__name__)

STORE_FILE = "oracle.sqlite3"
TXMGR_FILE = "txmgr.sqlite3"
KEEPER_FILE = "keeper.sqlite3"


class OracleService:
    """Runs one oracle until `stop` is set; all state lives in `settings.state_dir`."""

    def __init__(self, settings: OracleSettings, w3: AsyncWeb3 | None = None) -> None:
        self.settings = settings
        self._owns_w3 = w3 is None
        self.w3 = w3 or connect(settings.chain.rpc_url)
        self.metrics = OracleMetrics()
        self.metrics.confirmations.set(settings.chain.confirmations)
        state = Path(settings.state_dir)
        state.mkdir(parents=True, exist_ok=True)
        self.store = SubmissionStore(state / STORE_FILE)
        self.chain = ChainView(self.w3, settings.chain)
        self.txmgr: TxManager | None = None
        self.batcher: Batcher | None = None
        self.keeper: Keeper | None = None
        self.port: int | None = None

    async def run(self, stop: asyncio.Event) -> None:
        settings = self.settings
        app = create_app(settings, chain=self.chain, store=self.store, metrics=self.metrics)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        self.port = runner.addresses[0][1]
        log.info("oracle listening on %s:%d (submits: %s)", settings.host, self.port, settings.submit.value)
        tasks: list[asyncio.Task] = []
        session = aiohttp.ClientSession()
        try:
            if settings.submit is not SubmitPolicy.NEVER:
                await self._check_handoff()
                tasks = await self._start_submitting(session, stop)
            await stop.wait()
        finally:
            await asyncio.gather(*tasks, return_exceptions=True)
            await session.close()
            await runner.cleanup()
            for part in (self.keeper, self.txmgr):
                if part is not None:
                    part.close()
            self.store.close()
            if self._owns_w3:
                await self.w3.provider.disconnect()

    async def _check_handoff(self) -> None:
        """Raises `rotation.HandoffTooLong` if the set's last fallback would not come well within reportGrace. With
        the chain unreachable the check is skipped (logged): the oracle still serves ingest and co-signing."""
        settings = self.settings
        if settings.submit is not SubmitPolicy.ROTATE:
            return
        try:
            report_grace = await self.chain.reader.report_grace()
            oracles = len((await self.chain.oracle_set()).signers)
        except ChainUnreachable as exc:
            log.warning("hand-off not checked against reportGrace: chain unreachable (%s)", exc)
            return
        check_handoff(settings.handoff_seconds, settings.epoch_seconds, oracles, report_grace)

    async def _start_submitting(self, session: aiohttp.ClientSession, stop: asyncio.Event) -> list[asyncio.Task]:
        settings = self.settings
        state = Path(settings.state_dir)
        self.txmgr = TxManager(
            self.w3,
            state / TXMGR_FILE,
            settings.private_key,
            settings.chain.chain_id,
            confirmations=settings.chain.confirmations,
            on_final=self._on_final,
            on_reorg=lambda _record, was_final: self.metrics.record_reorg(was_final),
        )
        await self.txmgr.start()
        escrow = contract(self.w3, "RentalEscrow", settings.chain.escrow)
        signer = BatchSigner(settings.private_key, settings.chain.chain_id, settings.chain.escrow)
        rotation = Rotation(signer.address, settings.submit, settings.handoff_seconds)
        self.batcher = Batcher(
            store=self.store,
            chain=self.chain,
            txmgr=self.txmgr,
            session=session,
            escrow=escrow,
            signer=signer,
            peers=settings.peers,
            max_batch_reports=settings.max_batch_reports,
            metrics=self.metrics,
            checkpoint_interval_seconds=settings.checkpoint_interval_seconds,
            reorg_window_seconds=settings.reorg_window_seconds,
            rotation=rotation,
        )
        tasks = [
            asyncio.create_task(self.txmgr.run(stop), name="tx manager"),
            asyncio.create_task(self.batcher.run(stop, settings.epoch_seconds), name="batcher"),
        ]
        if settings.keeper:
            self.keeper = Keeper(
                self.chain.reader,
                self.txmgr,
                state / KEEPER_FILE,
                rotation=rotation,
                pending_seq=self.store.pending_seq,
                finalize_defer_seconds=settings.finalize_defer_seconds,
            )
            await self.keeper.start()
            tasks.append(asyncio.create_task(self.keeper.run(stop, settings.keeper_interval_seconds), name="keeper"))
        return tasks

    def _on_final(self, record) -> None:
        if self.batcher is not None:
            self.batcher.on_final(record)
