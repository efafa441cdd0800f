"""Acceptance of one agent submission: deduplicate, verify, place it after the previous report, store it."""

from __future__ import annotations

from offchain.chain.reads import Rental
from offchain.chain.rpc import ChainUnreachable
from offchain.oracle.store import NewSubmission, SubmissionStore, key_of
from offchain.oracle.verify import LAG_SENSITIVE_REASONS, Rejected, Verifier, check_continuity
from offchain.protocol.digest import TelemetryDomain
from offchain.protocol.messages import RejectReason, TelemetryAck, TelemetrySubmission


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
            return await self._accept(submission, digest, body, rental)
        except Rejected as exc:
            if exc.reason not in LAG_SENSITIVE_REASONS:
                raise
        return await self._accept(submission, digest, body, await self._verifier.refreshed_rental(report.rental_id))

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
