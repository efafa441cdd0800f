"""Watches the escrow for the events that concern a provider: rentals opened on its offers, and the termination
and finalisation of those rentals.

Polls `eth_getLogs` from a block remembered in SQLite up to the head less `confirmations`, in ranges of at most
`max_block_range` blocks. The caller handles a batch of events and commits the new cursor (`save_cursor`) in the
same transaction as what it recorded of them, so a crash between the two replays the batch instead of losing
it; handlers must therefore be idempotent. With no remembered block, watching starts at `start_block`, or
after the current head when that is None (a new agent does not replay history it was not asked to).

A rental id is `offerId << 32 | nonce`, so every event names its offer; an offer's provider never changes,
and is read from the registry once per offer.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from typing import Any

from eth_utils import to_checksum_address

from offchain.chain.reads import ChainReader
from offchain.sqlite import transaction
from offchain.protocol.reports import split_rental_id
from offchain.protocol.status import RentalStatus

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS watch_cursor (
    escrow     TEXT    PRIMARY KEY,
    next_block INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class RentalOpened:
    rental_id: int
    offer_id: int
    renter: str
    price_per_second: int
    duration: int
    deposit: int
    job_spec_hash: bytes
    block_number: int


@dataclass(frozen=True)
class RentalTerminated:
    rental_id: int
    ends_at: int
    refund: int
    block_number: int


@dataclass(frozen=True)
class RentalFinalized:
    rental_id: int
    status: RentalStatus
    block_number: int


RentalEvent = RentalOpened | RentalTerminated | RentalFinalized


@dataclass(frozen=True)
class EventBatch:
    """Events of blocks up to `next_block - 1`, in chain order; commit `next_block` once they are handled.
    `caught_up`: the batch reaches the confirmed head, so the next poll may wait."""

    events: list[RentalEvent]
    next_block: int
    caught_up: bool


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
        max_block_range: int = 2_000,
    ) -> None:
        if confirmations < 0 or max_block_range < 1:
            raise ValueError("confirmations must be >= 0 and max_block_range >= 1")
        self._reader = reader
        self._w3 = reader.w3
        self._escrow = reader.escrow
        self._provider = to_checksum_address(provider)
        self._db = db
        self._start_block = start_block
        self._confirmations = confirmations
        self._max_range = max_block_range
        self._offer_provider: dict[int, str] = {}
        self._events = {
            event.topic: event
            for event in (self._escrow.events.RentalOpened, self._escrow.events.RentalTerminated,
                          self._escrow.events.RentalFinalized)
        }
        db.executescript(SCHEMA)

    def cursor(self) -> int | None:
        """The next block to scan, or None before the first batch."""
        row = self._db.execute(
            "SELECT next_block FROM watch_cursor WHERE escrow = ?", (self._escrow.address,)
        ).fetchone()
        return None if row is None else row["next_block"]

    def save_cursor(self, next_block: int) -> None:
        """Remembers that every block before `next_block` was handled (in the caller's transaction if open)."""
        with transaction(self._db) as db:
            db.execute(
                "INSERT INTO watch_cursor (escrow, next_block) VALUES (?, ?) "
                "ON CONFLICT (escrow) DO UPDATE SET next_block = excluded.next_block",
                (self._escrow.address, next_block),
            )

    async def poll(self) -> EventBatch:
        """The provider's events from the cursor up to the confirmed head (at most `max_block_range` blocks);
        the cursor itself is not moved."""
        head = await self._w3.eth.block_number - self._confirmations
        from_block = self.cursor()
        if from_block is None:
            from_block = self._start_block if self._start_block is not None else max(0, head + 1)
        to_block = min(head, from_block + self._max_range - 1)
        if to_block < from_block:
            return EventBatch([], from_block, caught_up=True)
        logs = await self._w3.eth.get_logs({
            "address": self._escrow.address,
            "fromBlock": from_block,
            "toBlock": to_block,
            "topics": [list(self._events)],
        })
        events = []
        for entry in sorted(logs, key=lambda e: (e["blockNumber"], e["logIndex"])):
            event = await self._decode(entry)
            if event is not None:
                events.append(event)
        return EventBatch(events, to_block + 1, caught_up=to_block >= head)

    async def provider_of(self, offer_id: int) -> str:
        """The provider of an offer (cached: it never changes)."""
        if offer_id not in self._offer_provider:
            self._offer_provider[offer_id] = (await self._reader.offer(offer_id)).provider
        return self._offer_provider[offer_id]

    async def _decode(self, entry: Any) -> RentalEvent | None:
        topic = "0x" + bytes(entry["topics"][0]).hex()
        decoded = self._events[topic].process_log(entry)
        args, block = decoded["args"], decoded["blockNumber"]
        offer_id, _ = split_rental_id(args["rentalId"])
        if await self.provider_of(offer_id) != self._provider:
            return None
        match decoded["event"]:
            case "RentalOpened":
                return RentalOpened(args["rentalId"], args["offerId"], args["renter"], args["pricePerSecond"],
                                    args["duration"], args["deposit"], bytes(args["jobSpecHash"]), block)
            case "RentalTerminated":
                return RentalTerminated(args["rentalId"], args["endsAt"], args["refund"], block)
            case _:
                return RentalFinalized(args["rentalId"], RentalStatus(args["status"]), block)
