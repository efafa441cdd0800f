"""The checks an oracle applies to an agent's telemetry submission, each failing with its own reason code.

`Verifier.verify` runs every check that does not depend on what this oracle already holds: policy (simulated
telemetry), time bounds, the agent signature against the agent key the registry holds for the offer's provider
(`agentOf`), the rental being live on chain and the report's GPUs being exactly the offer's. `check_continuity`
then places the cumulative report after the previous one (held here, or the chain's applied totals); the caller
runs it with the store's answer and stores the report without awaiting in between, so two requests for one
rental cannot interleave there.
"""

from __future__ import annotations

import time
from typing import Callable

from eth_utils import to_checksum_address
from pydantic import BaseModel, ConfigDict, Field

from offchain.chain.reads import Rental
from offchain.config import OracleSettings
from offchain.oracle.chainview import ChainView
from offchain.oracle.store import PreviousReport
from offchain.protocol.digest import InvalidSignature, TelemetryDomain, recover_address, report_gpu_hashes
from offchain.protocol.messages import ZERO_ROOT, RejectReason, TelemetryReport, TelemetrySubmission, ValidationIssue
from offchain.protocol.reports import split_rental_id
from offchain.protocol.status import RentalStatus

DEFAULT_MAX_REPORT_AGE_SECONDS = 24 * 3600

# Continuity failures that a lagging cached rental (reports others applied, a start) can cause. A report beyond the
# next seq is no longer refused (`check_follows` takes it across the gap); ingest re-reads the rental for it first.
LAG_SENSITIVE_REASONS = frozenset({RejectReason.PERIOD_DISCONTINUOUS})

HTTP_STATUS: dict[RejectReason, int] = {
    RejectReason.INVALID_BODY: 400,
    RejectReason.INVALID_QUERY: 400,
    RejectReason.BODY_TOO_LARGE: 413,
    RejectReason.BATCH_TOO_LARGE: 413,
    RejectReason.BAD_SIGNATURE: 401,
    RejectReason.SIMULATED_REFUSED: 403,
    RejectReason.AGENT_NOT_SET: 403,
    RejectReason.SIGNER_NOT_AGENT: 403,
    RejectReason.GPU_SUMMARY_SIGNER: 403,
    RejectReason.NOT_IN_ORACLE_SET: 403,
    RejectReason.UNKNOWN_RENTAL: 404,
    RejectReason.RENTAL_NOT_LIVE: 409,
    RejectReason.RENTAL_START_TIMED_OUT: 409,
    RejectReason.SEQ_CONFLICT: 409,
    RejectReason.SEQ_STALE: 409,
    RejectReason.SEQ_GAP: 409,
    RejectReason.PERIOD_DISCONTINUOUS: 409,
    RejectReason.PREV_ROOT_MISMATCH: 409,
    RejectReason.TOTALS_DECREASED: 409,
    RejectReason.ORACLE_SET_MISMATCH: 409,
    RejectReason.GPU_MISMATCH: 422,
    RejectReason.PERIOD_IN_FUTURE: 422,
    RejectReason.PERIOD_TOO_OLD: 422,
    RejectReason.DELIVERED_ABOVE_PERIOD: 422,
    RejectReason.UTIL_ABOVE_DELIVERED: 422,
    RejectReason.CHAIN_UNAVAILABLE: 503,
}


class Rejected(Exception):
    """A request the oracle refuses, with its reason code and the HTTP status that goes with it. `index` names the
    submission of a cosign batch that was refused."""

    def __init__(
        self,
        reason: RejectReason,
        detail: str,
        errors: tuple[ValidationIssue, ...] = (),
        index: int | None = None,
    ) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.errors = errors
        self.index = index

    @property
    def status(self) -> int:
        return HTTP_STATUS[self.reason]


class VerifyPolicy(BaseModel):
    """What the oracle tolerates: simulated telemetry, clock skew, and how old a report may be."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allow_simulated: bool = False
    max_clock_skew_seconds: int = Field(default=30, ge=0)
    max_report_age_seconds: int = Field(default=DEFAULT_MAX_REPORT_AGE_SECONDS, ge=1)

    @classmethod
    def from_settings(
        cls, settings: OracleSettings, max_report_age_seconds: int = DEFAULT_MAX_REPORT_AGE_SECONDS
    ) -> "VerifyPolicy":
        return cls(
            allow_simulated=settings.allow_simulated,
            max_clock_skew_seconds=settings.max_clock_skew_seconds,
            max_report_age_seconds=max_report_age_seconds,
        )


class Verifier:
    """Stateless and on-chain checks of submissions to one deployment (`domain`, the agents' EIP-712 domain)."""

    def __init__(
        self,
        chain: ChainView,
        policy: VerifyPolicy,
        domain: TelemetryDomain,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._chain = chain
        self._policy = policy
        self._domain = domain
        self._clock = clock

    async def verify(self, submission: TelemetrySubmission, digest: bytes) -> Rental:
        """Raises Rejected unless the submission passes every check but continuity; returns the rental's state
        for `check_continuity`. `digest` is the report's EIP-712 digest (`TelemetryDomain.digest`)."""
        report = submission.report
        now = self._clock()
        self._check_policy_and_time(report, now)
        try:
            signer = recover_address(digest, submission.signature)
        except InvalidSignature as exc:
            raise Rejected(RejectReason.BAD_SIGNATURE, str(exc)) from exc
        self._check_gpu_summary(submission, digest, signer)

        rental = await self._chain.rental(report.rental_id)
        await self._check_rental(report.rental_id, rental, now)
        offer_id, _nonce = split_rental_id(report.rental_id)
        offer = await self._chain.offer(offer_id)
        if offer is None:
            raise Rejected(RejectReason.UNKNOWN_RENTAL, f"offer {offer_id} does not exist")
        agent = await self._chain.agent_of(offer.provider)
        if agent is None:
            raise Rejected(RejectReason.AGENT_NOT_SET, f"provider {offer.provider} has no agent key")
        if signer != agent:
            raise Rejected(
                RejectReason.SIGNER_NOT_AGENT,
                f"signed by {to_checksum_address(signer)}; the agent of {offer.provider} is "
                f"{to_checksum_address(agent)}",
            )
        if frozenset(report_gpu_hashes(report)) != offer.gpu_uuid_hashes:
            raise Rejected(
                RejectReason.GPU_MISMATCH,
                f"the report's {len(report.gpu_uuids)} GPU UUIDs are not the {len(offer.gpu_uuid_hashes)} GPUs "
                f"registered for offer {offer_id}",
            )
        return rental

    def _check_gpu_summary(self, submission: TelemetrySubmission, digest: bytes, report_signer: bytes) -> None:
        """Raises Rejected unless the submission's per-GPU figures, if it has any, were signed for this very report by
        the key that signed the report (which `verify` then checks is the provider's agent)."""
        summary = submission.gpu_summary
        if summary is None:
            return
        summary_digest = self._domain.gpu_summary_digest(submission.report, digest, summary)
        try:
            signer = recover_address(summary_digest, summary.signature)
        except InvalidSignature as exc:
            raise Rejected(RejectReason.BAD_SIGNATURE, f"gpu_summary: {exc}") from exc
        if signer != report_signer:
            raise Rejected(
                RejectReason.GPU_SUMMARY_SIGNER,
                f"the GPU summary recovers to {to_checksum_address(signer)}, not to the report's signer "
                f"{to_checksum_address(report_signer)}: another key signed it, or signed it for another report",
            )

    async def provider_of(self, rental_id: int) -> str | None:
        """The provider of the rental's offer, whose agent signs the rental's reports (None if no such offer)."""
        offer = await self._chain.offer(split_rental_id(rental_id)[0])
        return None if offer is None else offer.provider

    async def refreshed_rental(self, rental_id: int) -> Rental:
        """The rental re-read from the chain and checked as `verify` checks it, for a report that does not follow
        the cached state (`LAG_SENSITIVE_REASONS`)."""
        rental = await self._chain.refresh_rental(rental_id)
        await self._check_rental(rental_id, rental, self._clock())
        return rental

    def _check_policy_and_time(self, report: TelemetryReport, now: float) -> None:
        if report.simulated and not self._policy.allow_simulated:
            raise Rejected(RejectReason.SIMULATED_REFUSED, "this oracle does not accept simulated telemetry")
        latest = now + self._policy.max_clock_skew_seconds
        if report.covered_until > latest:
            raise Rejected(
                RejectReason.PERIOD_IN_FUTURE,
                f"covered_until {report.covered_until} is after {int(latest)} (now plus the allowed clock skew)",
            )
        oldest = now - self._policy.max_report_age_seconds
        if report.covered_until < oldest:
            raise Rejected(
                RejectReason.PERIOD_TOO_OLD,
                f"covered_until {report.covered_until} is before {int(oldest)} (now minus the maximum report age)",
            )

    async def _check_rental(self, rental_id: int, rental: Rental, now: float) -> None:
        if rental.status == RentalStatus.NONE:
            raise Rejected(RejectReason.UNKNOWN_RENTAL, f"rental {rental_id} does not exist or was superseded")
        if not rental.is_live:
            raise Rejected(RejectReason.RENTAL_NOT_LIVE, f"rental {rental_id} is {rental.status.name}")
        if rental.status == RentalStatus.OPEN and now > rental.since + await self._chain.start_timeout():
            raise Rejected(
                RejectReason.RENTAL_START_TIMED_OUT, f"rental {rental_id} was never started within the start timeout"
            )


def check_continuity(report: TelemetryReport, previous: PreviousReport | None, rental: Rental) -> None:
    """Raises Rejected unless `report` follows the rental's previous report, directly or across a gap.

    `previous` is the latest report of the rental that this oracle holds (or that precedes it in a cosign batch).
    If the chain has applied a later report than that (this oracle missed some), the chain's applied totals are the
    ones to follow, without a telemetry root to check; the chain clamps coverage at the rental's end, so after the
    end any later start is accepted. The first report of a Running or Terminated rental starts at its start time
    `since`, with a zero `prev_root`. An Open rental is started by its first report and billed from its opening
    `since`; the agent begins measuring when it sees the rental, so its first period may start at or after `since`
    (the gap counts against the provider, never the renter).

    Reports are cumulative, so one that skips seqs this oracle never saw (it lost its state, or was down when they
    were sent) is checked against the last totals it knows (`check_follows`): a missing intermediate report is
    harmless, as it is on chain, where seqs only have to increase.
    """
    if rental.last_seq > (previous.seq if previous else 0):
        previous = PreviousReport(
            rental.last_seq, rental.covered_until, rental.delivered_seconds, rental.util_seconds, None
        )
        open_start = previous.covered_until >= rental.end
    elif previous is None:
        previous = PreviousReport(0, rental.since, 0, 0, ZERO_ROOT)
        open_start = rental.status == RentalStatus.OPEN
    else:
        open_start = False
    check_follows(report, previous, open_start=open_start)


def check_follows(report: TelemetryReport, previous: PreviousReport, *, open_start: bool = False) -> None:
    """Raises Rejected unless `report` may come after `previous` (a report, or totals this oracle knows).

    The next seq (`previous.seq + 1`) must start where `previous`'s coverage ended (at or after it with
    `open_start`) and chain on its telemetry root (when known). A later seq skips reports this oracle lacks; their
    chained roots cannot be checked across the gap, but the cumulative totals can: its coverage starts no earlier
    than `previous`'s ended. Either way a report's totals never go back, and what they add over `previous` fits
    the time it covers beyond `previous`: no more delivered seconds than that (only [period_start, covered_until)
    for the next seq), no more utilisation-weighted seconds than delivered ones.
    """
    if report.seq <= previous.seq:
        raise Rejected(
            RejectReason.SEQ_STALE,
            f"seq {report.seq} of rental {report.rental_id} is at or below the last accepted seq {previous.seq}",
        )
    across_gap = report.seq > previous.seq + 1
    if across_gap or open_start:
        start_ok = report.period_start >= previous.covered_until
    else:
        start_ok = report.period_start == previous.covered_until
    if not start_ok:
        raise Rejected(
            RejectReason.PERIOD_DISCONTINUOUS,
            f"period_start {report.period_start} of rental {report.rental_id} seq {report.seq} does not follow the "
            f"previous coverage (seq {previous.seq}), which ended at {previous.covered_until}",
        )
    if not across_gap and previous.telemetry_root is not None and report.prev_root != previous.telemetry_root:
        raise Rejected(
            RejectReason.PREV_ROOT_MISMATCH,
            f"prev_root of rental {report.rental_id} seq {report.seq} is not the telemetry root of seq {previous.seq}",
        )
    if report.delivered_seconds < previous.delivered_seconds or report.util_seconds < previous.util_seconds:
        raise Rejected(
            RejectReason.TOTALS_DECREASED,
            f"totals of rental {report.rental_id} seq {report.seq} ({report.delivered_seconds} delivered, "
            f"{report.util_seconds} utilisation-weighted seconds) are below those of seq {previous.seq} "
            f"({previous.delivered_seconds}, {previous.util_seconds})",
        )
    delivered = report.delivered_seconds - previous.delivered_seconds
    covered = report.covered_until - previous.covered_until if across_gap else report.period_seconds
    if delivered > covered:
        raise Rejected(
            RejectReason.DELIVERED_ABOVE_PERIOD,
            f"rental {report.rental_id} seq {report.seq} adds {delivered} delivered seconds over seq {previous.seq} "
            f"in {covered} s",
        )
    if report.util_seconds - previous.util_seconds > delivered:
        raise Rejected(
            RejectReason.UTIL_ABOVE_DELIVERED,
            f"rental {report.rental_id} seq {report.seq} adds {report.util_seconds - previous.util_seconds} "
            f"utilisation-weighted seconds over {delivered} delivered ones",
        )
