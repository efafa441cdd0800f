"""An in-memory index of one deployment's registry and escrow events: providers, offers, rentals and each
provider's history, for the web page.

The chain is the source of truth, so nothing is stored: the index is built from the deployment's `start_block`
when it starts. It follows the chain the way the oracle's `ChainView.follow` does, with `eth_getLogs` over both
contracts in ranges of at most `max_block_range` blocks, up to the head less `confirmations`. After a node error
it resumes from the first block it has not indexed; when the last block it indexed is no longer on the chain (a
reorg deeper than `confirmations`, or a devnet reverted to a snapshot) it starts over from `start_block`.

Offers and rentals are built from events alone. A provider's stake, reputation counters and agent URL are read
from the registry (`getProvider`, `agentUrlOf`) at the indexed head for every provider an event touched (an
`AgentUrlSet` among them), so the reliability shown is the one the registry keeps, not a second computation of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, Iterable

from pydantic import BaseModel, ConfigDict
from web3 import AsyncWeb3
from web3.exceptions import Web3Exception

from offchain.chain.contracts import contract
from offchain.chain.rpc import ChainUnreachable
from offchain.ops.deployments import Deployment
from offchain.market.offers import OfferRecord, ProviderRecord, read_provider, unpack_text
from offchain.protocol.status import OfferStatus
from offchain.protocol.status import DeclineReason, RentalStatus, SlashReason

log = logging.getLogger(__name__)

DEFAULT_MAX_BLOCK_RANGE = 2_000
DEFAULT_POLL_INTERVAL_SECONDS = 1.0
#: Concurrent `eth_getBlock` / provider (`read_provider`) reads while a range is indexed.
READ_CONCURRENCY = 16
#: What a sync fails with and retries: the node did not answer, or answered with an error.
CHAIN_ERRORS = (ChainUnreachable, Web3Exception)


REGISTRY_EVENTS = ("Staked", "UnstakeRequested", "UnstakeWithdrawn", "AgentSet", "AgentUrlSet", "OfferCreated",
                   "OfferPriceUpdated", "OfferPaused", "OfferResumed", "OfferClosed", "Slashed")
ESCROW_EVENTS = ("RentalOpened", "RentalStarted", "ReportApplied", "RentalTerminated", "RentalDeclined",
                 "RentalFinalized")


class HistoryEntry(BaseModel):
    """One event in a provider's history, with its arguments as JSON values (bytes as 0x-hex)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    block: int
    log_index: int
    timestamp: int
    tx_hash: str
    event: str
    offer_id: int | None = None
    rental_id: int | None = None
    args: dict[str, Any]


class ReportPoint(BaseModel):
    """One applied usage report (`ReportApplied`): the period ends at `period_end`, amounts in token units."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: int
    period_end: int
    delivered_seconds: int
    avg_util_bps: int
    earned: int
    block: int


class Settlement(BaseModel):
    """`RentalFinalized`: what the settlement credited. `slashed` is in the stake token, the rest in the payment
    token."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: RentalStatus
    provider_payout: int
    fee: int
    refund: int
    delivered_seconds: int
    missed_seconds: int
    slashed: int
    slash_reason: SlashReason
    block: int
    timestamp: int


class IndexedRental(BaseModel):
    """A rental as its events tell it. `since` is the opening time while Open, the start time once started;
    `duration` is shortened by a termination (`booked_duration` keeps what was paid for)."""

    model_config = ConfigDict(extra="forbid")

    rental_id: int
    offer_id: int
    provider: str
    renter: str
    price_per_second: int
    booked_duration: int
    duration: int
    deposit: int
    job_spec_hash: str
    opened_at: int
    opened_block: int
    status: RentalStatus = RentalStatus.OPEN
    since: int
    started_at: int | None = None
    started_by_report: bool = False
    terminated_at: int | None = None
    terminate_refund: int = 0
    decline_reason: DeclineReason | None = None  # why the provider declined it (status Declined)
    reports: list[ReportPoint] = []
    settlement: Settlement | None = None

    @property
    def ends_at(self) -> int:
        return self.since + self.duration

    @property
    def delivered_seconds(self) -> int:
        return sum(r.delivered_seconds for r in self.reports)

    @property
    def earned(self) -> int:
        """Gross earnings accrued by the applied reports: what the renter pays, fee included."""
        return sum(r.earned for r in self.reports)

    @property
    def refunded(self) -> int:
        """Deposit credited back to the renter so far: at a termination and at the settlement."""
        return self.terminate_refund + (self.settlement.refund if self.settlement else 0)


class IndexedProvider(BaseModel):
    """A provider: the registry's account of it (None until first read) and what its events touched."""

    model_config = ConfigDict(extra="forbid")

    address: str
    record: ProviderRecord | None = None
    offer_ids: list[int] = []
    rental_ids: list[int] = []
    history: list[HistoryEntry] = []


@dataclass
class _Offer:
    """An offer's terms and state; an `OfferRecord` once its provider's reputation is known."""

    offer_id: int
    provider: str
    status: OfferStatus
    gpu_model: str
    vram_mib: int
    price_per_second: int
    min_duration: int
    max_duration: int
    region: str
    util_floor_bps: int
    egress: bool
    gpu_uuid_hashes: list[str]
    live_rental_id: int = 0

    def record(self, reputation: ProviderRecord) -> OfferRecord:
        return OfferRecord(offer_id=self.offer_id, provider=self.provider, status=self.status,
                           gpu_model=self.gpu_model, gpu_count=len(self.gpu_uuid_hashes), vram_mib=self.vram_mib,
                           region=self.region, price_per_second=self.price_per_second,
                           min_duration=self.min_duration, max_duration=self.max_duration,
                           util_floor_bps=self.util_floor_bps, egress=self.egress,
                           gpu_uuid_hashes=self.gpu_uuid_hashes, live_rental_id=self.live_rental_id,
                           reputation=reputation)


@dataclass
class _State:
    """Everything indexed from `start_block` up to `last_block`."""

    next_block: int
    last_block: int | None = None
    last_hash: bytes | None = None
    providers: dict[str, IndexedProvider] = field(default_factory=dict)
    offers: dict[int, _Offer] = field(default_factory=dict)
    rentals: dict[int, IndexedRental] = field(default_factory=dict)
    stale_providers: set[str] = field(default_factory=set)  # touched since their record was last read


@dataclass(frozen=True)
class _Block:
    timestamp: int
    hash: bytes


class EventIndex:
    """The index of one registry and escrow. `await index.run(stop)` follows the chain until `stop` is set; the
    readers (`offers`, `rental`, `provider`, ...) answer from memory and never wait for the chain."""

    def __init__(self, w3: AsyncWeb3, registry: str, escrow: str, start_block: int, *, confirmations: int = 0,
                 max_block_range: int = DEFAULT_MAX_BLOCK_RANGE) -> None:
        if confirmations < 0 or max_block_range < 1 or start_block < 0:
            raise ValueError("start_block and confirmations must be >= 0 and max_block_range >= 1")
        self._w3 = w3
        self._registry = contract(w3, "ProviderRegistry", registry)
        self._escrow = contract(w3, "RentalEscrow", escrow)
        self._start_block = start_block
        self._confirmations = confirmations
        self._max_range = max_block_range
        self._events = {
            (c.address, getattr(c.events, name).topic): getattr(c.events, name)
            for c, names in ((self._registry, REGISTRY_EVENTS), (self._escrow, ESCROW_EVENTS)) for name in names
        }
        self._topics = sorted({topic for _, topic in self._events})
        self._state = _State(next_block=start_block)
        self._ready = False
        self._version = 0
        self._changed = asyncio.Condition()

    @classmethod
    def for_deployment(cls, w3: AsyncWeb3, deployment: Deployment, **options: Any) -> EventIndex:
        return cls(w3, deployment.registry, deployment.escrow, deployment.start_block, **options)

    # ------------------------------------------------------------------------------------------------ readers

    @property
    def ready(self) -> bool:
        """The index has caught up with the chain at least once since it (re)started."""
        return self._ready

    @property
    def block(self) -> int | None:
        """The last block indexed."""
        return self._state.last_block

    @property
    def version(self) -> int:
        """Bumped whenever what the readers return may have changed."""
        return self._version

    def offers(self) -> list[OfferRecord]:
        """Every offer, by id, whose provider's reputation has been read (all of them once `ready`)."""
        state = self._state
        records = []
        for offer_id in sorted(state.offers):
            offer = state.offers[offer_id]
            reputation = state.providers[offer.provider].record
            if reputation is not None:
                records.append(offer.record(reputation))
        return records

    def offer(self, offer_id: int) -> OfferRecord | None:
        offer = self._state.offers.get(offer_id)
        if offer is None:
            return None
        reputation = self._state.providers[offer.provider].record
        return offer.record(reputation) if reputation is not None else None

    def rental(self, rental_id: int) -> IndexedRental | None:
        rental = self._state.rentals.get(rental_id)
        return rental.model_copy(deep=True) if rental else None

    def rentals(self, limit: int | None = None) -> list[IndexedRental]:
        """Rentals, the most recently opened first."""
        newest = sorted(self._state.rentals.values(), key=lambda r: (r.opened_block, r.rental_id), reverse=True)
        return [r.model_copy(deep=True) for r in newest[:limit]]

    def provider(self, address: str) -> IndexedProvider | None:
        provider = self._state.providers.get(AsyncWeb3.to_checksum_address(address))
        return provider.model_copy(deep=True) if provider else None

    async def wait_for_change(self, version: int, timeout: float) -> int:
        """Waits up to `timeout` seconds for the version to move past `version`, or for `wake`; returns it."""
        async with self._changed:
            if self._version == version:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout)
        return self._version

    async def wake(self) -> None:
        """Returns every `wait_for_change` now (a server shutting down ends its streams)."""
        async with self._changed:
            self._changed.notify_all()

    # ------------------------------------------------------------------------------------------------ following

    async def run(self, stop: asyncio.Event, poll_interval: float = DEFAULT_POLL_INTERVAL_SECONDS) -> None:
        """Syncs every `poll_interval` seconds until `stop` is set; a node error is logged and retried next time.

        Stop it with `stop`: it stops between two syncs, so no sync is cut off halfway."""
        while not stop.is_set():
            try:
                await self.sync()
            except CHAIN_ERRORS as exc:
                log.warning("event index: %s: %s", type(exc).__name__, exc)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), poll_interval)

    async def sync(self) -> bool:
        """Indexes every confirmed block not indexed yet; True if anything the readers return changed."""
        head = await self._w3.eth.block_number - self._confirmations
        if not await self._still_on_chain(head):
            log.warning("event index: block %s left the chain; re-indexing from block %d", self._state.last_block,
                        self._start_block)
            self._state = _State(next_block=self._start_block)
            self._ready = False
            await self._bump()
        changed = False
        state = self._state
        while state.next_block <= head:
            to_block = min(head, state.next_block + self._max_range - 1)
            logs = await self._w3.eth.get_logs({
                "address": [self._registry.address, self._escrow.address],
                "topics": [self._topics],
                "fromBlock": state.next_block,
                "toBlock": to_block,
            })
            blocks = await self._blocks({entry["blockNumber"] for entry in logs} | {to_block})
            for entry in sorted(logs, key=lambda e: (e["blockNumber"], e["logIndex"])):
                self._apply(state, entry, blocks[entry["blockNumber"]].timestamp)
            state.next_block, state.last_block, state.last_hash = to_block + 1, to_block, blocks[to_block].hash
            changed = changed or bool(logs)
        if state.stale_providers and state.last_block is not None:
            await self._read_providers(state, state.last_block)
            changed = True
        if not self._ready and state.last_block is not None:
            self._ready = changed = True
        if changed:
            await self._bump()
        return changed

    async def _still_on_chain(self, head: int) -> bool:
        state = self._state
        if state.last_block is None:
            return True
        if head < state.last_block:
            return False
        return bytes((await self._w3.eth.get_block(state.last_block))["hash"]) == state.last_hash

    async def _blocks(self, numbers: Iterable[int]) -> dict[int, _Block]:
        limit = asyncio.Semaphore(READ_CONCURRENCY)

        async def one(number: int) -> tuple[int, _Block]:
            async with limit:
                block = await self._w3.eth.get_block(number)
            return number, _Block(timestamp=block["timestamp"], hash=bytes(block["hash"]))

        return dict(await asyncio.gather(*(one(n) for n in numbers)))

    async def _read_providers(self, state: _State, block: int) -> None:
        """Reads the touched providers' accounts at `block` (the indexed head) and only then stores them all."""
        limit = asyncio.Semaphore(READ_CONCURRENCY)

        async def one(address: str) -> ProviderRecord:
            async with limit:
                return await read_provider(self._w3, self._registry.address, address, block)

        addresses = sorted(state.stale_providers)
        for address, record in zip(addresses, await asyncio.gather(*(one(a) for a in addresses))):
            state.providers[address].record = record
        state.stale_providers.clear()

    async def _bump(self) -> None:
        async with self._changed:
            self._version += 1
            self._changed.notify_all()

    # ------------------------------------------------------------------------------------------------ events

    def _apply(self, state: _State, entry: Any, timestamp: int) -> None:
        topic = "0x" + bytes(entry["topics"][0]).hex()
        event = self._events.get((AsyncWeb3.to_checksum_address(entry["address"]), topic))
        if event is None:
            return
        decoded = event.process_log(entry)
        name, args = decoded["event"], decoded["args"]
        at = dict(block=decoded["blockNumber"], log_index=decoded["logIndex"], timestamp=timestamp,
                  tx_hash="0x" + bytes(decoded["transactionHash"]).hex())
        if name in ESCROW_EVENTS:
            self._apply_rental_event(state, name, args, at)
        else:
            self._apply_registry_event(state, name, args, at)

    def _apply_registry_event(self, state: _State, name: str, args: Any, at: dict[str, Any]) -> None:
        offer_id = args.get("offerId")
        if name == "OfferCreated":
            terms = args["terms"]
            state.offers[offer_id] = _Offer(
                offer_id=offer_id, provider=args["provider"], status=OfferStatus.ACTIVE,
                gpu_model=unpack_text(terms["gpuModel"]), vram_mib=terms["vramMiB"],
                price_per_second=terms["pricePerSecond"], min_duration=terms["minDuration"],
                max_duration=terms["maxDuration"], region=unpack_text(terms["region"]),
                util_floor_bps=terms["utilFloorBps"], egress=terms["egress"],
                gpu_uuid_hashes=["0x" + bytes(h).hex() for h in terms["gpuUuidHashes"]])
            self._provider(state, args["provider"]).offer_ids.append(offer_id)
        elif name == "OfferPriceUpdated":
            state.offers[offer_id].price_per_second = args["pricePerSecond"]
        elif name in ("OfferPaused", "OfferResumed", "OfferClosed"):
            state.offers[offer_id].status = {"OfferPaused": OfferStatus.PAUSED, "OfferResumed": OfferStatus.ACTIVE,
                                             "OfferClosed": OfferStatus.CLOSED}[name]
        provider = args["provider"] if "provider" in args else state.offers[offer_id].provider
        self._record(state, provider, name, args, at, offer_id=offer_id)

    def _apply_rental_event(self, state: _State, name: str, args: Any, at: dict[str, Any]) -> None:
        rental_id = args["rentalId"]
        if name == "RentalOpened":
            offer = state.offers[args["offerId"]]
            state.rentals[rental_id] = IndexedRental(
                rental_id=rental_id, offer_id=offer.offer_id, provider=offer.provider, renter=args["renter"],
                price_per_second=args["pricePerSecond"], booked_duration=args["duration"],
                duration=args["duration"], deposit=args["deposit"],
                job_spec_hash="0x" + bytes(args["jobSpecHash"]).hex(), opened_at=at["timestamp"],
                opened_block=at["block"], since=at["timestamp"])
            offer.live_rental_id = rental_id
            self._provider(state, offer.provider).rental_ids.append(rental_id)
        rental = state.rentals[rental_id]
        if name == "RentalStarted":
            rental.status, rental.since, rental.started_at = RentalStatus.RUNNING, args["startedAt"], args["startedAt"]
            rental.started_by_report = args["byReport"]
        elif name == "ReportApplied":
            rental.reports.append(ReportPoint(seq=args["seq"], period_end=args["periodEnd"],
                                              delivered_seconds=args["deliveredSeconds"],
                                              avg_util_bps=args["avgUtilBps"], earned=args["earned"],
                                              block=at["block"]))
            return  # one per report period: too frequent for the provider's history
        elif name == "RentalTerminated":
            rental.status, rental.terminated_at = RentalStatus.TERMINATED, args["endsAt"]
            rental.duration, rental.terminate_refund = args["endsAt"] - rental.since, args["refund"]
        elif name == "RentalDeclined":
            rental.decline_reason = DeclineReason(args["reason"])
        elif name == "RentalFinalized":
            rental.status = RentalStatus(args["status"])
            rental.settlement = Settlement(
                status=rental.status, provider_payout=args["providerPayout"], fee=args["fee"], refund=args["refund"],
                delivered_seconds=args["deliveredSeconds"], missed_seconds=args["missedSeconds"],
                slashed=args["slashed"], slash_reason=SlashReason(args["slashReason"]), block=at["block"],
                timestamp=at["timestamp"])
            offer = state.offers[rental.offer_id]
            if offer.live_rental_id == rental_id:
                offer.live_rental_id = 0
        self._record(state, rental.provider, name, args, at, offer_id=rental.offer_id, rental_id=rental_id)

    def _provider(self, state: _State, address: str) -> IndexedProvider:
        if address not in state.providers:
            state.providers[address] = IndexedProvider(address=address)
        return state.providers[address]

    def _record(self, state: _State, provider: str, name: str, args: Any, at: dict[str, Any],
                offer_id: int | None = None, rental_id: int | None = None) -> None:
        """Adds the event to the provider's history and marks its account for a fresh read."""
        self._provider(state, provider).history.append(
            HistoryEntry(event=name, offer_id=offer_id, rental_id=rental_id, args=_json_args(args), **at))
        state.stale_providers.add(provider)


def _json_args(value: Any) -> Any:
    """Decoded event arguments as JSON values: bytes as 0x-hex, structs as objects."""
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, dict) or hasattr(value, "items"):
        return {k: _json_args(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_args(v) for v in value]
    return value
