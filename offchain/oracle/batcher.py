"""The leader oracle's batcher: closes batches of accepted reports, gathers k-of-n signatures and hands the
`submitReports` transaction to the tx manager.

A batch closes every epoch, or sooner once `max_batch_reports` wait, capped so the transaction stays under
`MAX_BATCH_GAS`. The transaction is handed to the tx manager (which persists it before sending) and only then
are its reports marked with its key. After a crash in between, the same reports form the same batch again,
whose key the tx manager answers with the transaction it already holds; a different batch that repeats a
report fails its dry-run and its reports return to the pool. A batch whose transaction failed goes back to the
pool and is retried under a new key; reports the chain no longer takes (the rental is final, or the seq already
landed) are dropped from it first.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Sequence

import aiohttp
from eth_utils import keccak

from offchain.chain.tx.manager import TxManager
from offchain.chain.tx.store import TxRecord, TxState
from offchain.oracle.chainview import ChainView
from offchain.oracle.cosign import collect_cosignatures
from offchain.oracle.metrics import OracleMetrics
from offchain.oracle.store import SubmissionStore, key_of
from offchain.protocol.messages import CosignRequest, TelemetrySubmission, chain_reports
from offchain.protocol.reports import BatchSigner

log = logging.getLogger(__name__)

#: Gas a batch transaction may use at most.
MAX_BATCH_GAS = 3_000_000
#: Measured by `make gas`: ~50k for a one-report batch, ~16-18k per further report; rounded up for headroom.
BATCH_BASE_GAS = 60_000
REPORT_GAS = 25_000
#: Reports one transaction may carry under MAX_BATCH_GAS.
MAX_REPORTS_BY_GAS = (MAX_BATCH_GAS - BATCH_BASE_GAS) // REPORT_GAS


@dataclass(frozen=True)
class BatchOutcome:
    """What closing a batch did: the transaction key, or why nothing was submitted."""

    tx_key: str | None
    reports: int
    reason: str = ""


class Batcher:
    """Turns accepted reports into co-signed `submitReports` transactions (run by the leader oracle)."""

    def __init__(
        self,
        *,
        store: SubmissionStore,
        chain: ChainView,
        txmgr: TxManager,
        session: aiohttp.ClientSession,
        escrow,
        signer: BatchSigner,
        peers: Sequence[str],
        max_batch_reports: int,
        metrics: OracleMetrics,
        cosign_timeout: float = 5.0,
    ) -> None:
        self._store = store
        self._chain = chain
        self._txmgr = txmgr
        self._session = session
        self._escrow = escrow
        self._signer = signer
        self._peers = list(peers)
        self._max_reports = max(1, min(max_batch_reports, MAX_REPORTS_BY_GAS))
        self._metrics = metrics
        self._cosign_timeout = cosign_timeout

    async def close_batch(self) -> BatchOutcome:
        """Closes one batch of waiting reports, if there are any and enough oracles co-sign it."""
        submissions = await self._live_unbatched()
        if not submissions:
            return BatchOutcome(None, 0, "no reports waiting")
        oracle_set = await self._chain.oracle_set()
        reports = chain_reports(submissions)
        signatures = {self._signer.address: self._signer.sign(reports, oracle_set.version)}
        needed = oracle_set.threshold - 1
        if needed > 0:
            collected = await collect_cosignatures(
                self._session,
                self._peers,
                CosignRequest(oracle_set_version=oracle_set.version, submissions=tuple(submissions)),
                self._signer.domain(oracle_set.version),
                oracle_set.signers,
                needed,
                self._cosign_timeout,
            )
            for signer, signature in collected.signatures.items():
                signatures.setdefault(signer, signature)
            if len(signatures) < oracle_set.threshold:
                log.warning(
                    "batch of %d reports not submitted: %d of %d signatures (%s)",
                    len(reports),
                    len(signatures),
                    oracle_set.threshold,
                    collected.failures,
                )
                return BatchOutcome(None, len(reports), "not enough co-signatures")

        tx_key = self._fresh_key(reports)
        data = self._escrow.encode_abi(
            "submitReports", args=[[r.as_tuple() for r in reports], list(signatures.values())[: oracle_set.threshold]]
        )
        await self._txmgr.submit(tx_key, self._escrow.address, data)
        self._store.mark_batched([key_of(s) for s in submissions], tx_key)
        self._metrics.record_batch(len(reports))
        log.info("submitted batch %s with %d reports", tx_key, len(reports))
        return BatchOutcome(tx_key, len(reports))

    def on_final(self, record: TxRecord) -> None:
        """Tx manager callback: records latency and gas, and returns a failed batch's reports to the pool."""
        if not record.key.startswith("reports:"):
            return
        if record.state is TxState.CONFIRMED:
            if record.gas_used is not None:
                self._metrics.record_gas_used(record.gas_used)
            if record.confirmed_at is not None:
                self._metrics.record_tx_latency((record.confirmed_at - record.created_at).total_seconds())
            return
        released = self._store.release_batch(record.key)
        log.warning(
            "batch %s ended %s (%s); %d reports back in the pool",
            record.key,
            record.state.value,
            record.error,
            released,
        )

    async def run(self, stop: asyncio.Event, epoch_seconds: float) -> None:
        """Closes a batch every epoch, and at once again while full batches are waiting, until `stop` is set."""
        while not stop.is_set():
            try:
                outcome = await self.close_batch()
                if outcome.tx_key is not None and outcome.reports >= self._max_reports:
                    continue
            except Exception:  # one bad epoch must not stop the oracle; the next epoch retries
                log.exception("closing a batch failed")
            try:
                await asyncio.wait_for(stop.wait(), timeout=epoch_seconds)
            except asyncio.TimeoutError:
                pass

    async def _live_unbatched(self) -> list[TelemetrySubmission]:
        """Waiting reports the chain still takes, in (rental, seq) order; the others are dropped for good."""
        waiting = self._store.unbatched(self._max_reports)
        # One fresh read per rental, not per report (a rental usually has several reports waiting), all at once.
        rental_ids = sorted({s.report.rental_id for s in waiting})
        rentals = dict(zip(rental_ids, await asyncio.gather(*(self._chain.refresh_rental(r) for r in rental_ids))))
        live: list[TelemetrySubmission] = []
        for submission in sorted(waiting, key=lambda s: (s.report.rental_id, s.report.seq)):
            rental = rentals[submission.report.rental_id]
            if rental.is_live and submission.report.seq > rental.last_seq:
                live.append(submission)
            else:
                self._store.mark_batched([key_of(submission)], "dropped:not-live-on-chain")
        return live

    def _fresh_key(self, reports) -> str:
        """`reports:<count>:<digest of the rentalId-seq list>`, suffixed when an earlier transaction with that key
        failed. The same reports always give the same key (a restarted leader finds its transaction again), and the
        key stays short at any batch size."""
        listed = ",".join(f"{r.rental_id}-{r.seq}" for r in reports)
        base = f"reports:{len(reports)}:{keccak(text=listed).hex()[:32]}"
        key, attempt = base, 1
        while (existing := self._txmgr.record(key)) is not None and existing.state in (TxState.FAILED, TxState.FATAL):
            attempt += 1
            key = f"{base}#{attempt}"
        return key
