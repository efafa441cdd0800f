"""An oracle's batcher: lands each rental's latest accepted report when it is due and it is this oracle's turn, in
batches that k of n oracles co-sign, through the tx manager. Every oracle of the set runs one (unless it is
configured to co-sign only), so no single oracle can keep a provider's reports off the chain.

Reports are cumulative, so only a rental's latest report ever needs to land, and the batcher lands it only when it
is due (`landing_reason`): its job ended (Completed or Failed), the rental's time is up, the renter terminated it,
or its coverage has grown `checkpoint_interval_seconds` past what last landed, which bounds what anyone loses if
every oracle disappears. Everything between stays in the store, signed, for audit and the live views.

A batch closes every epoch, or sooner once `max_batch_reports` wait, capped so the transaction stays under
`MAX_BATCH_GAS`. The transaction is handed to the tx manager (which persists it before sending) and only then
are its reports marked with its key. After a crash in between, the same reports form the same batch again,
whose key the tx manager answers with the transaction it already holds. Once a batch's transaction is confirmed,
each of its reports is settled from its rental's state on chain: `landed` when the rental's last applied seq
reached it, else `skipped` (the escrow skipped it with `ReportSkipped`), and never sent again; a later report of
the rental lands in its turn. A batch whose transaction failed goes back to the store and the next epoch takes
each rental's latest report again. Reports the chain no longer takes (the rental is final, or a later seq already
landed) are settled before they are batched.

Which oracle lands a due report, and when (`offchain.oracle.rotation`): its due time (`landing_due_at`) picks a
primary in the escrow's oracle set; the others are fallbacks that each take the report `handoff_seconds` after
the one before them, if it has not landed by then (the fresh read before batching settles what another oracle
landed). So every due report lands within `(n − 1) × handoff_seconds` plus an epoch and a transaction of coming
due while one oracle of the set holds it and a threshold co-signs, which the service checks is well within the
escrow's reportGrace. A report that two oracles send lands once; the later batch's copy is skipped
(`SeqNotIncreasing`) and settled `landed` like any other.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Sequence

import aiohttp
from eth_utils import keccak

from offchain.chain.reads import Rental
from offchain.chain.tx.manager import TxManager
from offchain.chain.tx.store import FINAL_STATES, TxRecord, TxState
from offchain.oracle.chainview import ChainView
from offchain.oracle.cosign import collect_cosignatures
from offchain.oracle.metrics import OracleMetrics
from offchain.oracle.rotation import Role, Rotation
from offchain.oracle.store import ReportState, SubmissionKey, SubmissionStore, WaitingReport, key_of
from offchain.protocol.messages import CosignRequest, chain_reports
from offchain.protocol.reports import BatchSigner, ReportStatus, submit_args
from offchain.protocol.status import RentalStatus

log = logging.getLogger(__name__)

#: Gas a batch transaction may use at most.
MAX_BATCH_GAS = 3_000_000
#: Measured by `make gas` (at most 40k for a one-report batch, 12k per further report), with headroom.
BATCH_BASE_GAS = 60_000
REPORT_GAS = 25_000
#: Reports one transaction may carry under MAX_BATCH_GAS.
MAX_REPORTS_BY_GAS = (MAX_BATCH_GAS - BATCH_BASE_GAS) // REPORT_GAS


class LandingReason(StrEnum):
    """Why a rental's latest report is due to land."""

    FINAL = "final"  # the job ended: Completed or Failed
    TIME_UP = "time_up"  # the report covers the rental to its end, or the chain's clock passed it
    TERMINATED = "terminated"  # the renter ended the rental early: land what covers it up to the new end
    CHECKPOINT = "checkpoint"  # coverage grew `checkpoint_interval` past what last landed


def landing_reason(waiting: WaitingReport, rental: Rental, now: int, checkpoint_interval: int) -> LandingReason | None:
    """Why `waiting` is due to land given its rental on chain and the chain's clock `now`, or None while it is not.

    Coverage since the last landing counts from the later of what this store landed and what the chain applied
    (another oracle may have landed a report)."""
    if waiting.status is not ReportStatus.RUNNING:
        return LandingReason.FINAL
    if rental.status is RentalStatus.TERMINATED:
        return LandingReason.TERMINATED
    if waiting.covered_until >= rental.end or now >= rental.end:
        return LandingReason.TIME_UP
    landed_until = max(waiting.landed_until or 0, rental.covered_until)
    if waiting.covered_until - landed_until >= checkpoint_interval:
        return LandingReason.CHECKPOINT
    return None


def landing_due_at(waiting: WaitingReport, rental: Rental, reason: LandingReason, checkpoint_interval: int) -> int:
    """The chain time from which `waiting` has been due to land for `reason`, from what every oracle of the set shares
    (the report and its rental on chain), so that they all agree whose turn it is: a final report from the end of
    its coverage (it cannot exist earlier), one after a termination or at the rental's end from that end, and a
    checkpoint from the interval past the coverage that last landed (a later report that supersedes it inherits
    that time, so reports that keep coming do not push the hand-off back)."""
    if reason is LandingReason.FINAL:
        return waiting.covered_until
    if reason in (LandingReason.TERMINATED, LandingReason.TIME_UP):
        return rental.end
    return max(waiting.landed_until or 0, rental.covered_until) + checkpoint_interval


@dataclass(frozen=True)
class BatchOutcome:
    """What closing a batch did: the transaction key, or why nothing was submitted."""

    tx_key: str | None
    reports: int
    reason: str = ""


class Batcher:
    """Turns accepted reports into co-signed `submitReports` transactions, taking the due reports whose turn has
    come for this oracle (`rotation`; None takes every due report at once, as a lone submitter)."""

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
        checkpoint_interval_seconds: int,
        cosign_timeout: float = 5.0,
        rotation: Rotation | None = None,
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
        self._checkpoint_interval = checkpoint_interval_seconds
        self._cosign_timeout = cosign_timeout
        self._rotation = rotation
        self._roles: dict[SubmissionKey, Role] = {}  # how this oracle takes each report `_due` returned

    async def close_batch(self) -> BatchOutcome:
        """Settles the batches the chain has confirmed, then closes one batch of the reports due to land, if there
        are any and enough oracles co-sign it."""
        await self.settle_batches()
        due = await self._due()
        self._metrics.reports_held.set(self._store.count(ReportState.HELD) + self._store.count(ReportState.BATCHED))
        if not due:
            return BatchOutcome(None, 0, "no reports due")
        submissions = self._store.submissions(key for key, _ in due)
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
        signed = list(signatures.values())[: oracle_set.threshold]
        data = self._escrow.encode_abi("submitReports", args=submit_args(reports, signed, oracle_set.version))
        await self._txmgr.submit(tx_key, self._escrow.address, data)
        self._store.mark_batched([key_of(s) for s in submissions], tx_key)
        self._metrics.record_batch(len(reports))
        for key, reason in due:
            self._metrics.landings.inc(reason.value)
            self._metrics.submitted.inc(self._roles.get(key, Role.PRIMARY).value)
        log.info("submitted batch %s with %d reports", tx_key, len(reports))
        return BatchOutcome(tx_key, len(reports))

    async def settle_batches(self) -> None:
        """Settles every batch whose transaction ended: a confirmed one's reports are `landed` or `skipped` by their
        rentals' state on chain, a failed one's go back to the store. Reads the tx manager's records rather than
        waiting for its callback, so a batch confirmed while this oracle was down is settled too."""
        for tx_key in self._store.in_flight():
            record = self._txmgr.record(tx_key)
            if record is None or record.state not in FINAL_STATES:
                continue
            if record.state is not TxState.CONFIRMED:
                released = self._store.release_batch(tx_key)
                log.warning(
                    "batch %s ended %s (%s); %d reports back in the store",
                    tx_key,
                    record.state.value,
                    record.error,
                    released,
                )
                continue
            outcomes = []
            batched = self._store.batched(tx_key)
            rentals = await asyncio.gather(*(self._chain.refresh_rental(s.report.rental_id) for s in batched))
            for submission, rental in zip(batched, rentals):
                landed = rental.last_seq >= submission.report.seq
                outcomes.append((key_of(submission), ReportState.LANDED if landed else ReportState.SKIPPED))
                if not landed:
                    log.warning("rental %d seq %d was skipped by the chain", *key_of(submission))
            self._settle(outcomes)

    def on_final(self, record: TxRecord) -> None:
        """Tx manager callback: records the latency and gas of a confirmed batch."""
        if not record.key.startswith("reports:") or record.state is not TxState.CONFIRMED:
            return
        if record.gas_used is not None:
            self._metrics.record_gas_used(record.gas_used)
        if record.confirmed_at is not None:
            self._metrics.record_tx_latency((record.confirmed_at - record.created_at).total_seconds())

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

    async def _due(self) -> list[tuple[SubmissionKey, LandingReason]]:
        """Up to `max_batch_reports` rentals' latest reports that are due to land and that the chain still takes,
        oldest first, with why each is due. Rentals are judged on the cached chain view (the follower drops a rental
        from it when it is terminated or settled); the due ones are read afresh before they are batched, and the
        reports the chain no longer takes are settled for good."""
        waiting = self._store.waiting()
        self._roles = {}
        if not waiting:
            return []
        now = await self._chain.block_time()
        signers = (await self._chain.oracle_set()).signers if self._rotation is not None else ()
        due: list[tuple[WaitingReport, LandingReason]] = []
        settled: list[tuple[SubmissionKey, ReportState]] = []
        for report in waiting:
            rental = await self._chain.rental(report.rental_id)
            if not rental.is_live:
                settled.append((report.key, _final_state(report, rental)))
                continue
            reason = landing_reason(report, rental, now, self._checkpoint_interval)
            if reason is not None and self._takes(report, rental, reason, now, signers):
                due.append((report, reason))
                if len(due) == self._max_reports:
                    break
        # One fresh read per due rental, all at once: the cached last seq lags reports others landed.
        rentals = await asyncio.gather(*(self._chain.refresh_rental(report.rental_id) for report, _ in due))
        taken = []
        for (report, reason), rental in zip(due, rentals):
            if not rental.is_live:
                settled.append((report.key, _final_state(report, rental)))
            elif report.seq <= rental.last_seq:
                settled.append((report.key, ReportState.LANDED))
            else:
                taken.append((report.key, reason))
        self._settle(settled)
        return taken

    def _takes(
        self, report: WaitingReport, rental: Rental, reason: LandingReason, now: int, signers: Sequence[str]
    ) -> bool:
        """Whether this oracle lands the due `report` now (recording in which role), or leaves it to the oracle
        whose turn it is."""
        if self._rotation is None:
            return True
        due_at = landing_due_at(report, rental, reason, self._checkpoint_interval)
        role = self._rotation.role(signers, due_at, now)
        if role is None:
            return False
        if role is Role.FALLBACK:
            log.info("rental %d seq %d due since %d: this oracle's turn as a fallback came", *report.key, due_at)
        self._roles[report.key] = role
        return True

    def _settle(self, outcomes: Sequence[tuple[SubmissionKey, ReportState]]) -> None:
        self._store.settle(outcomes)
        for _, state in outcomes:
            self._metrics.reports_settled.inc(state.value)

    def _fresh_key(self, reports) -> str:
        """`reports:<count>:<digest of the rentalId-seq list>`, suffixed when an earlier transaction with that key
        failed. The same reports always give the same key (a restarted oracle finds its transaction again), and the
        key stays short at any batch size."""
        listed = ",".join(f"{r.rental_id}-{r.seq}" for r in reports)
        base = f"reports:{len(reports)}:{keccak(text=listed).hex()[:32]}"
        key, attempt = base, 1
        while (existing := self._txmgr.record(key)) is not None and existing.state in (TxState.FAILED, TxState.FATAL):
            attempt += 1
            key = f"{base}#{attempt}"
        return key


def _final_state(report: WaitingReport, rental: Rental) -> ReportState:
    """How a report of a rental that takes no more reports ended: `landed` if the chain applied it (or a later one;
    another oracle may have landed it while it was not this oracle's turn), else `dropped`."""
    return ReportState.LANDED if report.seq <= rental.last_seq else ReportState.DROPPED
