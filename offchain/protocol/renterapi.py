"""The renter API between a renter (the `gpuex` CLI, the web page) and the agent of the provider it rents from:
its paths, its wire models, how every request is signed, and how secret environment values are sealed.

The provider publishes its agent's base URL on chain (`ProviderRegistry.agentUrlOf`). Under it:

- `GET  /v1/agent`: who answers (no signature needed): the agent's address and public key, chain and escrow,
  how it isolates jobs. A client checks that the address is the provider's registered agent key and that the
  public key is that address's before it seals a secret to it.
- `PUT  /v1/rentals/{id}/spec`: the job spec (`SpecUpload`), whose keccak256 must be the rental's `jobSpecHash`,
  with its secret values sealed to the agent's key.
- `GET  /v1/rentals/{id}/status`: the job's container, GPUs, image, exit code and, on failure, the reason.
- `GET  /v1/rentals/{id}/logs?offset=N&follow=1`: the job's stdout and stderr from a byte offset of its log, as
  NDJSON `LogEntry` lines, following while the job runs; a last `LogEnd` line when the job has ended.
- `GET  /v1/rentals/{id}/results`: the job's output directory as a tar stream; its keccak256 is the completion
  report's result digest (also in the `Gpuex-Result-Digest` header).
- `GET  /v1/rentals/{id}/shell`: a websocket to an interactive shell in the running container (binary frames are
  terminal bytes both ways; a text frame `{"resize": [rows, cols]}` resizes the terminal).

Every rental request carries an EIP-712 signature of the rental's renter (`RenterRequest`: rental id, action,
expiry, nonce and the keccak256 of the request body) in the headers `Gpuex-Expiry`, `Gpuex-Nonce` and
`Gpuex-Signature`. The domain binds the chain and the escrow, so a request signed for one deployment is worthless
at another; the nonce is accepted once; the expiry is at most `MAX_VALIDITY_SECONDS` ahead. Errors answer
`ApiError` (`{"error": code, "detail": text}`) with a 4xx status.
"""

from __future__ import annotations

import secrets
import time
from enum import StrEnum
from typing import Any, Literal, Mapping

import ecies
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_keys import keys
from eth_utils import keccak, to_checksum_address
from pydantic import BaseModel, ConfigDict, Field

from offchain.protocol.eip712 import EIP712_DOMAIN_FIELDS, struct_fields

API_DOMAIN_NAME = "gpuex Renter API"
API_DOMAIN_VERSION = "1"
MAX_VALIDITY_SECONDS = 300
DEFAULT_VALIDITY_SECONDS = 60
EXPIRY_HEADER = "Gpuex-Expiry"
NONCE_HEADER = "Gpuex-Nonce"
SIGNATURE_HEADER = "Gpuex-Signature"
RESULT_DIGEST_HEADER = "Gpuex-Result-Digest"
ZERO_HASH = b"\x00" * 32
RENTER_REQUEST_FIELDS = struct_fields(
    "RenterRequest(uint256 rentalId,string action,uint64 expiry,bytes32 nonce,bytes32 bodyHash)"
)


class Action(StrEnum):
    """What a signed request may do; the path says it too, and a signature for one action is not one for another."""

    SPEC = "spec"
    STATUS = "status"
    LOGS = "logs"
    RESULTS = "results"
    SHELL = "shell"


class ApiErrorCode(StrEnum):
    UNSIGNED = "unsigned"  # 401: a signature header is missing or malformed
    EXPIRED = "expired"  # 401: the expiry has passed, or is too far ahead
    BAD_SIGNATURE = "bad_signature"  # 401: no signer can be recovered
    REPLAYED = "replayed"  # 401: the nonce was used before
    NOT_RENTER = "not_renter"  # 403: the signer is not the rental's renter
    UNKNOWN_RENTAL = "unknown_rental"  # 404: no rental of this agent's provider has this id
    INVALID_BODY = "invalid_body"  # 400/413/422: the body is not what the action takes
    SPEC_HASH_MISMATCH = "spec_hash_mismatch"  # 422: the spec does not hash to the rental's jobSpecHash
    SECRETS_MISMATCH = "secrets_mismatch"  # 422: the sealed values are not the spec's secret names, or not sealed to us
    NOT_NOW = "not_now"  # 409: the rental is not in a state for this (no results yet, no running container, ...)
    NO_RESULTS = "no_results"  # 404: the job ended without leaving an output folder
    UNSUPPORTED = "unsupported"  # 501: this agent cannot do it (e.g. logs of bare processes)


class ApiError(BaseModel):
    model_config = ConfigDict(extra="forbid")

    error: ApiErrorCode
    detail: str


class ClockStatus(BaseModel):
    """The agent's view of the chain's clock (`offchain.agent.chainclock`): it stamps samples and report periods on
    the chain's time, this machine's clock plus the offset measured from blocks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    synchronised: bool = Field(description="whether the offset has been measured from a block")
    offset_seconds: float = Field(description="chain time minus the machine's clock (0 until measured)")
    max_skew_seconds: float = Field(description="how far the offset may be before the agent declines rentals")
    skewed: bool = Field(description="whether the offset is beyond max_skew_seconds")


class AgentInfo(BaseModel):
    """`GET /v1/agent`."""

    model_config = ConfigDict(extra="forbid")

    address: str
    public_key: str  # 0x + 64 bytes, uncompressed without the 0x04 prefix
    chain_id: int
    escrow: str
    isolation: str  # container | bare-process
    engine: str | None
    clock: ClockStatus | None = None  # None from an agent that does not say


class SpecUpload(BaseModel):
    """`PUT /v1/rentals/{id}/spec`: the spec as JSON (any key order; it is hashed in canonical form) and the
    values of its `secret_env` names, each sealed to the agent's public key (`seal`), hex."""

    model_config = ConfigDict(extra="forbid")

    spec: dict[str, Any]
    secrets: dict[str, str] = {}


class ContainerView(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    state: str  # running | exited | created | gone
    started_at: float | None = None
    finished_at: float | None = None


class JobStatus(BaseModel):
    """`GET /v1/rentals/{id}/status`."""

    model_config = ConfigDict(extra="forbid")

    rental_id: int
    phase: str  # opened | running | done
    isolation: str | None  # container | bare-process, once launched
    spec_received: bool
    image: str | None
    gpus: tuple[str, ...]
    container: ContainerView | None
    exit_code: int | None
    reason: str | None  # why the job failed or was stopped, in words
    result_digest: str | None  # 0x..., once the job ended
    results_available: bool
    decline_reason: str | None
    decline_detail: str | None
    outcome: str | None


class LogEntry(BaseModel):
    """One chunk of the job's output; `offset` is where the next read starts (after this chunk)."""

    model_config = ConfigDict(extra="forbid")

    offset: int
    stream: Literal["stdout", "stderr"]
    time: str
    data: str  # UTF-8, invalid bytes replaced


class LogEnd(BaseModel):
    """The last line of a followed log: the job has ended and everything it wrote was sent."""

    model_config = ConfigDict(extra="forbid")

    end: Literal[True] = True
    offset: int
    exit_code: int | None
    reason: str | None


def domain(chain_id: int, escrow: str) -> dict[str, Any]:
    return {
        "name": API_DOMAIN_NAME,
        "version": API_DOMAIN_VERSION,
        "chainId": chain_id,
        "verifyingContract": to_checksum_address(escrow),
    }


def _typed_data(
    chain_id: int, escrow: str, rental_id: int, action: str, expiry: int, nonce: bytes, body_hash: bytes
) -> dict[str, Any]:
    return {
        "types": {"EIP712Domain": EIP712_DOMAIN_FIELDS, "RenterRequest": RENTER_REQUEST_FIELDS},
        "primaryType": "RenterRequest",
        "domain": domain(chain_id, escrow),
        "message": {"rentalId": rental_id, "action": action, "expiry": expiry, "nonce": nonce, "bodyHash": body_hash},
    }


def body_hash(body: bytes) -> bytes:
    """What a request signs of its body: keccak256 of it, or zero bytes32 for none."""
    return keccak(body) if body else ZERO_HASH


def sign_request(
    key: str | bytes,
    chain_id: int,
    escrow: str,
    rental_id: int,
    action: Action,
    body: bytes = b"",
    validity_seconds: int = DEFAULT_VALIDITY_SECONDS,
    now: float | None = None,
) -> dict[str, str]:
    """The headers that authenticate one request of `key`'s owner (the renter)."""
    expiry = int(now if now is not None else time.time()) + validity_seconds
    nonce = secrets.token_bytes(32)
    signable = encode_typed_data(
        full_message=_typed_data(chain_id, escrow, rental_id, str(action), expiry, nonce, body_hash(body))
    )
    signature = Account.sign_message(signable, key).signature
    return {EXPIRY_HEADER: str(expiry), NONCE_HEADER: "0x" + nonce.hex(), SIGNATURE_HEADER: "0x" + signature.hex()}


class RequestRefused(Exception):
    """A request's signature does not hold; `code` and `detail` say why."""

    def __init__(self, code: ApiErrorCode, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def recover_signer(
    headers: Mapping[str, str],
    chain_id: int,
    escrow: str,
    rental_id: int,
    action: Action,
    body: bytes = b"",
    now: float | None = None,
) -> tuple[str, bytes, int]:
    """(signer, nonce, expiry) of a signed request; raises `RequestRefused` when the headers are missing or
    malformed, expired or too far ahead, or no signer can be recovered. The caller checks that the signer is the
    renter and that the nonce is new."""
    try:
        expiry = int(headers[EXPIRY_HEADER])
        nonce = bytes.fromhex(headers[NONCE_HEADER].removeprefix("0x"))
        signature = bytes.fromhex(headers[SIGNATURE_HEADER].removeprefix("0x"))
    except (KeyError, ValueError) as exc:
        raise RequestRefused(
            ApiErrorCode.UNSIGNED,
            f"sign the request: headers {EXPIRY_HEADER}, {NONCE_HEADER} and {SIGNATURE_HEADER} (EIP-712 RenterRequest)",
        ) from exc
    if len(nonce) != 32 or len(signature) != 65:
        raise RequestRefused(ApiErrorCode.UNSIGNED, "the nonce is 32 bytes and the signature 65, in hex")
    current = now if now is not None else time.time()
    if expiry < current:
        raise RequestRefused(ApiErrorCode.EXPIRED, f"the request expired at {expiry}")
    if expiry > current + MAX_VALIDITY_SECONDS:
        raise RequestRefused(ApiErrorCode.EXPIRED, f"the expiry is more than {MAX_VALIDITY_SECONDS} s ahead")
    signable = encode_typed_data(
        full_message=_typed_data(chain_id, escrow, rental_id, str(action), expiry, nonce, body_hash(body))
    )
    try:
        signer = Account.recover_message(signable, signature=signature)
    except Exception as exc:  # eth_keys raises several kinds for a signature that is no signature
        raise RequestRefused(ApiErrorCode.BAD_SIGNATURE, f"no signer recovers from the signature: {exc}") from exc
    return signer, nonce, expiry


def public_key_of(key: str | bytes) -> str:
    """The uncompressed public key (64 bytes, hex) of a private key, as `AgentInfo.public_key` carries it."""
    raw = bytes.fromhex(key.removeprefix("0x")) if isinstance(key, str) else key
    return "0x" + keys.PrivateKey(raw).public_key.to_bytes().hex()


def address_of_public_key(public_key: str) -> str:
    """The address that owns a public key (checksummed)."""
    return keys.PublicKey(bytes.fromhex(public_key.removeprefix("0x"))).to_checksum_address()


def seal(public_key: str, value: str) -> str:
    """`value` encrypted to `public_key` (ECIES over secp256k1), hex: only the agent's key opens it."""
    return "0x" + ecies.encrypt(public_key.removeprefix("0x"), value.encode()).hex()


def unseal(key: str | bytes, sealed: str) -> str:
    """The value of a sealed secret; raises ValueError when it is not sealed to this key."""
    raw = bytes.fromhex(key.removeprefix("0x")) if isinstance(key, str) else key
    try:
        return ecies.decrypt(raw, bytes.fromhex(sealed.removeprefix("0x"))).decode()
    except Exception as exc:  # the library raises ValueError, TypeError or its crypto backend's errors
        raise ValueError("not a value sealed to this agent's key") from exc
