"""What ingest reads from the chain — rentals, offers, agent keys, the oracle set — through AsyncWeb3, cached.

An agent reports each rental about once a minute, so a cache that merely expires after a short time would miss
on nearly every report. Entries are instead kept for `cache_ttl_seconds` (a backstop) and dropped as soon as
`follow()`, a background task following the chain with an `EventFollower`, sees an event that changes what
verification relies on: a rental opened, started, terminated or finalised, an agent key set. A reorg drops every
cached rental and agent key. Applied reports are not followed (one event per report
would cost a log decode each); the chain's last seq of a rental therefore lags, and ingest re-reads the rental
when a report does not fit (`refresh_rental`). An offer's provider and GPU list never change, so offers stay
cached until evicted. Concurrent misses on one key share a single chain read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from typing import Awaitable, Callable, Generic, Hashable, TypeVar, cast

from eth_typing import ABIEvent
from eth_utils import event_abi_to_log_topic, to_canonical_address
from pydantic import BaseModel, ConfigDict
from web3 import AsyncWeb3
from web3.exceptions import ContractLogicError, Web3Exception

from offchain.chain.contracts import abi
from offchain.chain.follower import EventFollower, LogBatch, Rewind
from offchain.chain.reads import ChainReader, OracleSet, Rental
from offchain.chain.rpc import ChainUnreachable
from offchain.config import ChainSettings

log = logging.getLogger(__name__)

DEFAULT_CACHE_TTL_SECONDS = 300.0
DEFAULT_POLL_INTERVAL_SECONDS = 1.0
MAX_CACHE_ENTRIES = 100_000

# Escrow events whose first indexed argument is the rental id and that change a rental's status, start or end.
RENTAL_EVENTS = ("RentalOpened", "RentalStarted", "RentalTerminated", "RentalFinalized")


class OfferGpus(BaseModel):
    """An offer's provider and registered GPU UUID hashes (fixed when the offer is created)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: str
    gpu_uuid_hashes: frozenset[bytes]


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _TtlCache(Generic[K, V]):
    """Values that expire after `ttl` seconds or when invalidated, with one shared load per missing key."""

    def __init__(self, ttl: float, max_entries: int, clock: Callable[[], float]) -> None:
        self._ttl = ttl
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._loading: dict[K, asyncio.Task[V]] = {}

    async def get(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        entry = self._entries.get(key)
        if entry is not None and entry[0] > self._clock():
            return entry[1]
        task = self._loading.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load(key, load))
            # Every waiter may have been cancelled: retrieve the outcome so a failure is not reported as lost.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            self._loading[key] = task
        return await asyncio.shield(task)

    async def _load(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        me = asyncio.current_task()
        try:
            value = await load()
            # An invalidation while the read was in flight means the value may predate the change: do not keep it.
            if self._loading.get(key) is me:
                self._entries[key] = (self._clock() + self._ttl, value)
                self._entries.move_to_end(key)
                while len(self._entries) > self._max_entries:
                    self._entries.popitem(last=False)
            return value
        finally:
            if self._loading.get(key) is me:
                del self._loading[key]

    def invalidate(self, key: K) -> None:
        self._entries.pop(key, None)
        self._loading.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()
        self._loading.clear()


class ChainView:
    """Cached reads of one deployment's registry and escrow, through `reader` (the one to use for reads that need no
    cache)."""

    def __init__(
        self,
        w3: AsyncWeb3,
        chain: ChainSettings,
        cache_ttl_seconds: float = DEFAULT_CACHE_TTL_SECONDS,
        max_entries: int = MAX_CACHE_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.w3 = w3
        self.reader = ChainReader(w3, chain.registry, chain.escrow)
        self._registry = self.reader.registry
        self._escrow = self.reader.escrow
        self._rentals: _TtlCache[int, Rental] = _TtlCache(cache_ttl_seconds, max_entries, clock)
        self._agents: _TtlCache[str, bytes | None] = _TtlCache(cache_ttl_seconds, max_entries, clock)
        self._offers: _TtlCache[int, OfferGpus | None] = _TtlCache(float("inf"), max_entries, clock)
        self._start_timeout: int | None = None
        self._follower: EventFollower | None = None  # None until the block to follow from is known
        self.reorgs_seen = 0  # rewinds of the follower: the batcher re-checks its recent landings after one
        self._rental_topics = {_topic("RentalEscrow", name) for name in RENTAL_EVENTS}
        self._agent_topic = _topic("ProviderRegistry", "AgentSet")
        self._followed_topics = ["0x" + t.hex() for t in (*self._rental_topics, self._agent_topic)]

    async def rental(self, rental_id: int) -> Rental:
        """The rental's state (status NONE for an unknown or superseded id); its last seq may lag the chain."""
        return await self._rentals.get(rental_id, lambda: self._read_rental(rental_id))

    async def refresh_rental(self, rental_id: int) -> Rental:
        """The rental's state read from the chain now (and cached)."""
        self._rentals.invalidate(rental_id)
        return await self.rental(rental_id)

    async def offer(self, offer_id: int) -> OfferGpus | None:
        """The offer's provider and GPUs, or None if no offer has this id."""
        return await self._offers.get(offer_id, lambda: self._read_offer(offer_id))

    async def agent_of(self, provider: str) -> bytes | None:
        """The provider's agent key as 20 bytes, or None when it has none."""
        return await self._agents.get(provider, lambda: self._read_agent(provider))

    async def start_timeout(self) -> int:
        """`RentalEscrow.startTimeout` (immutable)."""
        if self._start_timeout is None:
            self._start_timeout = await _rpc(self.reader.start_timeout())
        return self._start_timeout

    async def oracle_set(self) -> OracleSet:
        """The escrow's current oracle set, read now (never cached: co-signing must use the live version)."""
        return await _rpc(self.reader.oracle_set())

    async def block_number(self) -> int:
        return await _rpc(self.w3.eth.block_number)

    async def block_time(self) -> int:
        """The latest block's timestamp: the clock rentals run on."""
        return await _rpc(self.reader.block_time())

    async def start_following(self) -> None:
        """Takes the current head as seen, so that `follow` looks at the blocks after it. Call it before anything
        is cached; if the node does not answer now, `follow` starts from the first head it sees and drops what
        was cached before."""
        with contextlib.suppress(ChainUnreachable):
            self._follower = self._follower_from(await self.block_number() + 1)

    async def follow(self, poll_interval: float = DEFAULT_POLL_INTERVAL_SECONDS) -> None:
        """Runs until cancelled: every `poll_interval` seconds, drops the cached rentals and agent keys that new
        escrow and registry events touch. A node error is logged and the same blocks are asked again next time."""
        while True:
            try:
                if self._follower is None:
                    start = await self.block_number() + 1
                    self._drop_followed()  # cached before the start was known: nothing says it is current
                    self._follower = self._follower_from(start)
                await self._follower.sync(self._on_logs, self._on_rewind)
            except (ChainUnreachable, Web3Exception) as exc:
                log.warning("chain follower: %s", exc)
            await asyncio.sleep(poll_interval)

    def _follower_from(self, start_block: int) -> EventFollower:
        return EventFollower(
            self.w3, [self._escrow.address, self._registry.address], [self._followed_topics], start_block
        )

    async def _on_logs(self, batch: LogBatch) -> None:
        for entry in batch.logs:
            self._apply_log(entry)

    async def _on_rewind(self, rewind: Rewind) -> None:
        self.reorgs_seen += 1
        self._drop_followed()  # cached values may come from the orphaned blocks

    def _drop_followed(self) -> None:
        self._rentals.clear()
        self._agents.clear()

    def _apply_log(self, entry) -> None:
        topics = [bytes(t) for t in entry["topics"]]
        if len(topics) < 2:
            return
        if topics[0] in self._rental_topics:
            self._rentals.invalidate(int.from_bytes(topics[1], "big"))
        elif topics[0] == self._agent_topic:
            self._agents.invalidate(AsyncWeb3.to_checksum_address(topics[1][12:]))

    async def _read_rental(self, rental_id: int) -> Rental:
        return await _rpc(self.reader.rental(rental_id))

    async def _read_offer(self, offer_id: int) -> OfferGpus | None:
        try:
            offer = await _rpc(self.reader.offer(offer_id))
        except ContractLogicError:
            return None
        return OfferGpus(provider=offer.provider, gpu_uuid_hashes=frozenset(bytes(h) for h in offer.gpu_uuid_hashes))

    async def _read_agent(self, provider: str) -> bytes | None:
        agent = to_canonical_address(await _rpc(self.reader.agent_of(provider)))
        return None if agent == bytes(20) else agent


def _topic(contract_name: str, event: str) -> bytes:
    (event_abi,) = [e for e in abi(contract_name) if e["type"] == "event" and e["name"] == event]
    return event_abi_to_log_topic(cast(ABIEvent, event_abi))


async def _rpc(call: Awaitable[V]) -> V:
    """Awaits a node call, treating an error the node answered with like a node that did not answer (the reader and
    `rpc.connect` already raise `ChainUnreachable` for those); reverts pass through."""
    try:
        return await call
    except ContractLogicError:
        raise
    except Web3Exception as exc:
        raise ChainUnreachable(f"{type(exc).__name__}: {exc}") from exc
