"""Messages between provider agents and oracles, as pydantic models with their EIP-712 signatures.

An agent signs each `TelemetryReport` with its key (the provider's `agentOf` in the registry); the domain binds
the chain and the registry, so a report cannot be replayed against another deployment. An oracle that
accepts it turns it into the on-chain `Report` that k of n oracles co-sign (`offchain.protocol.reports`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Sequence

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak, to_checksum_address
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from offchain.protocol.eip712 import EIP712_DOMAIN_FIELDS, struct_fields
from offchain.protocol.gpustats import GPU_SUMMARY_FIELDS, GpuPeriodStats, GpuSummary, gpus_hash
from offchain.protocol.reports import Report, ReportStatus

AGENT_DOMAIN_NAME = "gpuex Agent Telemetry"
AGENT_DOMAIN_VERSION = "1"

Bytes32 = bytes

#: The EIP-712 struct an agent signs (the oracle's fast digest in `offchain.protocol.digest` hashes this type).
TELEMETRY_REPORT_TYPE = (
    "TelemetryReport(uint256 rentalId,uint32 seq,uint40 periodStart,uint40 coveredUntil,"
    "uint32 deliveredSeconds,uint32 utilSeconds,uint32 peakMemMiB,uint32 sampleCount,"
    "bytes32[] gpuUuidHashes,bytes32 prevRoot,bytes32 samplesRoot,uint8 status,int16 exitCode,"
    "bytes32 resultDigest,bool simulated)"
)
TELEMETRY_REPORT_FIELDS = struct_fields(TELEMETRY_REPORT_TYPE)


def agent_domain(chain_id: int, registry: str) -> dict[str, Any]:
    """The EIP-712 domain of everything an agent signs on one deployment."""
    return {
        "name": AGENT_DOMAIN_NAME,
        "version": AGENT_DOMAIN_VERSION,
        "chainId": chain_id,
        "verifyingContract": to_checksum_address(registry),
    }


def gpu_uuid_hash(uuid: str) -> bytes:
    """The hash a GPU is registered under on chain: keccak256 of its NVML UUID string (e.g. `GPU-5f2e...`)."""
    return keccak(text=uuid)


#: The fields a telemetry report shares with the on-chain report it becomes (`telemetry_root` is derived).
_REPORT_FIELDS = set(Report.model_fields) - {"telemetry_root"}
ZERO_ROOT = b"\x00" * 32


def chain_root(prev_root: bytes, samples_root: bytes) -> bytes:
    """The telemetry root of a report: its period's samples root chained to the previous report's root, so the
    latest root commits to every sample of the rental so far."""
    return keccak(prev_root + samples_root)


class TelemetryReport(BaseModel):
    """One report of one rental, measured on the provider machine: the rental's cumulative totals up to
    `covered_until`, and what its latest period [period_start, covered_until) added.

    Seq 1 starts at the rental's start; each later report's period starts where the previous one's coverage
    ended, its totals are at least the previous ones, and its `prev_root` is the previous report's
    `telemetry_root`. The on-chain report carries the totals, so any report but the latest may stay off chain.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_bytes="hex", val_json_bytes="hex")

    rental_id: int = Field(ge=1, lt=2**256)
    seq: int = Field(ge=1, lt=2**32)
    period_start: int = Field(ge=0, lt=2**40)  # where this report's samples start: the previous coverage end
    covered_until: int = Field(ge=0, lt=2**40)  # the totals cover the rental from its start to here
    delivered_seconds: int = Field(ge=0, lt=2**32)  # total since the rental's start
    util_seconds: int = Field(ge=0, lt=2**32)  # total delivered seconds weighted by utilisation, rounded down
    peak_mem_mib: int = Field(ge=0, lt=2**32)  # in this report's period
    sample_count: int = Field(ge=0, lt=2**32)  # in this report's period
    gpu_uuids: tuple[str, ...] = Field(min_length=1, max_length=64)
    prev_root: bytes = Field(default=ZERO_ROOT, min_length=32, max_length=32)  # zero for seq 1
    samples_root: bytes = Field(min_length=32, max_length=32)  # Merkle root of this period's samples
    status: ReportStatus = ReportStatus.RUNNING
    exit_code: int = Field(default=0, ge=-(2**15), lt=2**15)
    result_digest: bytes = Field(default=b"\x00" * 32, min_length=32, max_length=32)
    simulated: bool = False

    @field_validator("gpu_uuids")
    @classmethod
    def _distinct(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("GPU UUIDs must be distinct")
        return value

    @model_validator(mode="after")
    def _period(self) -> "TelemetryReport":
        if self.covered_until <= self.period_start:
            raise ValueError("covered_until must be after period_start")
        if self.util_seconds > self.delivered_seconds:
            raise ValueError("util_seconds exceeds delivered_seconds (utilisation above 100 %)")
        return self

    @property
    def telemetry_root(self) -> bytes:
        """The root the on-chain report carries: this period's samples chained to every earlier report's."""
        return chain_root(self.prev_root, self.samples_root)

    @property
    def period_seconds(self) -> int:
        return self.covered_until - self.period_start

    def to_chain_report(self) -> Report:
        """The on-chain report the oracles co-sign for these totals."""
        return Report(**self.model_dump(include=_REPORT_FIELDS), telemetry_root=self.telemetry_root)

    def typed_data(self, chain_id: int, registry: str) -> dict[str, Any]:
        """The EIP-712 document the agent signs."""
        return {
            "types": {
                "EIP712Domain": EIP712_DOMAIN_FIELDS,
                "TelemetryReport": TELEMETRY_REPORT_FIELDS,
            },
            "primaryType": "TelemetryReport",
            "domain": agent_domain(chain_id, registry),
            "message": {
                "rentalId": self.rental_id,
                "seq": self.seq,
                "periodStart": self.period_start,
                "coveredUntil": self.covered_until,
                "deliveredSeconds": self.delivered_seconds,
                "utilSeconds": self.util_seconds,
                "peakMemMiB": self.peak_mem_mib,
                "sampleCount": self.sample_count,
                "gpuUuidHashes": [gpu_uuid_hash(u) for u in self.gpu_uuids],
                "prevRoot": self.prev_root,
                "samplesRoot": self.samples_root,
                "status": int(self.status),
                "exitCode": self.exit_code,
                "resultDigest": self.result_digest,
                "simulated": self.simulated,
            },
        }

    def sign(self, private_key: bytes | str, chain_id: int, registry: str) -> bytes:
        """The agent's 65-byte signature."""
        return bytes(Account.sign_typed_data(private_key, full_message=self.typed_data(chain_id, registry)).signature)

    def signer(self, signature: bytes, chain_id: int, registry: str) -> str:
        """The address that produced `signature` over this report (raises on a malformed signature)."""
        signable = encode_typed_data(full_message=self.typed_data(chain_id, registry))
        return str(Account.recover_message(signable, signature=signature))


def gpu_summary_typed_data(
    report: TelemetryReport, report_digest: bytes, gpus: tuple[GpuPeriodStats, ...], chain_id: int, registry: str
) -> dict[str, Any]:
    """The EIP-712 document an agent signs over a report's per-GPU figures (`offchain.protocol.gpustats`): the
    report's rental and seq, its digest (`TelemetryDomain.digest`) and the figures' hash, in the reports' domain."""
    return {
        "types": {"EIP712Domain": EIP712_DOMAIN_FIELDS, "GpuPeriodSummary": GPU_SUMMARY_FIELDS},
        "primaryType": "GpuPeriodSummary",
        "domain": agent_domain(chain_id, registry),
        "message": {
            "rentalId": report.rental_id,
            "seq": report.seq,
            "reportDigest": report_digest,
            "gpusHash": gpus_hash(gpus),
        },
    }


def sign_gpu_summary(
    private_key: bytes | str,
    report: TelemetryReport,
    report_digest: bytes,
    gpus: tuple[GpuPeriodStats, ...],
    chain_id: int,
    registry: str,
) -> GpuSummary:
    """`gpus`, the per-GPU figures of `report`'s period, signed with the agent's key."""
    document = gpu_summary_typed_data(report, report_digest, gpus, chain_id, registry)
    return GpuSummary(gpus=gpus, signature=bytes(Account.sign_typed_data(private_key, full_message=document).signature))


class TelemetrySubmission(BaseModel):
    """The body of `POST /v1/telemetry`: a report and its agent signature, hex-encoded, and optionally the period's
    per-GPU figures signed by the same agent (`gpu_summary`; left out of the JSON when there is none, so a
    submission without one reads as it did before summaries existed)."""

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_bytes="hex", val_json_bytes="hex")

    report: TelemetryReport
    signature: bytes = Field(min_length=65, max_length=65)
    gpu_summary: GpuSummary | None = None

    @model_validator(mode="after")
    def _summary_of_the_reports_gpus(self) -> "TelemetrySubmission":
        if self.gpu_summary is not None:
            strangers = {g.uuid for g in self.gpu_summary.gpus} - set(self.report.gpu_uuids)
            if strangers:
                raise ValueError(f"gpu_summary names {len(strangers)} GPU(s) the report does not")
        return self

    @model_serializer(mode="wrap")
    def _without_absent_summary(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        fields: dict[str, Any] = handler(self)
        if fields.get("gpu_summary", True) is None:
            del fields["gpu_summary"]
        return fields


class CosignRequest(BaseModel):
    """The body of `POST /v1/cosign`: a submitting oracle asks a peer to sign a batch of on-chain reports that each
    carry the agent submission it came from, so the peer can verify every report itself."""

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_bytes="hex", val_json_bytes="hex")

    oracle_set_version: int = Field(ge=1)
    submissions: tuple[TelemetrySubmission, ...] = Field(min_length=1)


class CosignResponse(BaseModel):
    """A peer's signature over the batch digest, or why it refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_bytes="hex", val_json_bytes="hex")

    signer: str
    signature: bytes = Field(min_length=65, max_length=65)


class TelemetryAck(BaseModel):
    """An oracle's answer to a report it holds: 202 when it newly accepted it, 200 with `duplicate` when it already
    held this exact report, so an agent's retry is always safe.

    `missing_from_seq` is set when the oracle accepted the report across a gap (reports are cumulative, so it can):
    it lacks the rental's reports from that seq up to this one, and the agent sends again those it still has.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    accepted: bool = True
    rental_id: int
    seq: int
    duplicate: bool = False
    missing_from_seq: int | None = Field(default=None, ge=1)


class HeldReports(BaseModel):
    """The body of `GET /v1/reports`: agent-signed submissions an oracle holds, in the order it accepted them, and
    the cursor of the next page (`after`), None on the last page."""

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_bytes="hex", val_json_bytes="hex")

    submissions: tuple[TelemetrySubmission, ...]
    next_after: int | None = None


class RejectReason(StrEnum):
    """Machine-readable reason codes of an oracle's refusals (`OracleError.error`).

    `chain_unavailable` (503) is the oracle's own trouble: retry later. `seq_gap` (no longer sent: an oracle takes a
    cumulative report across a gap) meant an earlier report is missing. Every other reason is final for that body.
    """

    INVALID_BODY = "invalid_body"  # not JSON, or not the model: see `errors`
    INVALID_QUERY = "invalid_query"  # a query parameter that is not what the endpoint takes
    BODY_TOO_LARGE = "body_too_large"
    SIMULATED_REFUSED = "simulated_refused"  # simulated telemetry and the oracle does not allow it
    PERIOD_IN_FUTURE = "period_in_future"  # covered_until beyond the oracle's clock plus the allowed skew
    PERIOD_TOO_OLD = "period_too_old"  # covered_until older than the oracle accepts
    BAD_SIGNATURE = "bad_signature"  # not a canonical (low-s, v 27/28) recoverable signature
    UNKNOWN_RENTAL = "unknown_rental"
    RENTAL_NOT_LIVE = "rental_not_live"  # the rental is in a final state
    RENTAL_START_TIMED_OUT = "rental_start_timed_out"  # never started and past the start timeout
    AGENT_NOT_SET = "agent_not_set"  # the offer's provider has no agent key
    SIGNER_NOT_AGENT = "signer_not_agent"  # signed by a key other than the provider's agentOf
    GPU_SUMMARY_SIGNER = "gpu_summary_signer"  # the per-GPU figures are not signed by the key that signed the report
    GPU_MISMATCH = "gpu_mismatch"  # the GPU UUIDs are not exactly the offer's registered GPUs
    SEQ_CONFLICT = "seq_conflict"  # a different report with this rental and seq is already accepted
    SEQ_STALE = "seq_stale"  # seq at or below the last accepted (or settled) one, and not held here
    SEQ_GAP = "seq_gap"  # seq beyond the next expected one (from oracles before reports were taken across gaps)
    PERIOD_DISCONTINUOUS = "period_discontinuous"  # period_start is not where the previous coverage ended
    PREV_ROOT_MISMATCH = "prev_root_mismatch"  # prev_root is not the previous report's telemetry root
    TOTALS_DECREASED = "totals_decreased"  # delivered or utilisation-weighted seconds below the previous totals
    DELIVERED_ABOVE_PERIOD = "delivered_above_period"  # delivered seconds grew by more than the period holds
    UTIL_ABOVE_DELIVERED = "util_above_delivered"  # utilisation-weighted seconds grew by more than delivered ones
    CHAIN_UNAVAILABLE = "chain_unavailable"
    BATCH_TOO_LARGE = "batch_too_large"  # cosign: more reports than a batch may hold
    ORACLE_SET_MISMATCH = "oracle_set_mismatch"  # cosign: not the escrow's current oracle set version
    NOT_IN_ORACLE_SET = "not_in_oracle_set"  # cosign: this oracle's key is not in the current set


class ValidationIssue(BaseModel):
    """One pydantic validation error of a refused body, without the offending input."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    loc: tuple[str | int, ...]
    type: str
    msg: str


class OracleError(BaseModel):
    """The body of every oracle refusal. `index` names the submission of a cosign batch that was refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    error: RejectReason
    detail: str
    errors: tuple[ValidationIssue, ...] = ()
    index: int | None = None


def chain_reports(submissions: Sequence[TelemetrySubmission]) -> list[Report]:
    """The on-chain reports of a batch, in submission order."""
    return [s.report.to_chain_report() for s in submissions]
