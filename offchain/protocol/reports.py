"""Usage reports as the escrow verifies them: the EIP-712 `ReportBatch` that k of n oracles co-sign.

The typed-data definition mirrors `RentalEscrow.REPORT_TYPEHASH` / `BATCH_TYPEHASH`; the contract tests
check that the digest computed here equals `RentalEscrow.batchDigest` on chain.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, Sequence

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from offchain.protocol.eip712 import EIP712_DOMAIN_FIELDS, struct_fields

DOMAIN_NAME = "gpuex RentalEscrow"
DOMAIN_VERSION = "1"

#: `Report` as `RentalEscrow.REPORT_TYPEHASH` hashes it.
REPORT_TYPE = (
    "Report(uint256 rentalId,uint32 seq,uint40 coveredUntil,uint32 deliveredSeconds,uint32 utilSeconds,"
    "uint8 status,bytes32 telemetryRoot)"
)
#: `ReportBatch` as `RentalEscrow.BATCH_TYPEHASH` hashes it (followed by `REPORT_TYPE`, which it references).
BATCH_TYPE = "ReportBatch(uint64 oracleSetVersion,Report[] reports)"
REPORT_FIELDS = struct_fields(REPORT_TYPE)


class ReportStatus(IntEnum):
    """Job state carried by a report (`ReportStatus` in DataTypes.sol)."""

    RUNNING = 0
    COMPLETED = 1
    FAILED = 2


class Report(BaseModel):
    """One cumulative usage report for one rental: its totals from the start up to `covered_until`, with the
    bounds the escrow's field types allow. The escrow credits the difference from the last totals it applied, so
    only a rental's latest report ever needs to land; it skips (never reverts on) a report whose totals do not
    follow the applied ones."""

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_bytes="hex", val_json_bytes="hex")

    rental_id: int = Field(ge=1, lt=2**256)
    seq: int = Field(ge=1, lt=2**32)  # above the last applied seq; gaps are fine
    covered_until: int = Field(ge=0, lt=2**40)
    delivered_seconds: int = Field(ge=0, lt=2**32)  # total since the rental's start
    util_seconds: int = Field(ge=0, lt=2**32)  # total delivered seconds weighted by utilisation
    status: ReportStatus = ReportStatus.RUNNING
    telemetry_root: bytes = Field(default=b"\x00" * 32, min_length=32, max_length=32)

    def as_message(self) -> dict[str, Any]:
        """The report as an EIP-712 message struct."""
        return {
            "rentalId": self.rental_id,
            "seq": self.seq,
            "coveredUntil": self.covered_until,
            "deliveredSeconds": self.delivered_seconds,
            "utilSeconds": self.util_seconds,
            "status": int(self.status),
            "telemetryRoot": self.telemetry_root,
        }

    def as_tuple(self) -> tuple[Any, ...]:
        """The report as the ABI tuple `submitReports` takes."""
        return (
            self.rental_id,
            self.seq,
            self.covered_until,
            self.delivered_seconds,
            self.util_seconds,
            int(self.status),
            self.telemetry_root,
        )


class EscrowDomain(BaseModel):
    """Where a batch may be applied: the EIP-712 domain plus the oracle set version signed into the batch."""

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_bytes="hex", val_json_bytes="hex")

    chain_id: int = Field(ge=1)
    escrow: str
    oracle_set_version: int = Field(ge=1, lt=2**64)


class BatchSigner:
    """One oracle's key, signing report batches for one escrow; the oracle set version is given per batch."""

    def __init__(self, key: SecretStr, chain_id: int, escrow: str) -> None:
        self._key = key
        self.chain_id = chain_id
        self.escrow = escrow
        self.address: str = Account.from_key(key.get_secret_value()).address

    def domain(self, oracle_set_version: int) -> EscrowDomain:
        return EscrowDomain(chain_id=self.chain_id, escrow=self.escrow, oracle_set_version=oracle_set_version)

    def sign(self, reports: Sequence[Report], oracle_set_version: int) -> bytes:
        """This oracle's signature over the batch, as `RentalEscrow.submitReports` checks it."""
        return sign_batch(reports, self.domain(oracle_set_version), self._key.get_secret_value())


def compact_signature(signature: bytes) -> tuple[bytes, bytes]:
    """A 65-byte (r, s, v) signature as the EIP-2098 pair (r, yParityAndS) that `submitReports` takes."""
    if len(signature) != 65 or signature[64] not in (27, 28):
        raise ValueError("a signature is 65 bytes (r, s, v) with v 27 or 28")
    y_parity_and_s = int.from_bytes(signature[32:64], "big") | ((signature[64] - 27) << 255)
    return signature[:32], y_parity_and_s.to_bytes(32, "big")


def submit_args(reports: Sequence[Report], signatures: Sequence[bytes], oracle_set_version: int) -> list[Any]:
    """The arguments of `RentalEscrow.submitReports` for a batch the 65-byte `signatures` signed under
    `oracle_set_version`: the reports as ABI tuples, the version, and the signatures as compact pairs."""
    return [
        [r.as_tuple() for r in reports],
        oracle_set_version,
        [word for signature in signatures for word in compact_signature(signature)],
    ]


def rental_id(offer_id: int, nonce: int) -> int:
    """The escrow's id of the `nonce`-th rental of an offer."""
    return (offer_id << 32) | nonce


def split_rental_id(rental: int) -> tuple[int, int]:
    """(offer id, nonce) of a rental id."""
    return rental >> 32, rental & 0xFFFFFFFF


def typed_batch(reports: Sequence[Report], domain: EscrowDomain) -> dict[str, Any]:
    """The full EIP-712 typed-data document of a batch, as wallets and eth-account take it."""
    return {
        "types": {
            "EIP712Domain": EIP712_DOMAIN_FIELDS,
            "ReportBatch": struct_fields(BATCH_TYPE),
            "Report": REPORT_FIELDS,
        },
        "primaryType": "ReportBatch",
        "domain": {
            "name": DOMAIN_NAME,
            "version": DOMAIN_VERSION,
            "chainId": domain.chain_id,
            "verifyingContract": domain.escrow,
        },
        "message": {
            "oracleSetVersion": domain.oracle_set_version,
            "reports": [r.as_message() for r in reports],
        },
    }


def batch_digest(reports: Sequence[Report], domain: EscrowDomain) -> bytes:
    """The 32-byte digest the oracles sign (equals `RentalEscrow.batchDigest`)."""
    signable = encode_typed_data(full_message=typed_batch(reports, domain))
    return keccak(b"\x19" + signable.version + signable.header + signable.body)


def sign_batch(reports: Sequence[Report], domain: EscrowDomain, private_key: bytes | str) -> bytes:
    """One oracle's 65-byte signature (r, s, v) over a batch."""
    signed = Account.sign_typed_data(private_key, full_message=typed_batch(reports, domain))
    return bytes(signed.signature)
