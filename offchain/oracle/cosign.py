"""k-of-n co-signing of report batches: the peer side (`Cosigner`) and the submitting oracle's client
(`collect_cosignatures`).

A peer signs a batch only if it would have accepted every report itself: a report it already holds counts, any
other must pass the same verification as `POST /v1/telemetry` and follow its predecessor (held, earlier in the
batch, or applied on chain). It refuses the whole batch at the first report it would not accept, naming it
(`index`), so that the submitting oracle can split that report off and have the rest co-signed; a report that
differs from the one held under its seq is kept as evidence of the agent's equivocation (`record_equivocation`).
Reports that pass are stored, as if their agent had posted them here, so this oracle's view of each rental keeps
up with what it signed. The signature is `offchain.protocol.reports.sign_batch` over the batch's on-chain reports
for the escrow's current oracle set version, which the submitting oracle must name.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Sequence

import aiohttp
from eth_utils import to_canonical_address, to_checksum_address
from pydantic import ValidationError

from offchain.chain.reads import Rental
from offchain.oracle.chainview import ChainView
from offchain.oracle.ingest import record_equivocation
from offchain.oracle.store import NewSubmission, PreviousReport, SubmissionKey, SubmissionStore, key_of
from offchain.oracle.verify import LAG_SENSITIVE_REASONS, Rejected, Verifier, check_continuity
from offchain.protocol.digest import TelemetryDomain, recover_address
from offchain.protocol.messages import (
    CosignRequest,
    CosignResponse,
    OracleError,
    RejectReason,
    TelemetryReport,
    TelemetrySubmission,
    chain_reports,
)
from offchain.protocol.reports import BatchSigner, EscrowDomain, batch_digest

COSIGN_PATH = "/v1/cosign"


@dataclass(frozen=True)
class Cosigner:
    """Signs batches of reports this oracle verified, with its own oracle key."""

    verifier: Verifier
    store: SubmissionStore
    chain: ChainView
    domain: TelemetryDomain
    signer: BatchSigner
    max_batch_reports: int

    @property
    def address(self) -> str:
        return self.signer.address

    async def cosign(self, request: CosignRequest) -> CosignResponse:
        """This oracle's signature over the batch, or Rejected (with the index of the refused submission)."""
        submissions = request.submissions
        if len(submissions) > self.max_batch_reports:
            raise Rejected(
                RejectReason.BATCH_TOO_LARGE, f"{len(submissions)} reports; a batch holds {self.max_batch_reports}"
            )
        oracle_set = await self.chain.oracle_set()
        if request.oracle_set_version != oracle_set.version:
            raise Rejected(
                RejectReason.ORACLE_SET_MISMATCH,
                f"batch names oracle set version {request.oracle_set_version}, the escrow's is {oracle_set.version}",
            )
        if self.address not in oracle_set.signers:
            raise Rejected(RejectReason.NOT_IN_ORACLE_SET, f"{self.address} is not in oracle set {oracle_set.version}")

        digests = [self.domain.digest(s.report) for s in submissions]
        rentals: dict[int, Rental] = {}  # by index, for the submissions not held
        for index, (submission, digest) in enumerate(zip(submissions, digests)):
            if self._holds(submission.report, digest):
                continue
            try:
                rentals[index] = await self.verifier.verify(submission, digest)
            except Rejected as exc:
                raise _at(index, exc) from exc

        refreshed: set[int] = set()
        while True:
            try:
                new = self._place(submissions, digests, rentals)
                break
            except Rejected as exc:
                failed_index = exc.index
                if failed_index is None:  # a refusal of the whole batch rather than of one submission
                    raise
                if exc.reason is RejectReason.SEQ_CONFLICT:
                    await record_equivocation(
                        self.store, self.verifier, submissions[failed_index], digests[failed_index]
                    )
                    raise
                rental_id = submissions[failed_index].report.rental_id
                if exc.reason not in LAG_SENSITIVE_REASONS or rental_id in refreshed:
                    raise
            # The cached rental may lag the chain: read it now and check the whole batch again.
            refreshed.add(rental_id)
            try:
                fresh = await self.verifier.refreshed_rental(rental_id)
            except Rejected as exc:
                raise _at(failed_index, exc) from exc
            for index in rentals:
                if submissions[index].report.rental_id == rental_id:
                    rentals[index] = fresh
        if new:
            self.store.add(new)

        signature = self.signer.sign(chain_reports(submissions), oracle_set.version)
        return CosignResponse(signer=self.address, signature=signature)

    def _place(
        self,
        submissions: Sequence[TelemetrySubmission],
        digests: Sequence[bytes],
        rentals: dict[int, Rental],
    ) -> list[NewSubmission]:
        """The submissions not yet held, each checked to follow its predecessor (held, earlier in the batch or on
        chain). Synchronous, so that no other request changes the store between these checks and the insert."""
        previous: dict[int, PreviousReport] = {}
        new: list[NewSubmission] = []
        for index, (submission, digest) in enumerate(zip(submissions, digests)):
            report = submission.report
            if not self._holds(report, digest):
                # Not held when first checked either (the store never drops a report), so `rentals` has its state.
                if self.store.held(key_of(submission)) is not None:
                    raise _at(index, Rejected(RejectReason.SEQ_CONFLICT, "a different report with this seq is held"))
                last = previous.get(report.rental_id) or self.store.last_accepted(report.rental_id)
                try:
                    check_continuity(report, last, rentals[index])
                except Rejected as exc:
                    raise _at(index, exc) from exc
                new.append(NewSubmission(submission, digest, submission.model_dump_json().encode()))
            previous[report.rental_id] = PreviousReport.of(report)
        return new

    def _holds(self, report: TelemetryReport, digest: bytes) -> bool:
        held = self.store.held(SubmissionKey(report.rental_id, report.seq))
        return held is not None and held.report_digest == digest


def _at(index: int, rejected: Rejected) -> Rejected:
    return Rejected(rejected.reason, f"submission {index}: {rejected.detail}", rejected.errors, index=index)


@dataclass(frozen=True)
class Cosignatures:
    """What a submitting oracle collected: signatures by oracle address, why each peer that gave none did not, and the
    refusals of the peers that answered with one (by peer)."""

    signatures: dict[str, bytes] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    refusals: dict[str, OracleError] = field(default_factory=dict)


async def collect_cosignatures(
    session: aiohttp.ClientSession,
    peers: Sequence[str],
    request: CosignRequest,
    domain: EscrowDomain,
    signers: Sequence[str],
    needed: int,
    timeout: float,
) -> Cosignatures:
    """Asks every peer (a base URL) to co-sign `request` at once; returns when `needed` valid signatures from
    distinct members of `signers` are in, or when every peer has answered, failed or run out of `timeout` seconds.

    A signature counts only if it recovers, over the batch digest for `domain`, to the oracle that claims it and that
    oracle is in `signers`; the requests still running when enough are in are cancelled.
    """
    digest = batch_digest(chain_reports(request.submissions), domain)
    members = {to_canonical_address(s) for s in signers}
    body = request.model_dump_json().encode()
    client_timeout = aiohttp.ClientTimeout(total=timeout)

    async def ask(peer: str) -> tuple[str, CosignResponse | OracleError | str]:
        """The peer's checked answer, its refusal, or why there is neither."""
        try:
            async with session.post(
                peer.rstrip("/") + COSIGN_PATH,
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=client_timeout,
            ) as response:
                payload = await response.read()
                status = response.status
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            return peer, f"{type(exc).__name__}: {exc}"
        if status != 200:
            try:
                return peer, OracleError.model_validate_json(payload)
            except ValidationError:
                return peer, f"HTTP {status}"
        try:
            answer = CosignResponse.model_validate_json(payload)
            signer = recover_address(digest, answer.signature)
            claimed = to_canonical_address(answer.signer)
        except ValueError as exc:  # a ValidationError, InvalidSignature or malformed address
            return peer, f"unusable answer: {exc}"
        if signer != claimed:
            return peer, f"the signature is not by the claimed signer {answer.signer}"
        if signer not in members:
            return peer, f"{answer.signer} is not in the oracle set"
        return peer, CosignResponse(signer=to_checksum_address(signer), signature=answer.signature)

    tasks = [asyncio.create_task(ask(peer)) for peer in peers]
    result = Cosignatures()
    try:
        for next_done in asyncio.as_completed(tasks):
            peer, outcome = await next_done
            if isinstance(outcome, OracleError):
                result.refusals[peer] = outcome
                result.failures[peer] = f"{outcome.error}: {outcome.detail}"
                continue
            if isinstance(outcome, str):
                result.failures[peer] = outcome
                continue
            result.signatures.setdefault(outcome.signer, outcome.signature)
            if len(result.signatures) >= needed:
                break
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return result
