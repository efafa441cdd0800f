"""The EIP-712 digest of an agent's `TelemetryReport` and its signer, computed fast enough for ingest.

eth-account's `encode_typed_data` re-parses the type definitions for every message, which alone caps an oracle
near 2,000 verifications a second. The domain separator and type hash never change for a deployment, so they
are hashed once here and each report costs two small keccaks plus a coincurve (libsecp256k1) recovery. A test
keeps this digest equal to eth-account's for the same report.
"""

from __future__ import annotations

from functools import lru_cache

from coincurve import PublicKey
from eth_utils import to_canonical_address

from offchain.protocol.eip712 import DOMAIN_TYPE
from offchain.protocol.gpustats import GPU_SUMMARY_TYPE, GpuSummary, canonical_bytes
from offchain.protocol.messages import (
    AGENT_DOMAIN_NAME,
    AGENT_DOMAIN_VERSION,
    TELEMETRY_REPORT_TYPE,
    TelemetryReport,
    gpu_uuid_hash,
)

try:
    # safe-pysha3 (installed with eth-brownie) hashes about six times faster than eth-hash's default pycryptodome.
    from eth_hash.backends.pysha3 import keccak256 as keccak
except ImportError:
    from eth_utils import keccak  # type: ignore[assignment]  # keyword-only extras; called with bytes alone here

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_HALF_N = SECP256K1_N // 2

DOMAIN_TYPEHASH = keccak(DOMAIN_TYPE.encode())
TELEMETRY_REPORT_TYPEHASH = keccak(TELEMETRY_REPORT_TYPE.encode())
GPU_SUMMARY_TYPEHASH = keccak(GPU_SUMMARY_TYPE.encode())


# A rental's GPUs appear in every one of its reports. NVML UUIDs are 40 characters; longer strings (only ever
# in bad reports) bypass the cache so it cannot be made to hold large ones.
_cached_uuid_hash = lru_cache(maxsize=65_536)(gpu_uuid_hash)
_CACHED_UUID_MAX_CHARS = 80


def report_gpu_hashes(report: TelemetryReport) -> tuple[bytes, ...]:
    """`gpu_uuid_hash` of each of the report's GPU UUIDs, in order."""
    return tuple(
        _cached_uuid_hash(uuid) if len(uuid) <= _CACHED_UUID_MAX_CHARS else gpu_uuid_hash(uuid)
        for uuid in report.gpu_uuids
    )


class InvalidSignature(ValueError):
    """Not a canonical 65-byte secp256k1 signature (r, s, v) that recovers to a key."""


def _word(value: int) -> bytes:
    """An unsigned integer as one 32-byte ABI word."""
    return value.to_bytes(32, "big")


def report_struct_hash(report: TelemetryReport) -> bytes:
    """`hashStruct(TelemetryReport)`: fields encoded in `TELEMETRY_REPORT_TYPE` order."""
    return keccak(
        b"".join(
            (
                TELEMETRY_REPORT_TYPEHASH,
                report.rental_id.to_bytes(32, "big"),
                report.seq.to_bytes(32, "big"),
                report.period_start.to_bytes(32, "big"),
                report.covered_until.to_bytes(32, "big"),
                report.delivered_seconds.to_bytes(32, "big"),
                report.util_seconds.to_bytes(32, "big"),
                report.peak_mem_mib.to_bytes(32, "big"),
                report.sample_count.to_bytes(32, "big"),
                keccak(b"".join(report_gpu_hashes(report))),
                report.prev_root,
                report.samples_root,
                int(report.status).to_bytes(32, "big"),
                report.exit_code.to_bytes(32, "big", signed=True),
                report.result_digest,
                int(report.simulated).to_bytes(32, "big"),
            )
        )
    )


class TelemetryDomain:
    """The agents' EIP-712 domain on one deployment (chain id and registry), hashed once."""

    def __init__(self, chain_id: int, registry: str) -> None:
        self.separator = keccak(
            DOMAIN_TYPEHASH
            + keccak(AGENT_DOMAIN_NAME.encode())
            + keccak(AGENT_DOMAIN_VERSION.encode())
            + _word(chain_id)
            + _word(int.from_bytes(to_canonical_address(registry), "big"))
        )
        self._prefix = b"\x19\x01" + self.separator

    def digest(self, report: TelemetryReport) -> bytes:
        """The 32-byte digest the agent signs for `report`."""
        return keccak(self._prefix + report_struct_hash(report))

    def gpu_summary_digest(self, report: TelemetryReport, report_digest: bytes, summary: GpuSummary) -> bytes:
        """The 32-byte digest the agent signs for `summary`, the per-GPU figures of `report` (whose digest is
        `report_digest`): `offchain.protocol.messages.gpu_summary_typed_data`, hashed."""
        struct_hash = keccak(
            GPU_SUMMARY_TYPEHASH
            + _word(report.rental_id)
            + _word(report.seq)
            + report_digest
            + keccak(canonical_bytes(summary.gpus))
        )
        return keccak(self._prefix + struct_hash)


def recover_address(digest: bytes, signature: bytes) -> bytes:
    """The 20-byte address whose key signed `digest`.

    Accepts only what OpenZeppelin's ECDSA accepts: 65 bytes, v of 27 or 28, 0 < r < n and 0 < s <= n/2, so a
    signature has exactly one valid encoding.
    """
    if len(signature) != 65:
        raise InvalidSignature("a signature is 65 bytes")
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    v = signature[64]
    if v not in (27, 28):
        raise InvalidSignature(f"v must be 27 or 28, got {v}")
    if not 0 < r < SECP256K1_N or not 0 < s <= _HALF_N:
        raise InvalidSignature("r or s out of range (s must be in the lower half)")
    try:
        public_key = PublicKey.from_signature_and_message(signature[:64] + bytes((v - 27,)), digest, hasher=None)
    except ValueError as exc:
        raise InvalidSignature(f"signature does not recover: {exc}") from exc
    return keccak(public_key.format(compressed=False)[1:])[12:]
