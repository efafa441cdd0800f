"""An in-memory index of one deployment's registry and escrow events: providers, offers, rentals and each
provider's history and reputation, for the web page and for the CLI's offer search and provider views.

The chain is the source of truth, so nothing is stored: the index is built from the deployment's `start_block`
when it starts. It follows both contracts' logs with an `EventFollower`, in ranges of at most `max_block_range`
blocks, up to the head less `confirmations`. After a node error it resumes from the first block it has not
indexed; when a block it indexed is no longer on the chain (a reorg deeper than `confirmations`, or a devnet
reverted to a snapshot) it starts over from `start_block`, since what the orphaned blocks changed cannot be told
apart from the rest.

Offers and rentals are built from events alone, a rental as `offchain.market.rentals.RentalHistory`. A provider's
stake, counters and agent URL are read from the registry (`getProvider`, `agentUrlOf`) at the indexed head for
every provider an event touched (an `AgentUrlSet` among them); its reputation is folded from its settled rentals
and the agent keys it set, by `offchain.market.reputation`.
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
from offchain.chain.deployments import Deployment
from offchain.chain.events import (
    RENTAL_EVENT_NAMES,
    AgentSet,
    ChainEvent,
    OfferClosed,
    OfferCreated,
    OfferPaused,
    OfferPriceUpdated,
    OfferResumed,
    RentalEvent,
    RentalFinalized,
    RentalOpened,
    ReportApplied,
    ReportSkipped,
    decode_log,
)
from offchain.chain.follower import DEFAULT_MAX_BLOCK_RANGE, EventFollower, Rewind
from offchain.chain.reads import ChainReader, Offer
from offchain.chain.rpc import ChainUnreachable
from offchain.market.offers import OfferRecord, ProviderRecord, read_provider
from offchain.market.rentals import RentalHistory
from offchain.market.reputation import reputation
from offchain.protocol.status import OfferStatus

log = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL_SECONDS = 1.0
#: Concurrent `eth_getBlock` / provider (`read_provider`) reads while a range is indexed.
READ_CONCURRENCY = 16
#: What a sync fails with and retries: the node did not answer, or answered with an error.
CHAIN_ERRORS = (ChainUnreachable, Web3Exception)


REGISTRY_EVENTS = (
    "Staked",
    "UnstakeRequested",
    "UnstakeWithdrawn",
    "AgentSet",
    "AgentUrlSet",
    "OfferCreated",
    "OfferPriceUpdated",
    "OfferPaused",
    "OfferResumed",
    "OfferClosed",
    "Slashed",
)
_OFFER_STATUS_AFTER = {
    OfferPaused: OfferStatus.PAUSED,
    OfferResumed: OfferStatus.ACTIVE,
    OfferClosed: OfferStatus.CLOSED,
}


class HistoryEntry(BaseModel):
    """One event in a provider's history, with its block's time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    record: ChainEvent
    timestamp: int
    offer_id: int | None = None
    rental_id: int | None = None

    @property
    def event(self) -> str:
        return self.record.name


class IndexedProvider(BaseModel):
    """A provider: the registry's account of it (None until first read) and what its events touched."""

    model_config = ConfigDict(extra="forbid")

    address: str
    record: ProviderRecord | None = None
    agents: list[str] = []  # every agent key it set, the current one last
    offer_ids: list[int] = []
    rental_ids: list[int] = []
    history: list[HistoryEntry] = []


@dataclass
class _Offer:
    """An offer as the registry's `getOffer` would read it, kept current from its events; an `OfferRecord` once its
    provider's reputation is known."""

    offer_id: int
    listed: Offer
    live_rental_id: int = 0

    @property
    def provider(self) -> str:
        return self.listed.provider

    def update(self, **changes: object) -> None:
        self.listed = self.listed.model_copy(update=changes)

    def record(self, reputation: ProviderRecord) -> OfferRecord:
        return OfferRecord.from_chain(self.offer_id, self.listed, self.live_rental_id, reputation)


@dataclass
class _State:
    """Everything indexed from `start_block` up to `last_block`."""

    last_block: int | None = None
    providers: dict[str, IndexedProvider] = field(default_factory=dict)
    offers: dict[int, _Offer] = field(default_factory=dict)
    rentals: dict[int, RentalHistory] = field(default_factory=dict)
    stale_providers: set[str] = field(default_factory=set)  # touched since their record was last read


class EventIndex:
    """The index of one registry and escrow. `await index.run(stop)` follows the chain until `stop` is set; the
    readers (`offers`, `rental`, `provider`, ...) answer from memory and never wait for the chain."""

    def __init__(
        self,
        w3: AsyncWeb3,
        registry: str,
        escrow: str,
        start_block: int,
        *,
        confirmations: int = 0,
        max_block_range: int = DEFAULT_MAX_BLOCK_RANGE,
    ) -> None:
        self._w3 = w3
        self._registry = contract(w3, "ProviderRegistry", registry)
        self._escrow = contract(w3, "RentalEscrow", escrow)
        self._start_block = start_block
        self._contract_names = {self._registry.address: "ProviderRegistry", self._escrow.address: "RentalEscrow"}
        self._followed = {*REGISTRY_EVENTS, *RENTAL_EVENT_NAMES}
        topics = sorted(
            getattr(c.events, name).topic
            for c, names in ((self._registry, REGISTRY_EVENTS), (self._escrow, RENTAL_EVENT_NAMES))
            for name in names
        )
        self._follower = EventFollower(
            w3,
            [self._registry.address, self._escrow.address],
            [topics],
            start_block,
            confirmations=confirmations,
            max_block_range=max_block_range,
        )
        self._state = _State()
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

    def rental(self, rental_id: int) -> RentalHistory | None:
        return self._state.rentals.get(rental_id)

    def rentals(self, limit: int | None = None) -> list[RentalHistory]:
        """Rentals, the most recently opened first."""
        newest = sorted(self._state.rentals.values(), key=lambda r: (r.opened.block_number, r.rental_id), reverse=True)
        return newest[:limit]

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
        changed = False
        while (step := await self._follower.poll()) is not None:
            if isinstance(step, Rewind):
                log.warning(
                    "event index: block %s left the chain; re-indexing from block %d",
                    step.last_block,
                    self._start_block,
                )
                self._state = _State()
                self._ready = False
                self._follower.restart()
                await self._bump()
                continue
            state = self._state
            timestamps = await self._timestamps({entry["blockNumber"] for entry in step.logs})
            for entry in step.logs:
                self._apply(state, entry, timestamps[entry["blockNumber"]])
            state.last_block = step.to_block
            self._follower.commit(step)
            changed = changed or bool(step.logs)
            if step.caught_up:
                break
        state = self._state
        if state.stale_providers and state.last_block is not None:
            await self._read_providers(state, state.last_block)
            changed = True
        if not self._ready and state.last_block is not None:
            self._ready = changed = True
        if changed:
            await self._bump()
        return changed

    async def _timestamps(self, numbers: Iterable[int]) -> dict[int, int]:
        limit = asyncio.Semaphore(READ_CONCURRENCY)

        async def one(number: int) -> tuple[int, int]:
            async with limit:
                block = await self._w3.eth.get_block(number)
            return number, block["timestamp"]

        return dict(await asyncio.gather(*(one(n) for n in numbers)))

    async def _read_providers(self, state: _State, block: int) -> None:
        """Reads the touched providers' accounts at `block` (the indexed head) and only then stores them all."""
        limit = asyncio.Semaphore(READ_CONCURRENCY)
        reader = ChainReader(self._w3, self._registry.address, self._escrow.address)

        async def one(address: str) -> ProviderRecord:
            async with limit:
                return await read_provider(reader, address, block)

        addresses = sorted(state.stale_providers)
        for address, record in zip(addresses, await asyncio.gather(*(one(a) for a in addresses))):
            provider = state.providers[address]
            rentals = (state.rentals[i] for i in provider.rental_ids)
            provider.record = record.model_copy(update={"track_record": reputation(address, provider.agents, rentals)})
        state.stale_providers.clear()

    async def _bump(self) -> None:
        async with self._changed:
            self._version += 1
            self._changed.notify_all()

    # ------------------------------------------------------------------------------------------------ events

    def _apply(self, state: _State, entry: Any, timestamp: int) -> None:
        contract_name = self._contract_names.get(AsyncWeb3.to_checksum_address(entry["address"]))
        event = None if contract_name is None else decode_log(contract_name, entry)
        if event is None or event.name not in self._followed:
            return
        if isinstance(event, RentalEvent):
            self._apply_rental_event(state, event, timestamp)
        else:
            self._apply_registry_event(state, event, timestamp)

    def _apply_registry_event(self, state: _State, event: ChainEvent, timestamp: int) -> None:
        match event:
            case OfferCreated(terms=terms):
                listed = Offer(
                    provider=event.provider,
                    gpu_count=len(terms.gpu_uuid_hashes),
                    status=OfferStatus.ACTIVE,
                    **terms.model_dump(),
                )
                state.offers[event.offer_id] = _Offer(event.offer_id, listed)
                self._provider(state, event.provider).offer_ids.append(event.offer_id)
            case OfferPriceUpdated():
                state.offers[event.offer_id].update(price_per_second=event.price_per_second)
            case OfferPaused() | OfferResumed() | OfferClosed():
                state.offers[event.offer_id].update(status=_OFFER_STATUS_AFTER[type(event)])
            case AgentSet():
                self._provider(state, event.provider).agents.append(event.agent)
        offer_id: int | None = getattr(event, "offer_id", None)
        provider: str | None = getattr(event, "provider", None)
        if provider is None:
            assert offer_id is not None  # every event of REGISTRY_EVENTS names its provider or its offer
            provider = state.offers[offer_id].provider
        self._record(state, provider, event, timestamp, offer_id=offer_id)

    def _apply_rental_event(self, state: _State, event: RentalEvent, timestamp: int) -> None:
        if isinstance(event, RentalOpened):
            offer = state.offers[event.offer_id]
            state.rentals[event.rental_id] = RentalHistory(
                opened=event, util_floor_bps=offer.listed.util_floor_bps, opened_at=timestamp
            )
            offer.live_rental_id = event.rental_id
            self._provider(state, offer.provider).rental_ids.append(event.rental_id)
        elif event.rental_id in state.rentals:
            state.rentals[event.rental_id] = state.rentals[event.rental_id].apply(event, timestamp)
        else:
            return  # a report skipped as of an unknown rental
        offer = state.offers[state.rentals[event.rental_id].offer_id]
        if isinstance(event, RentalFinalized) and offer.live_rental_id == event.rental_id:
            offer.live_rental_id = 0
        if isinstance(event, (ReportApplied, ReportSkipped)):
            return  # one per landed report: too frequent for the provider's history
        self._record(state, offer.provider, event, timestamp, offer_id=offer.offer_id, rental_id=event.rental_id)

    def _provider(self, state: _State, address: str) -> IndexedProvider:
        if address not in state.providers:
            state.providers[address] = IndexedProvider(address=address)
        return state.providers[address]

    def _record(
        self,
        state: _State,
        provider: str,
        event: ChainEvent,
        timestamp: int,
        offer_id: int | None = None,
        rental_id: int | None = None,
    ) -> None:
        """Adds the event to the provider's history and marks its account for a fresh read."""
        self._provider(state, provider).history.append(
            HistoryEntry(record=event, timestamp=timestamp, offer_id=offer_id, rental_id=rental_id)
        )
        state.stale_providers.add(provider)
