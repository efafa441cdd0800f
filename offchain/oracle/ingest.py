"""Acceptance of one agent submission: deduplicate, verify, place it after the previous report, store it.

A report that differs from the one held under its (rental, seq), both signed by the rental's agent, is an
equivocation: the agent signed two versions of one report, which only its provider can make it do. The second is
refused (`seq_conflict`) and both are kept, with their signatures, as evidence (`record_equivocation`).
"""

from __future__ import annotations

import logging

from offchain.chain.reads import Rental
from offchain.chain.rpc import ChainUnreachable
from offchain.oracle.store import NewSubmission, SubmissionStore, key_of
from offchain.oracle.verify import LAG_SENSITIVE_REASONS, Rejected, Verifier, check_continuity
from offchain.protocol.digest import TelemetryDomain
from offchain.protocol.messages import RejectReason, TelemetryAck, TelemetrySubmission

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

    async def submit(self, submission: TelemetrySubmission, body: bytes) -> TelemetryAck:
        """Stores the submission (with `body`, the bytes it arrived as) if it passes every check.

        A report this oracle already holds is acknowledged again as a duplicate, even if it would fail a check now
        (its rental closed, it grew old), so an agent's retry is always safe; a different report under the same
        (rental, seq) is a conflict. A report that does not follow the cached rental is checked once more against
        the rental read from the chain now, since the cache does not follow applied reports.
        """
        report = submission.report
        digest = self._domain.digest(report)
        try:
            rental = await self._verifier.verify(submission, digest)
        except (Rejected, ChainUnreachable):
            if self._store.held(key_of(submission)) == (digest, submission.signature):
                return TelemetryAck(rental_id=report.rental_id, seq=report.seq, duplicate=True)
            raise
        try:
            try:
                return await self._accept(submission, digest, body, rental)
            except Rejected as exc:
                if exc.reason not in LAG_SENSITIVE_REASONS:
                    raise
            rental = await self._verifier.refreshed_rental(report.rental_id)
            return await self._accept(submission, digest, body, rental)
        except Rejected as exc:
            if exc.reason is RejectReason.SEQ_CONFLICT:
                await record_equivocation(self._store, self._verifier, submission, digest)
            raise

    async def _accept(
        self, submission: TelemetrySubmission, digest: bytes, body: bytes, rental: Rental
    ) -> TelemetryAck:
        """Stores the submission after the rental's previous report. Nothing awaits between these checks and the
        insert (`add_in_group` inserts before its first await), so no other request changes the store under
        them. The held report is only looked up when it can exist: the common path costs two statements, the
        rental's last report and the insert."""
        report = submission.report
        previous = self._store.last_accepted(report.rental_id)
        if previous is not None and report.seq <= previous.seq:
            held = self._store.held(key_of(submission))
            if held is not None and held.report_digest == digest:
                return TelemetryAck(rental_id=report.rental_id, seq=report.seq, duplicate=True)
            if held is not None:
                raise Rejected(
                    RejectReason.SEQ_CONFLICT,
                    f"a different report for rental {report.rental_id} seq {report.seq} is already accepted",
                )
        check_continuity(report, previous, rental)
        await self._store.add_in_group(NewSubmission(submission, digest, body))
        return TelemetryAck(rental_id=report.rental_id, seq=report.seq)
