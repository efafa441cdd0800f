"""Per-GPU figures of one report period, signed by the agent next to its report: what the oracles show live between
on-chain checkpoints (utilisation, memory, power and temperature of each GPU).

The figures travel in the report's `TelemetrySubmission` as an optional `GpuSummary`; the report's own EIP-712
struct (and so its signature and the on-chain report) does not change, and a submission without one stays valid.
The agent signs `GpuPeriodSummary(rentalId, seq, reportDigest, gpusHash)` in the same domain as its reports (chain
and registry): `reportDigest` is the report's EIP-712 digest and `gpusHash` the keccak256 of the figures'
canonical bytes, so a summary belongs to exactly one report and nobody without the agent's key can change it or
move it to another rental, seq or deployment. Every figure is an integer (utilisation in basis points, power in
milliwatts), so any language reproduces the canonical bytes exactly.
"""

from __future__ import annotations

import json
from typing import NamedTuple

from eth_utils import keccak
from pydantic import BaseModel, ConfigDict, Field, field_validator

from offchain.protocol.eip712 import struct_fields

#: The most GPUs a summary holds: a report's bound (`TelemetryReport.gpu_uuids`).
MAX_SUMMARY_GPUS = 64
#: NVML UUIDs are 40 characters; anything much longer is not one.
MAX_UUID_CHARS = 96
#: The EIP-712 struct the agent signs over a report's per-GPU figures (in the agents' domain).
GPU_SUMMARY_TYPE = "GpuPeriodSummary(uint256 rentalId,uint32 seq,bytes32 reportDigest,bytes32 gpusHash)"
GPU_SUMMARY_FIELDS = struct_fields(GPU_SUMMARY_TYPE)
_UINT32 = 2**32


class GpuPeriodStats(BaseModel):
    """One GPU over one report period: its sample count, and figures from its healthy samples (reachable, every
    reading plausible); a figure is None when no such sample carried that reading."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    uuid: str = Field(min_length=1, max_length=MAX_UUID_CHARS, pattern=r"^[\x21-\x7e]+$")  # printable ASCII
    samples: int = Field(ge=0, lt=_UINT32)  # every sample of the GPU in the period, healthy or not
    util_bps: int | None = Field(default=None, ge=0, le=10_000)  # mean GPU utilisation, in basis points
    mem_used_mib: int | None = Field(default=None, ge=0, lt=_UINT32)  # peak
    mem_total_mib: int | None = Field(default=None, ge=0, lt=_UINT32)
    power_mw: int | None = Field(default=None, ge=0, lt=_UINT32)  # mean, in milliwatts
    temp_c: int | None = Field(default=None, ge=-(2**15), lt=2**15)  # highest


def canonical_bytes(gpus: tuple[GpuPeriodStats, ...]) -> bytes:
    """The bytes `gpusHash` hashes: the GPUs in order, each an object of its fields, as Python's
    `json.dumps(list, sort_keys=True, separators=(",", ":"))` writes them (integers, ASCII strings and null only)."""
    return json.dumps([g.model_dump() for g in gpus], sort_keys=True, separators=(",", ":")).encode("ascii")


def gpus_hash(gpus: tuple[GpuPeriodStats, ...]) -> bytes:
    return keccak(canonical_bytes(gpus))


class GpuSummary(BaseModel):
    """A report's per-GPU figures and the agent's signature over them (`GPU_SUMMARY_TYPE`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_bytes="hex", val_json_bytes="hex")

    gpus: tuple[GpuPeriodStats, ...] = Field(min_length=1, max_length=MAX_SUMMARY_GPUS)
    signature: bytes = Field(min_length=65, max_length=65)

    @field_validator("gpus")
    @classmethod
    def _distinct(cls, value: tuple[GpuPeriodStats, ...]) -> tuple[GpuPeriodStats, ...]:
        if len({g.uuid for g in value}) != len(value):
            raise ValueError("GPU UUIDs must be distinct")
        return value


class GpuPeriod(NamedTuple):
    """A report period's per-GPU figures as an oracle keeps them."""

    seq: int
    period_start: int
    covered_until: int
    gpus: tuple[GpuPeriodStats, ...]
