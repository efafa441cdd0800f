"""The one follower of a chain's logs: `EventFollower` reads `eth_getLogs` for a set of addresses and topics, range
by range, up to the head less `confirmations`, and hands the raw logs to its owner in chain order (block, log
index). Decoding them is the owner's business.

A step is polled, handled by the owner, then committed; only a commit moves the follower. A node error or a
failing handler therefore leaves it where it was, and the same step is polled again. A step is either a
`LogBatch` (the logs of a range of blocks) or a `Rewind`: the follower remembers the hashes of the last blocks it
delivered, and when the newest of them is no longer on the chain (a reorg, or a devnet reverted to a snapshot) it
finds the newest one that still is and reads again from the block after it, or from its start block when none is.
The owner drops what it built from the blocks a rewind names before committing it; an owner that cannot tell
those apart from the rest drops everything and calls `restart` instead.

The position (start block, next block, recent hashes) is kept by a `FollowerStore`: in memory unless the owner
passes one that persists it, such as `SqliteStore`, whose `save` joins the owner's open SQLite transaction so
that what the owner recorded of a step and the follower's move past it commit together.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass, replace
from typing import Any, Awaitable, Callable, Protocol, Sequence

from web3 import AsyncWeb3
from web3.exceptions import BlockNotFound
from web3.types import FilterParams, LogReceipt

from offchain.chain.rpc import reach
from offchain.sqlite import add_missing_columns, transaction

log = logging.getLogger(__name__)

#: Blocks per `eth_getLogs` request; public RPC endpoints refuse much wider ranges.
DEFAULT_MAX_BLOCK_RANGE = 2_000
#: Delivered blocks whose hashes are remembered: a reorg deeper than the oldest of them rewinds to the start.
DEFAULT_REMEMBERED_BLOCKS = 128


@dataclass(frozen=True)
class FollowerState:
    """Where a follower is: the block it started from, the next block to read and the (number, hash) of the last
    blocks it delivered, oldest first (the newest is `next_block - 1`)."""

    start_block: int
    next_block: int
    recent_blocks: tuple[tuple[int, bytes], ...] = ()


@dataclass(frozen=True)
class LogBatch:
    """The logs of blocks `from_block` to `to_block`, in chain order. `block_hash` is `to_block`'s, read before the
    logs; `caught_up`: `to_block` is the confirmed head."""

    from_block: int
    to_block: int
    logs: list[LogReceipt]
    block_hash: bytes
    caught_up: bool


@dataclass(frozen=True)
class Rewind:
    """Blocks from `next_block` to `last_block`, which earlier batches delivered, are no longer all on the chain:
    what was built from them must go. Once committed, the follower reads again from `next_block` (its start block
    when it could not tell where the chains part)."""

    next_block: int
    last_block: int


Step = LogBatch | Rewind


class FollowerStore(Protocol):
    """Keeps a follower's state for its owner."""

    def load(self) -> FollowerState | None: ...

    def save(self, state: FollowerState) -> None: ...


class MemoryStore:
    """A follower's state for the life of the process."""

    def __init__(self) -> None:
        self._state: FollowerState | None = None

    def load(self) -> FollowerState | None:
        return self._state

    def save(self, state: FollowerState) -> None:
        self._state = state


class SqliteStore:
    """A follower's state in the row of `table` whose `key_column` is `key`, in a database opened by `open_db`.

    The table is created if missing; one that has only the key and `next_block` columns (the agent's
    `watch_cursor`, as earlier versions wrote it) takes on the others, and a row of it starts at its `next_block`.
    """

    def __init__(self, db: sqlite3.Connection, table: str, key_column: str, key: str) -> None:
        self._db = db
        self._table = table
        self._key_column = key_column
        self._key = key
        db.execute(f"CREATE TABLE IF NOT EXISTS {table} ({key_column} TEXT PRIMARY KEY, next_block INTEGER NOT NULL)")
        add_missing_columns(db, table, {"start_block": "INTEGER", "recent_blocks": "TEXT"})

    def load(self) -> FollowerState | None:
        row = self._db.execute(
            f"SELECT next_block, start_block, recent_blocks FROM {self._table} WHERE {self._key_column} = ?",
            (self._key,),
        ).fetchone()
        if row is None:
            return None
        recent = tuple(
            (number, bytes.fromhex(block_hash)) for number, block_hash in json.loads(row["recent_blocks"] or "[]")
        )
        start = row["next_block"] if row["start_block"] is None else row["start_block"]
        return FollowerState(start, row["next_block"], recent)

    def save(self, state: FollowerState) -> None:
        recent = json.dumps([[number, block_hash.hex()] for number, block_hash in state.recent_blocks])
        with transaction(self._db) as db:
            db.execute(
                f"INSERT INTO {self._table} ({self._key_column}, next_block, start_block, recent_blocks) "
                f"VALUES (?, ?, ?, ?) ON CONFLICT ({self._key_column}) DO UPDATE SET next_block = excluded.next_block,"
                " start_block = excluded.start_block, recent_blocks = excluded.recent_blocks",
                (self._key, state.next_block, state.start_block, recent),
            )


class EventFollower:
    """Follows the logs of `addresses` that match `topics` (`eth_getLogs`'s topic filter, position by position).

    `start_block`: where a follower with nothing saved in `store` starts; None starts it at the block after the
    confirmed head of its first poll (history before it is not wanted).
    """

    def __init__(
        self,
        w3: AsyncWeb3[Any],
        addresses: Sequence[str],
        topics: Sequence[Any],
        start_block: int | None,
        *,
        confirmations: int = 0,
        max_block_range: int = DEFAULT_MAX_BLOCK_RANGE,
        remembered_blocks: int = DEFAULT_REMEMBERED_BLOCKS,
        store: FollowerStore | None = None,
    ) -> None:
        if (start_block is not None and start_block < 0) or confirmations < 0:
            raise ValueError("start_block and confirmations must be >= 0")
        if max_block_range < 1 or remembered_blocks < 1:
            raise ValueError("max_block_range and remembered_blocks must be >= 1")
        self._w3 = w3
        self._addresses = [AsyncWeb3.to_checksum_address(a) for a in addresses]
        self._topics = list(topics)
        self._start_block = start_block
        self._confirmations = confirmations
        self._max_range = max_block_range
        self._remembered = remembered_blocks
        self._store = store or MemoryStore()
        self._state = self._store.load()

    @property
    def next_block(self) -> int | None:
        """The next block to read; None before the first poll of a follower with nothing saved."""
        return None if self._state is None else self._state.next_block

    async def poll(self) -> Step | None:
        """The next step from where the follower is, without moving it; None when every confirmed block was read.
        `ChainUnreachable` when the node does not answer."""
        head = await reach(self._w3.eth.block_number) - self._confirmations
        state = self._state
        if state is None:
            start = max(0, head + 1) if self._start_block is None else self._start_block
            state = self._save(FollowerState(start, start))
        if state.recent_blocks and not await self._on_chain(*state.recent_blocks[-1]):
            return await self._rewind(state)
        if state.next_block > head:
            return None
        to_block = min(head, state.next_block + self._max_range - 1)
        # The hash first: logs read after a reorg then come with a hash that the next poll finds gone.
        block_hash = await self._hash_of(to_block)
        if block_hash is None:  # the chain got shorter since its head was read: the next poll sees why
            return None
        query: FilterParams = {
            "address": self._addresses,
            "topics": self._topics,
            "fromBlock": state.next_block,
            "toBlock": to_block,
        }
        logs = await reach(self._w3.eth.get_logs(query))
        return LogBatch(
            state.next_block,
            to_block,
            sorted(logs, key=lambda e: (e["blockNumber"], e["logIndex"])),
            block_hash,
            caught_up=to_block >= head,
        )

    def commit(self, step: Step) -> None:
        """Moves past a step the owner has handled (saving the state in the store); a step polled before the last
        commit is refused with ValueError."""
        state = self._state
        if isinstance(step, LogBatch):
            if state is None or step.from_block != state.next_block:
                raise ValueError(f"blocks {step.from_block}-{step.to_block} are not the next ones to read")
            recent = (*state.recent_blocks, (step.to_block, step.block_hash))[-self._remembered :]
            self._save(replace(state, next_block=step.to_block + 1, recent_blocks=recent))
        else:
            if state is None or step.last_block != state.next_block - 1:
                raise ValueError(f"the rewind from block {step.last_block} was already committed")
            recent = tuple(block for block in state.recent_blocks if block[0] < step.next_block)
            self._save(replace(state, next_block=step.next_block, recent_blocks=recent))

    def restart(self) -> None:
        """Forgets every block delivered: the next poll reads from the start block again."""
        if self._state is not None:
            self._save(FollowerState(self._state.start_block, self._state.start_block))

    async def sync(
        self, on_logs: Callable[[LogBatch], Awaitable[None]], on_rewind: Callable[[Rewind], Awaitable[None]]
    ) -> None:
        """Polls until every confirmed block is read, committing each step once its handler has returned."""
        while (step := await self.poll()) is not None:
            if isinstance(step, Rewind):
                await on_rewind(step)
            else:
                await on_logs(step)
            self.commit(step)
            if isinstance(step, LogBatch) and step.caught_up:
                return

    def _save(self, state: FollowerState) -> FollowerState:
        self._store.save(state)
        self._state = state
        return state

    async def _rewind(self, state: FollowerState) -> Rewind:
        """The rewind to the block after the newest remembered block still on the chain (the newest is not)."""
        recent = state.recent_blocks
        # A block on the chain has all its ancestors on it: bisect for the last remembered one that is.
        on_chain, gone = -1, len(recent) - 1
        while gone - on_chain > 1:
            middle = (on_chain + gone) // 2
            if await self._on_chain(*recent[middle]):
                on_chain = middle
            else:
                gone = middle
        next_block = state.start_block if on_chain < 0 else recent[on_chain][0] + 1
        log.warning(
            "event follower: block %d is no longer on the chain; reading again from block %d", recent[-1][0], next_block
        )
        return Rewind(next_block=next_block, last_block=state.next_block - 1)

    async def _on_chain(self, number: int, block_hash: bytes) -> bool:
        return await self._hash_of(number) == block_hash

    async def _hash_of(self, number: int) -> bytes | None:
        """The hash of block `number` of the chain now; None past its head."""
        try:
            block = await reach(self._w3.eth.get_block(number))
        except BlockNotFound:
            return None
        return bytes(block["hash"])
