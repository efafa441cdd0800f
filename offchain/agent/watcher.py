"""Watches the escrow for the events that concern a provider: rentals opened on its offers, and the termination
and finalisation of those rentals.

Follows the escrow's logs with an `EventFollower` up to the head less `confirmations`, in ranges of at most
`max_block_range` blocks, its position kept in the agent's SQLite database (`watch_cursor`). The caller handles a
batch of events and commits it (`save_cursor`) in the same transaction as what it recorded of them, so a crash
between the two replays the batch instead of losing it; handlers must therefore be idempotent. With nothing
remembered, watching starts at `start_block`, or after the current head when that is None (a new agent does not
replay history it was not asked to). After a reorg, a batch says so (`rewound`) and the events from the block
where the chains part come again from the new chain.

A rental id is `offerId << 32 | nonce`, so every event names its offer; an offer's provider never changes,
and is read from the registry once per offer.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from eth_utils import to_checksum_address

from offchain.chain.events import RentalFinalized, RentalOpened, RentalTerminated, decode_log
from offchain.chain.follower import DEFAULT_MAX_BLOCK_RANGE, EventFollower, LogBatch, SqliteStore, Step
from offchain.chain.reads import ChainReader
from offchain.protocol.reports import split_rental_id

log = logging.getLogger(__name__)

#: The escrow's events that concern a provider's agent.
WatchedEvent = RentalOpened | RentalTerminated | RentalFinalized


@dataclass(frozen=True)
class EventBatch:
    """Events of blocks up to `next_block - 1`, in chain order; commit the batch (`save_cursor`) once they are
    handled. `caught_up`: the batch reaches the confirmed head, so the next poll may wait. `rewound`: a reorg took
    away blocks from `next_block` on that earlier batches covered (the batch has no events); what was recorded of
    their events may no longer hold, and those the new chain has come again."""

    events: list[WatchedEvent]
    next_block: int
    caught_up: bool
    rewound: bool = False
    step: Step | None = field(default=None, repr=False, compare=False)  # what `save_cursor` commits


class ChainWatcher:
    """Finds the provider's rental events on `reader`'s escrow."""

    def __init__(
        self,
        reader: ChainReader,
        provider: str,
        db: sqlite3.Connection,
        *,
        start_block: int | None = None,
        confirmations: int = 0,
        max_block_range: int = DEFAULT_MAX_BLOCK_RANGE,
    ) -> None:
        self._reader = reader
        self._provider = to_checksum_address(provider)
        self._offer_provider: dict[int, str] = {}
        escrow = reader.escrow
        topics = [getattr(escrow.events, event.__name__).topic for event in WatchedEvent.__args__]
        self._follower = EventFollower(
            reader.w3,
            [escrow.address],
            [topics],
            start_block,
            confirmations=confirmations,
            max_block_range=max_block_range,
            store=SqliteStore(db, "watch_cursor", "escrow", escrow.address),
        )

    def save_cursor(self, batch: EventBatch) -> None:
        """Remembers that `batch` was handled (in the caller's transaction if open)."""
        if batch.step is not None:
            self._follower.commit(batch.step)

    async def poll(self) -> EventBatch:
        """The provider's events from the cursor up to the confirmed head (at most `max_block_range` blocks), or
        the rewind of a reorg; the cursor itself is not moved."""
        step = await self._follower.poll()
        if step is None:
            next_block = self._follower.next_block
            assert next_block is not None  # a poll sets where the follower is
            return EventBatch([], next_block, caught_up=True)
        if not isinstance(step, LogBatch):
            return EventBatch([], step.next_block, caught_up=False, rewound=True, step=step)
        events = []
        for entry in step.logs:
            event = await self._decode(entry)
            if event is not None:
                events.append(event)
        return EventBatch(events, step.to_block + 1, caught_up=step.caught_up, step=step)

    async def provider_of(self, offer_id: int) -> str:
        """The provider of an offer (cached: it never changes)."""
        if offer_id not in self._offer_provider:
            self._offer_provider[offer_id] = (await self._reader.offer(offer_id)).provider
        return self._offer_provider[offer_id]

    async def _decode(self, entry: Any) -> WatchedEvent | None:
        """The event of the log, if it is of a rental of the provider's offers."""
        event = decode_log("RentalEscrow", entry)
        if not isinstance(event, WatchedEvent):
            return None
        offer_id, _ = split_rental_id(event.rental_id)
        return event if await self.provider_of(offer_id) == self._provider else None
