"""Acceptance of one agent submission: deduplicate, verify, place it after the previous report, store it.

A report that skips seqs this oracle does not hold is accepted across the gap (`check_continuity`), after the
oracle has tried to fill the gap from its peers (`gap_filler`, `offchain.oracle.recovery`); its ack names the
first seq still missing, and a report that later fills the gap (from an agent re-sending it, or a peer) is stored
where it fits, checked against its stored neighbours on both sides.

A report that differs from the one held under its (rental, seq), both signed by the rental's agent, is an
equivocation: the agent signed two versions of one report, which only its provider can make it do. The second is
refused (`seq_conflict`) and both are kept, with their signatures, as evidence (`record_equivocation`).
"""

from __future__ import annotations

import logging
from typing import Awaitable, Callable

from offchain.chain.reads import Rental
from offchain.chain.rpc import ChainUnreachable
from offchain.oracle.store import NewSubmission, PreviousReport, SubmissionStore, key_of
from offchain.oracle.verify import LAG_SENSITIVE_REASONS, Rejected, Verifier, check_continuity, check_follows
from offchain.protocol.digest import TelemetryDomain
from offchain.protocol.messages import ZERO_ROOT, RejectReason, TelemetryAck, TelemetrySubmission

#: Called with (rental id, seq) before a report is accepted across a gap below `seq`; returns once it has tried.
GapFiller = Callable[[int, int], Awaitable[None]]

log = logging.getLogger(__name__)


async def record_equivocation(
    store: SubmissionStore, verifier: Verifier, submission: TelemetrySubmission, digest: bytes
) -> None:
    """Keeps `submission`, verified as signed by its rental's agent, and the different report held under its seq
    as evidence against the rental's provider, and says so in the log."""
    report = submission.report
    provider = await verifier.provider_of(report.rental_id)
    other = NewSubmission(submission, digest, submission.model_dump_json().encode())
    if provider is not None and store.record_equivocation(key_of(submission), provider, other):
        log.warning(
            "provider %s equivocated: its agent signed two different reports for rental %d seq %d",
            provider,
            report.rental_id,
            report.seq,
        )


class Ingest:
    """`POST /v1/telemetry` without the HTTP: every outcome is an ack or a Rejected."""

    def __init__(self, verifier: Verifier, store: SubmissionStore, domain: TelemetryDomain) -> None:
        self._verifier = verifier
        self._store = store
        self._domain = domain
        self.gap_filler: GapFiller | None = None

    async def submit(self, submission: TelemetrySubmission, body: bytes, *, fill_gaps: bool = True) -> TelemetryAck:
        """Stores the submission (with `body`, the bytes it arrived as) if it passes every check.

        A report this oracle already holds is acknowledged again as a duplicate, even if it would fail a check now
        (its rental closed, it grew old), so an agent's retry is always safe; a different report under the same
        (rental, seq) is a conflict. A report that does not follow the cached rental is checked once more against
        the rental read from the chain now, since the cache does not follow applied reports; so is a report beyond
        the next seq this oracle holds, after (with `fill_gaps`) `gap_filler` has fetched what it lacks.
        """
        report = submission.report
        digest = self._domain.digest(report)
        try:
            rental = await self._verifier.verify(submission, digest)
        except (Rejected, ChainUnreachable):
            if self._store.held(key_of(submission)) == (digest, submission.signature):
                return TelemetryAck(rental_id=report.rental_id, seq=report.seq, duplicate=True)
            raise
        previous = self._store.last_accepted(report.rental_id)
        if report.seq > (previous.seq if previous else 0) + 1:
            if fill_gaps and self.gap_filler is not None:
                await self.gap_filler(report.rental_id, report.seq)
            # What this oracle lacks may have landed: the chain's applied totals are the ones to check against.
            rental = await self._verifier.refreshed_rental(report.rental_id)
            previous = self._store.last_accepted(report.rental_id)
        try:
            try:
                return await self._accept(submission, digest, body, rental, previous)
            except Rejected as exc:
                if exc.reason not in LAG_SENSITIVE_REASONS:
                    raise
            rental = await self._verifier.refreshed_rental(report.rental_id)
            return await self._accept(submission, digest, body, rental, self._store.last_accepted(report.rental_id))
        except Rejected as exc:
            if exc.reason is RejectReason.SEQ_CONFLICT:
                await record_equivocation(self._store, self._verifier, submission, digest)
            raise

    async def _accept(
        self,
        submission: TelemetrySubmission,
        digest: bytes,
        body: bytes,
        rental: Rental,
        previous: PreviousReport | None,
    ) -> TelemetryAck:
        """Stores the submission after `previous`, the rental's latest report as the store held it when the caller
        last looked (without awaiting since), or in the gap below it that it fills. Nothing awaits between these
        checks and the insert (`add_in_group` inserts before its first await), so no other request changes the
        store under them. The held report is only looked up when it can exist: the common path costs two
        statements, the rental's last report and the insert."""
        report = submission.report
        if previous is not None and report.seq <= previous.seq:
            held = self._store.held(key_of(submission))
            if held is not None and held.report_digest == digest:
                return TelemetryAck(rental_id=report.rental_id, seq=report.seq, duplicate=True)
            if held is not None:
                raise Rejected(
                    RejectReason.SEQ_CONFLICT,
                    f"a different report for rental {report.rental_id} seq {report.seq} is already accepted",
                )
            self._fill(NewSubmission(submission, digest, body), rental)
            return TelemetryAck(rental_id=report.rental_id, seq=report.seq)
        check_continuity(report, previous, rental)
        await self._store.add_in_group(NewSubmission(submission, digest, body))
        last_held = previous.seq if previous else 0
        missing = last_held + 1 if report.seq > last_held + 1 else None
        return TelemetryAck(rental_id=report.rental_id, seq=report.seq, missing_from_seq=missing)

    def _fill(self, entry: NewSubmission, rental: Rental) -> None:
        """Stores a report this oracle lacked below the rental's latest: it must follow the held report below it
        (or the rental's start) and the held report above it must follow it, each directly or across a gap."""
        report = entry.submission.report
        below, above = self._store.neighbours(report.rental_id, report.seq)
        # The rental's start moved if a report started it; the report above still pins what this one may claim.
        check_follows(report, below or PreviousReport(0, rental.since, 0, 0, ZERO_ROOT), open_start=below is None)
        if above is not None:
            try:
                check_follows(above.report, PreviousReport.of(report))
            except Rejected as exc:
                raise Rejected(
                    exc.reason, f"seq {above.report.seq}, held here, does not follow this report: {exc.detail}"
                ) from None
        self._store.add_superseded(entry)
