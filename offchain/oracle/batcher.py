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

No report can hold up another rental's: each due report is checked against its rental's fresh state with the
escrow's own rules (`offchain.chain.skips`), and one the chain would skip for good is `quarantined` with its
reason instead of batched, while one covering time after the latest block waits for the chain's clock. A report
the peers refuse is left out and the rest co-signed without it; it is quarantined only when the refusals leave
too few oracles to sign it, for reasons that do not pass. Every batch is dry-run before it is handed over, and
halved until a report that makes it revert is isolated; a report whose batches failed `MAX_FAILED_BATCHES` times
is quarantined.
Finality: a batch's reports stay `batched` until its transaction is final, `ChainSettings.confirmations` blocks
deep (the tx manager re-checks the receipt's block until then and sends the transaction again if a reorg drops
it). A reorg deeper than that is reconciled each epoch (`reconcile`): the reports of a transaction the tx manager
took back to send again return to `batched` under it, and rentals whose latest report landed are read afresh:
while one is live and the chain's last applied seq fell below the report the store holds as landed, that report
goes back to `held` and lands again. Each landing is read once in the epoch after it was settled (a reorg that
came in between), and every landing of the last `reorg_window_seconds` after the chain view's follower saw a
reorg (and at start): one read per rental that landed recently, only when a reorg makes it worth it. A reorg
older than the window is past any chain's finality.

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
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Sequence

import aiohttp
from eth_utils import keccak
from web3.types import TxParams

from offchain.chain.reads import OracleSet, Rental
from offchain.chain.skips import TRANSIENT_SKIPS, predict_skip
from offchain.chain.tx.dryrun import DryRunFailed, dry_run
from offchain.chain.tx.manager import TxManager
from offchain.chain.tx.reverts import RevertDecoder
from offchain.chain.tx.store import FINAL_STATES, TxRecord, TxState
from offchain.config import DEFAULT_REORG_WINDOW_SECONDS
from offchain.oracle.chainview import ChainView
from offchain.oracle.cosign import collect_cosignatures
from offchain.oracle.metrics import OracleMetrics
from offchain.oracle.rotation import Role, Rotation
from offchain.oracle.store import ReportState, SubmissionKey, SubmissionStore, WaitingReport, key_of
from offchain.protocol.messages import CosignRequest, OracleError, RejectReason, TelemetrySubmission, chain_reports
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


#: Batch transactions a report may fail in before it is quarantined.
MAX_FAILED_BATCHES = 3
#: The kinds of quarantine that are not a `SkipReason` name: the first word of a quarantined report's reason.
QUARANTINE_COSIGN = "cosign_refused"  # too many peers refuse to co-sign it for good
QUARANTINE_DRY_RUN = "dry_run_reverted"  # its batch's call reverts with it and passes without it
QUARANTINE_FAILED = "batch_failed"  # MAX_FAILED_BATCHES transactions carrying it failed
#: `submitReports` reverts that concern the batch's signatures, never one of its reports: no split finds a culprit.
BATCH_REVERTS = (
    "Escrow_EmptyBatch",
    "Escrow_MalformedSignatures",
    "Escrow_NotEnoughSignatures",
    "Escrow_SignerNotInOracleSet",
    "Escrow_DuplicateSigner",
    "ECDSAInvalidSignature",
)
#: Peers' refusals that may pass (their chain view lags, a new agent key among it, the report is not yet due on
#: their clock, they miss an earlier report): a report refused for one of them is left out of the batch but stays
#: held.
PASSING_REFUSALS = frozenset(
    {
        RejectReason.CHAIN_UNAVAILABLE,
        RejectReason.PERIOD_IN_FUTURE,
        RejectReason.SEQ_GAP,
        RejectReason.SEQ_STALE,
        RejectReason.PERIOD_DISCONTINUOUS,
        RejectReason.AGENT_NOT_SET,
        RejectReason.SIGNER_NOT_AGENT,
        RejectReason.UNKNOWN_RENTAL,
        RejectReason.RENTAL_NOT_LIVE,
    }
)


def _against(rental: Rental, now: int) -> str:
    return (
        f"at block time {now} (rental {rental.status.name} since {rental.since}, applied seq {rental.last_seq} "
        f"covering to {rental.covered_until}, {rental.delivered_seconds} s delivered)"
    )


def _listed(refusals: dict[str, OracleError]) -> str:
    return ", ".join(sorted({f"{error.error}: {error.detail}" for error in refusals.values()}))


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


class BatchReverted(Exception):
    """A co-signed batch's call reverts for its signatures (`BATCH_REVERTS`): nothing of it can be sent now."""


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
        reorg_window_seconds: float = DEFAULT_REORG_WINDOW_SECONDS,
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
        self._decoder = RevertDecoder.from_artifacts()
        self._reorg_window = reorg_window_seconds
        self._reorgs_checked: int | None = None  # the chain view's reorg count at the last re-check of landings
        self._landings_checked_at = 0.0  # landings settled before this time were re-checked at least once
        self._rotation = rotation
        self._roles: dict[SubmissionKey, Role] = {}  # how this oracle takes each report `_due` returned

    async def close_batch(self) -> BatchOutcome:
        """Settles the batches the chain has confirmed, then closes one batch of the reports due to land, if there
        are any and enough oracles co-sign them.

        A report enough peers refuse to co-sign is split off and the rest are co-signed without it
        (`_cosigned`); the co-signed batch is dry-run and, if its call reverts, halved until what reverts is
        isolated (`_passing`). Each part that passes is handed to the tx manager as its own transaction."""
        await self.settle_batches()
        due = await self._due()
        self._metrics.reports_held.set(self._store.count(ReportState.HELD) + self._store.count(ReportState.BATCHED))
        if not due:
            return BatchOutcome(None, 0, "no reports due")
        reasons = dict(due)
        oracle_set = await self._chain.oracle_set()
        cosigned = await self._cosigned(self._store.submissions(reasons), oracle_set)
        if cosigned is None:
            return BatchOutcome(None, len(due), "not enough co-signatures")
        try:
            parts, reverted = await self._passing(*cosigned, oracle_set)
        except BatchReverted as exc:
            log.warning("batch of %d reports not submitted: %s", len(cosigned[0]), exc)
            return BatchOutcome(None, len(cosigned[0]), str(exc))
        if parts and reverted:
            # The rest of the batch passes without them: what reverts is theirs, not the batch's.
            self._quarantine([(key_of(s), f"{QUARANTINE_DRY_RUN}: {reason}") for s, reason in reverted])
        elif reverted:
            log.warning("batch of %d reports not submitted: %s", len(cosigned[0]), reverted[0][1])
            return BatchOutcome(None, len(cosigned[0]), reverted[0][1])
        tx_key, sent = None, 0
        for submissions, data in parts:
            tx_key = self._fresh_key(chain_reports(submissions))
            await self._txmgr.submit(tx_key, self._escrow.address, data)
            self._store.mark_batched([key_of(s) for s in submissions], tx_key)
            self._metrics.record_batch(len(submissions))
            for submission in submissions:
                self._metrics.landings.inc(reasons[key_of(submission)].value)
                self._metrics.submitted.inc(self._roles.get(key_of(submission), Role.PRIMARY).value)
            log.info("submitted batch %s with %d reports", tx_key, len(submissions))
            sent += len(submissions)
        return BatchOutcome(tx_key, sent)

    async def _cosigned(
        self, submissions: list[TelemetrySubmission], oracle_set: OracleSet
    ) -> tuple[list[TelemetrySubmission], list[bytes]] | None:
        """The submissions that `threshold` oracles co-signed, with the signatures (this oracle's first), or None.

        A peer refuses a whole batch at the first report it would not accept (`OracleError.index`). Every report a
        peer refused is left out and the rest asked for again, so that no other rental waits for it. A refused
        report stays held unless the peers that refused it, for a reason that time does not lift, leave fewer than
        `threshold` oracles that could sign it: then it is quarantined. One peer alone therefore cannot get a report
        quarantined while the others could still sign it."""
        needed = oracle_set.threshold - 1
        while submissions:
            reports = chain_reports(submissions)
            signatures = {self._signer.address: self._signer.sign(reports, oracle_set.version)}
            if needed <= 0:
                return submissions, list(signatures.values())[: oracle_set.threshold]
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
            if len(signatures) >= oracle_set.threshold:
                return submissions, list(signatures.values())[: oracle_set.threshold]
            refused: dict[SubmissionKey, dict[str, OracleError]] = {}
            for peer, error in collected.refusals.items():
                if error.index is not None and 0 <= error.index < len(submissions):
                    refused.setdefault(key_of(submissions[error.index]), {})[peer] = error
            log.warning(
                "batch of %d reports: %d of %d signatures (%s)",
                len(reports),
                len(signatures),
                oracle_set.threshold,
                collected.failures,
            )
            if not refused:
                return None
            self._quarantine(
                [
                    (
                        key,
                        f"{QUARANTINE_COSIGN}: refused by {len(errors)} of {len(self._peers)} peers: {_listed(errors)}",
                    )
                    for key, errors in refused.items()
                    if self._unsignable(errors, oracle_set.threshold)
                ]
            )
            submissions = [s for s in submissions if key_of(s) not in refused]
        return None

    def _unsignable(self, refusals: dict[str, OracleError], threshold: int) -> bool:
        """Whether the peers that refused a report for good leave fewer than `threshold` oracles to sign it."""
        lasting = sum(1 for error in refusals.values() if error.error not in PASSING_REFUSALS)
        return 1 + len(self._peers) - lasting < threshold

    async def _passing(
        self, submissions: list[TelemetrySubmission], signatures: list[bytes], oracle_set: OracleSet
    ) -> tuple[list[tuple[list[TelemetrySubmission], bytes]], list[tuple[TelemetrySubmission, str]]]:
        """The parts of a co-signed batch whose `submitReports` call passes, each with its call data, and the
        reports whose call reverts alone, with the reason. A batch that reverts for one of its reports (anything
        but its signatures) is halved and each half co-signed again, until the report is isolated; a half that
        cannot be co-signed waits for the next epoch. Raises BatchReverted when the signatures are at fault."""
        data = self._escrow.encode_abi(
            "submitReports", args=submit_args(chain_reports(submissions), signatures, oracle_set.version)
        )
        call: TxParams = {"from": self._txmgr.address, "to": self._escrow.address, "data": data}
        try:
            await dry_run(self._escrow.w3, call, self._decoder, "pending")
        except DryRunFailed as failed:
            if failed.reason.startswith(BATCH_REVERTS):
                raise BatchReverted(failed.summary) from None
            if len(submissions) == 1:
                return [], [(submissions[0], failed.summary)]
            log.warning("batch of %d reports would revert (%s): halving it", len(submissions), failed.summary)
        else:
            return [(submissions, data)], []
        parts: list[tuple[list[TelemetrySubmission], bytes]] = []
        reverted: list[tuple[TelemetrySubmission, str]] = []
        middle = len(submissions) // 2
        for half in (submissions[:middle], submissions[middle:]):
            cosigned = await self._cosigned(half, oracle_set)
            if cosigned is not None:
                passing, failing = await self._passing(*cosigned, oracle_set)
                parts += passing
                reverted += failing
        return parts, reverted

    async def settle_batches(self) -> None:
        """Settles every batch whose transaction ended: a confirmed one's reports are `landed` or `skipped` by their
        rentals' state on chain, a failed one's go back to the store. Reads the tx manager's records rather than
        waiting for its callback, so a batch confirmed while this oracle was down is settled too. Then reconciles
        what a reorg deeper than the confirmations took back (`reconcile`)."""
        await self.reconcile()
        for tx_key in self._store.in_flight():
            record = self._txmgr.record(tx_key)
            if record is None or record.state not in FINAL_STATES:
                continue
            if record.state is not TxState.CONFIRMED:
                exhausted = self._store.count_failed_batch(tx_key, MAX_FAILED_BATCHES)
                released = self._store.release_batch(tx_key)
                log.warning(
                    "batch %s ended %s (%s); %d reports back in the store",
                    tx_key,
                    record.state.value,
                    record.error,
                    released,
                )
                self._quarantine(
                    [
                        (key, f"{QUARANTINE_FAILED}: {MAX_FAILED_BATCHES} batches failed, the last {record.error}")
                        for key in exhausted
                    ]
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

    async def reconcile(self) -> None:
        """Undoes the landings a reorg deeper than the confirmations took out of the chain, then updates the
        finality gauges. The tx manager is asked to look for its final transactions that the chain lost (it sends
        them again) whenever a recent landing is missing on chain, so that such a batch follows its transaction
        back to `batched` instead of being landed twice; what remains missing (landed by another transaction, or
        one that will not come back) goes back to `held`."""
        lost = await self._lost_landings()
        if lost:
            await self._txmgr.recheck_final()
        unconfirmed = self._txmgr.records(TxState.UNCONFIRMED)
        for record in unconfirmed:
            if record.key.startswith("reports:") and (count := self._store.reopen_batch(record.key)):
                self._metrics.reports_relanded.inc("resent", count)
                log.warning(
                    "batch %s was reorged out after it was final; its %d reports wait for it again",
                    *(record.key, count),
                )
        missing = [
            (rental_id, last_seq)
            for key, (rental_id, last_seq) in lost.items()
            if self._store.state(key) is ReportState.LANDED
        ]
        if missing and (count := self._store.reopen_landed(missing)):
            self._metrics.reports_relanded.inc("rebatched", count)
            log.warning(
                "%d landed reports of %d rentals are no longer on chain (a reorg); they land again", count, len(missing)
            )
        self._metrics.record_finality(unconfirmed, self._store.count(ReportState.BATCHED), time.time())

    async def _lost_landings(self) -> dict[SubmissionKey, tuple[int, int]]:
        """The rentals' latest reports, landed since the last re-check (or within the reorg window, after a reorg
        or at start), that are no longer on chain while the rental is live, each with its rental id and the
        chain's last applied seq."""
        now, reorgs = time.time(), self._chain.reorgs_seen
        since = now - self._reorg_window
        if reorgs == self._reorgs_checked:
            since = max(since, self._landings_checked_at)
        recent = self._store.recently_landed(since)
        rentals = await asyncio.gather(*(self._chain.refresh_rental(key.rental_id) for key in recent))
        self._reorgs_checked, self._landings_checked_at = reorgs, now
        return {
            key: (key.rental_id, rental.last_seq)
            for key, rental in zip(recent, rentals)
            if rental.is_live and rental.last_seq < key.seq
        }

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
        """Up to `max_batch_reports` rentals' latest reports that are due to land and that the chain would apply,
        oldest first, with why each is due. Rentals are judged on the cached chain view (the follower drops a rental
        from it when it is terminated or settled); the due ones are read afresh before they are batched, the
        reports the chain no longer takes are settled for good, and each of the others is checked against its
        rental's fresh state and the latest block time with the escrow's own rules (`predict_skip`). One the chain
        would skip for good is quarantined; one whose coverage is ahead of the chain's clock stays held until the
        clock passes it."""
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
        submissions = self._store.submissions(report.key for report, _ in due)
        start_timeout = await self._chain.start_timeout()
        taken = []
        doomed = []
        for (report, reason), rental, submission in zip(due, rentals, submissions):
            skip = predict_skip(submission.report.to_chain_report(), rental, now, start_timeout)
            if not rental.is_live:
                settled.append((report.key, _final_state(report, rental)))
            elif report.seq <= rental.last_seq:
                settled.append((report.key, ReportState.LANDED))
            elif skip in TRANSIENT_SKIPS:
                stand_in = None
                if reason is LandingReason.CHECKPOINT:
                    stand_in = await self._checkpoint_stand_in(report, rental, now, start_timeout)
                if stand_in is not None:
                    taken.append((stand_in, reason))
                    self._roles[stand_in] = self._roles.get(report.key, Role.PRIMARY)
                else:
                    log.info("rental %d seq %d waits for the chain's clock (%s)", *report.key, skip.name)
            elif skip is not None:
                doomed.append((report.key, f"{skip.name}: the chain would skip it {_against(rental, now)}"))
            else:
                taken.append((report.key, reason))
        self._settle(settled)
        self._quarantine(doomed)
        return taken

    async def _checkpoint_stand_in(
        self, report: WaitingReport, rental: Rental, now: int, start_timeout: int
    ) -> SubmissionKey | None:
        """For a checkpoint whose latest report covers time after the latest block: the rental's latest earlier
        report that the chain takes now, held again to land in its place. Without it a rental whose agent reports
        more often than blocks come would always have its latest report a little ahead of the chain's clock, and no
        checkpoint would land until its final report."""
        key = self._store.covered_stand_in(report.rental_id, rental.last_seq, report.seq, now)
        if key is None:
            return None
        (submission,) = self._store.submissions([key])
        if predict_skip(submission.report.to_chain_report(), rental, now, start_timeout) is not None:
            return None
        if not self._store.hold_again(key):
            return None
        log.info("rental %d seq %d lands for the checkpoint in place of seq %d, ahead of the chain", *key, report.seq)
        return key

    def _quarantine(self, reasons: Sequence[tuple[SubmissionKey, str]]) -> None:
        """Quarantines reports that are still held, each with its reason (`kind: detail`), and counts them."""
        why = dict(reasons)
        for key in self._store.quarantine(reasons):
            log.warning("rental %d seq %d quarantined: %s", key.rental_id, key.seq, why[key])
            self._metrics.reports_quarantined.inc(why[key].split(":", 1)[0])

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
        ended (failed, or confirmed and then lost to a reorg). The same reports always give the same key while its
        transaction is under way (a restarted oracle finds it again), and the key stays short at any batch size."""
        listed = ",".join(f"{r.rental_id}-{r.seq}" for r in reports)
        base = f"reports:{len(reports)}:{keccak(text=listed).hex()[:32]}"
        key, attempt = base, 1
        while (existing := self._txmgr.record(key)) is not None and existing.state in FINAL_STATES:
            attempt += 1
            key = f"{base}#{attempt}"
        return key


def _final_state(report: WaitingReport, rental: Rental) -> ReportState:
    """How a report of a rental that takes no more reports ended: `landed` if the chain applied it (or a later one;
    another oracle may have landed it while it was not this oracle's turn), else `dropped`."""
    return ReportState.LANDED if report.seq <= rental.last_seq else ReportState.DROPPED
