"""Typed records of the registry's and the escrow's events, decoded from raw logs (`eth_getLogs`, receipts).

Every event of `ProviderRegistry` and `RentalEscrow` has a frozen record named after it and built as
`offchain.chain.reads` builds view records: by the ABI's argument names, in snake case with the ABI's name as alias
where the two differ by more than case. A record whose fields do not match its event's arguments exactly (an
argument renamed, added or dropped in the contract) fails with `AbiMismatch` naming them. Each record also says
where its log is: block number, log index and transaction hash.

`decode_log` is the one place that reads event arguments by name; everything else reads records.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, ClassVar, TypeVar, get_args

from hexbytes import HexBytes
from pydantic import Field
from web3 import Web3
from web3.types import LogReceipt

from offchain.chain.contracts import abi
from offchain.chain.reads import AbiMismatch, ChainRecord
from offchain.protocol.status import DeclineReason, RentalStatus, SkipReason, SlashReason

E = TypeVar("E", bound="ChainEvent")


class ChainEvent(ChainRecord):
    """One event: its arguments (the fields of the record named after it) and where its log is."""

    LOG_FIELDS: ClassVar[frozenset[str]] = frozenset({"block_number", "log_index", "tx_hash"})

    block_number: int
    log_index: int
    tx_hash: str  # 0x-hex

    @property
    def name(self) -> str:
        """The event's name in the ABI."""
        return type(self).__name__

    @classmethod
    def from_log(cls: type[E], inputs: Sequence[dict[str, Any]], args: Mapping[str, Any], log: LogReceipt) -> E:
        """The record of an event with ABI `inputs` whose log `log` decoded to `args`."""
        names = [entry["name"] for entry in inputs]
        expected = {field.alias or name for name, field in cls.model_fields.items() if name not in cls.LOG_FIELDS}
        if set(names) != expected:
            raise AbiMismatch(f"{cls.__name__} expects {sorted(expected)}, the event has {names}")
        return cls.model_validate(
            {
                **{name: args[name] for name in names},
                "block_number": log["blockNumber"],
                "log_index": log["logIndex"],
                "tx_hash": _hex(log["transactionHash"]),
            }
        )


# ------------------------------------------------------------------------------------------ ProviderRegistry


class Staked(ChainEvent):
    provider: str
    amount: int


class UnstakeRequested(ChainEvent):
    provider: str
    amount: int
    unbonding: int  # all that is unbonding now, this amount included
    ends_at: int


class UnstakeWithdrawn(ChainEvent):
    provider: str
    amount: int


class AgentSet(ChainEvent):
    provider: str
    agent: str


class AgentUrlSet(ChainEvent):
    provider: str
    url: str  # empty when the provider cleared it


class GpusRegistered(ChainEvent):
    provider: str
    uuid_hashes: tuple[bytes, ...]


class GpusDeregistered(ChainEvent):
    provider: str
    uuid_hashes: tuple[bytes, ...]


class ListedTerms(ChainRecord):
    """`OfferCreated.terms`: the offer's terms as listed. `gpu_model` and `region` are the padded bytes the registry
    stores; `offchain.market.offers.unpack_text` turns them into text."""

    gpu_model: bytes
    vram_mib: int = Field(alias="vramMiB")  # per GPU
    price_per_second: int  # token units, whole offer
    min_duration: int
    max_duration: int
    region: bytes
    util_floor_bps: int
    egress: bool
    gpu_uuid_hashes: tuple[bytes, ...]


class OfferCreated(ChainEvent):
    offer_id: int
    provider: str
    terms: ListedTerms


class OfferPriceUpdated(ChainEvent):
    offer_id: int
    price_per_second: int


class OfferPaused(ChainEvent):
    offer_id: int


class OfferResumed(ChainEvent):
    offer_id: int


class OfferClosed(ChainEvent):
    offer_id: int


class CollateralLocked(ChainEvent):
    provider: str
    offer_id: int
    amount: int


class CollateralReleased(ChainEvent):
    provider: str
    offer_id: int
    amount: int


class Slashed(ChainEvent):
    provider: str
    offer_id: int
    renter: str
    amount: int  # stake token units, credited to the renter
    reason: SlashReason


class CompensationWithdrawn(ChainEvent):
    account: str
    amount: int


# ---------------------------------------------------------------------------------------------- RentalEscrow


class RentalOpened(ChainEvent):
    rental_id: int
    offer_id: int
    renter: str
    price_per_second: int
    duration: int
    deposit: int
    job_spec_hash: bytes


class RentalStarted(ChainEvent):
    rental_id: int
    started_at: int  # the opening time when the first report started it
    by_report: bool


class ReportApplied(ChainEvent):
    """The rental's totals since its start that a report brought, as applied (clamped to the rental's end)."""

    rental_id: int
    seq: int
    covered_until: int  # the time up to which the totals cover the rental
    delivered_seconds: int  # total
    util_seconds: int  # total delivered seconds weighted by utilisation
    telemetry_root: bytes  # chains every earlier period's root: the latest commits to the whole history


class ReportSkipped(ChainEvent):
    rental_id: int
    seq: int
    reason: SkipReason


class EarningsClaimed(ChainEvent):
    """A claim of a running (or terminated) rental's earnings: `earned` is the gross total claimed so far,
    `provider_payout` and `fee` what this claim credited."""

    rental_id: int
    earned: int
    provider_payout: int
    fee: int


class RentalTerminated(ChainEvent):
    rental_id: int
    ends_at: int
    refund: int


class RentalDeclined(ChainEvent):
    rental_id: int
    reason: DeclineReason


class RentalFinalized(ChainEvent):
    """The rental's settlement: `provider_payout` and `fee` are its lifetime totals (what claims credited before
    included), `refund` what the settlement credited the renter; `slashed` is in the stake token, the other amounts
    in the payment token."""

    rental_id: int
    status: RentalStatus
    provider_payout: int
    fee: int
    refund: int
    delivered_seconds: int
    missed_seconds: int
    slashed: int
    slash_reason: SlashReason


class Withdrawn(ChainEvent):
    account: str
    amount: int


class OracleSetUpdated(ChainEvent):
    version: int
    signers: tuple[str, ...]
    threshold: int


class OracleSetScheduled(ChainEvent):
    """An oracle set announced to become `version`, which anyone can activate from `effective_at` on."""

    version: int
    signers: tuple[str, ...]
    threshold: int
    effective_at: int


class OracleSetCancelled(ChainEvent):
    version: int


class FeeUpdated(ChainEvent):
    fee_bps: int


class TreasuryUpdated(ChainEvent):
    treasury: str


class Paused(ChainEvent):
    account: str


class Unpaused(ChainEvent):
    account: str


class OwnershipTransferStarted(ChainEvent):
    previous_owner: str
    new_owner: str


class OwnershipTransferred(ChainEvent):
    previous_owner: str
    new_owner: str


class EIP712DomainChanged(ChainEvent):
    pass


#: The escrow's events of one rental (their first argument is its id).
RentalEvent = (
    RentalOpened
    | RentalStarted
    | ReportApplied
    | ReportSkipped
    | EarningsClaimed
    | RentalTerminated
    | RentalDeclined
    | RentalFinalized
)
#: The escrow events of one rental (their first indexed argument is its id), by name.
RENTAL_EVENT_NAMES: tuple[str, ...] = tuple(record.__name__ for record in get_args(RentalEvent))

#: The records of each contract's events.
CONTRACT_EVENTS: dict[str, tuple[type[ChainEvent], ...]] = {
    "ProviderRegistry": (
        Staked,
        UnstakeRequested,
        UnstakeWithdrawn,
        AgentSet,
        AgentUrlSet,
        GpusRegistered,
        GpusDeregistered,
        OfferCreated,
        OfferPriceUpdated,
        OfferPaused,
        OfferResumed,
        OfferClosed,
        CollateralLocked,
        CollateralReleased,
        Slashed,
        CompensationWithdrawn,
    ),
    "RentalEscrow": (
        RentalOpened,
        RentalStarted,
        ReportApplied,
        ReportSkipped,
        EarningsClaimed,
        RentalTerminated,
        RentalDeclined,
        RentalFinalized,
        Withdrawn,
        OracleSetUpdated,
        OracleSetScheduled,
        OracleSetCancelled,
        FeeUpdated,
        TreasuryUpdated,
        Paused,
        Unpaused,
        OwnershipTransferStarted,
        OwnershipTransferred,
        EIP712DomainChanged,
    ),
}


def decode_log(contract_name: str, log: LogReceipt) -> ChainEvent | None:
    """The record of a raw log that contract `contract_name` emitted; None for an event it has no record of."""
    if not log["topics"]:
        return None
    decoder = _decoders(contract_name).get(_hex(log["topics"][0]))
    if decoder is None:
        return None
    event, record = decoder
    return record.from_log(event.abi["inputs"], event.process_log(log)["args"], log)


@lru_cache(maxsize=None)
def _decoders(contract_name: str) -> dict[str, tuple[Any, type[ChainEvent]]]:
    """Each event topic of the contract's ABI with a record: the web3 event that decodes its logs, and the record."""
    events = Web3().eth.contract(abi=abi(contract_name)).events
    records = {record.__name__: record for record in CONTRACT_EVENTS[contract_name]}
    named = {entry["name"] for entry in abi(contract_name) if entry["type"] == "event"}
    if missing := sorted(records.keys() - named):
        raise AbiMismatch(f"{contract_name} emits no {missing}")
    return {event.topic: (event, records[event.event_name]) for event in (getattr(events, name) for name in records)}


def _hex(value: bytes | str) -> str:
    """0x-hex of a topic or hash, however the node's client typed it."""
    return Web3.to_hex(HexBytes(value))
