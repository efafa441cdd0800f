"""Keeper: calls `claimStartTimeout` and `finalize` on rentals once the chain says they are due, and
`activateOracleSet` once an announced oracle set's governance delay has passed.

Anyone may call both; every oracle that submits runs this next to its report batcher, on the same TxManager. Rentals are
discovered from the escrow's rental events (followed with an `EventFollower` from a start block, its position kept
in SQLite; a reorg forgets the rentals first seen in the orphaned blocks, and those the new chain has come again)
and judged by `getRental` against the latest block's timestamp, so the keeper's own clock never matters:

- an Open rental past `since + startTimeout` gets `claimStartTimeout`, key `timeout:<rentalId>`;
- a Running or Terminated rental at or past `since + duration + reportGrace` gets `finalize`, key
  `finalize:<rentalId>`.

Every submission is recorded once in `keeper_action`; the TxManager's record under the same key tells how it
ended. A rental is watched until `getRental` shows it final (or superseded). An oracle set the owner announced
(`upcomingOracleSet`) gets `activateOracleSet` once the latest block reaches its `effectiveAt`, under the key
`activate-oracle-set:<effectiveAt>`: once per announcement, whose TxManager record is all there is to keep (anyone
may activate; a transaction beaten to it fails its dry-run and is not sent).

With several oracles keeping, each call takes turns like the reports do (`rotation`, from the call's due time):
the primary calls at once, each fallback `handoff_seconds` after the one before it, and a later keeper finds the
rental final and sends nothing. A keeper that calls all the same (two in one block) loses a transaction whose
dry-run fails or that reverts; the rental is settled once.

The keeper does not finalise a rental while this oracle holds a report of it that the chain has not applied
(`pending_seq`: `held` or `batched` with a seq above the rental's last applied one): finalising would count the
time that report covers as missed. The batcher lands such a report within its turns, so the wait is short; it is
bounded by `finalize_defer_seconds` past the time finalize became possible, after which the keeper finalises
anyway, so a report that can never land (its co-signatures never come, the chain would skip it) does not keep a
rental open for good. Reports the oracle dropped or quarantined do not hold the keeper back.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from pathlib import Path
from typing import Callable, Literal, Sequence

from eth_typing import ABIEvent
from eth_utils import event_abi_to_log_topic, get_all_event_abis
from pydantic import BaseModel, ConfigDict

from offchain.chain.follower import DEFAULT_MAX_BLOCK_RANGE, EventFollower, LogBatch, Rewind, SqliteStore
from offchain.chain.reads import ChainReader, Rental
from offchain.chain.tx.backoff import Backoff, wait_any
from offchain.chain.tx.manager import TxManager
from offchain.chain.tx.senderrors import TRANSIENT_RPC_ERRORS
from offchain.oracle.rotation import Rotation
from offchain.protocol.status import RentalStatus
from offchain.sqlite import open_db, transaction

log = logging.getLogger(__name__)

#: Escrow events whose first indexed argument is the rental id and that make a rental worth a look.
RENTAL_EVENTS = ("RentalOpened", "RentalStarted", "RentalTerminated", "RentalFinalized")


class KeeperAction(BaseModel):
    """A settlement call the keeper submitted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rental_id: int
    action: Literal["timeout", "finalize"]
    tx_key: str
    due_at: int  # chain time from which the call succeeds
    block_number: int  # chain head when it was submitted
    block_timestamp: int
    created_at: float


_SCHEMA = """
CREATE TABLE IF NOT EXISTS keeper_rental (
    escrow TEXT NOT NULL,
    rental_id TEXT NOT NULL,  -- uint256 in decimal
    first_seen_block INTEGER NOT NULL,
    closed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (escrow, rental_id)
);
CREATE TABLE IF NOT EXISTS keeper_action (
    escrow TEXT NOT NULL,
    rental_id TEXT NOT NULL,
    action TEXT NOT NULL,
    tx_key TEXT NOT NULL UNIQUE,
    due_at INTEGER NOT NULL,
    block_number INTEGER NOT NULL,
    block_timestamp INTEGER NOT NULL,
    created_at REAL NOT NULL
);
"""


class Keeper:
    """Finds due rentals of `reader`'s escrow and submits their settlement through `txmgr`.

    `start_block`: where the first scan begins (the escrow's deployment block). `rotation`: this oracle's place in
    the turn order of the oracle set (None: every call as soon as it is due). `pending_seq`: the highest seq of a
    rental's reports this oracle still has to land (its store's `pending_seq`), which holds back `finalize` for at
    most `finalize_defer_seconds`.
    """

    def __init__(
        self,
        reader: ChainReader,
        txmgr: TxManager,
        db_path: str | Path,
        *,
        start_block: int = 0,
        max_block_range: int = DEFAULT_MAX_BLOCK_RANGE,
        max_checks_per_tick: int = 1_000,
        max_backoff: float = 30.0,
        rotation: Rotation | None = None,
        pending_seq: Callable[[int], int | None] | None = None,
        finalize_defer_seconds: int = 0,
    ):
        if max_checks_per_tick < 1:
            raise ValueError("max_checks_per_tick must be >= 1")
        self._reader = reader
        self._w3 = reader.w3
        self._escrow = reader.escrow
        self._txmgr = txmgr
        self._max_checks_per_tick = max_checks_per_tick
        self._max_backoff = max_backoff
        self._turns = rotation
        self._pending_seq = pending_seq
        self._finalize_defer = finalize_defer_seconds
        self._deferred: set[int] = set()  # rentals whose finalize was held back (logged once each)
        topics = ["0x" + event_abi_to_log_topic(self._event_abi(name)).hex() for name in RENTAL_EVENTS]
        self._db = open_db(db_path)
        self._db.executescript(_SCHEMA)
        _migrate_cursor(self._db)
        self._follower = EventFollower(
            reader.w3,
            [self.escrow],
            [topics],
            start_block,
            max_block_range=max_block_range,
            store=SqliteStore(self._db, "keeper_cursor", "escrow", self.escrow),
        )
        self._rotation = 0
        self._timing: tuple[int, int] | None = None

    def _event_abi(self, name: str) -> ABIEvent:
        return next(item for item in get_all_event_abis(self._escrow.abi) if item["name"] == name)

    @property
    def escrow(self) -> str:
        return self._escrow.address

    @property
    def last_scanned_block(self) -> int | None:
        next_block = self._follower.next_block
        return None if next_block is None else next_block - 1

    def watched(self) -> list[int]:
        """Rentals seen in events and not yet known to be final, oldest first."""
        rows = self._db.execute(
            "SELECT rental_id FROM keeper_rental WHERE escrow = ? AND closed = 0 ORDER BY first_seen_block, rowid",
            (self.escrow,),
        )
        return [int(r["rental_id"]) for r in rows]

    def actions(self) -> list[KeeperAction]:
        """Everything the keeper submitted, in order."""
        columns = ", ".join(KeeperAction.model_fields)
        rows = self._db.execute(f"SELECT {columns} FROM keeper_action WHERE escrow = ? ORDER BY rowid", (self.escrow,))
        # rental_id is stored as text (a uint256 outgrows SQLite's integers); the model reads it back as an int.
        return [KeeperAction.model_validate(dict(r)) for r in rows]

    async def start(self) -> None:
        """Reads the escrow's timing parameters (immutable); with the RPC down, the first tick does."""
        try:
            await self._load_timing()
        except TRANSIENT_RPC_ERRORS as exc:
            log.warning("keeper: RPC unavailable at start (%s); parameters read on the first tick", exc)

    async def tick(self) -> list[KeeperAction]:
        """Scans new events, checks every watched rental and submits the calls that are due; returns the new
        submissions."""
        start_timeout, report_grace = await self._load_timing()
        await self._follower.sync(self._record_rentals, self._forget_orphaned)
        head = await self._w3.eth.get_block("latest")
        number, now = int(head["number"]), int(head["timestamp"])
        signers = (await self._reader.oracle_set(number)).signers if self._turns is not None else ()
        await self._activate_due_oracle_set(number, now, signers)
        return await self._submit_due(number, now, start_timeout, report_grace, signers)

    async def run(self, stop_event: asyncio.Event, interval: float = 5.0) -> None:
        """Ticks every `interval` seconds until `stop_event` is set, backing off exponentially while the RPC is
        down. The TxManager must be running too (its own `run`) for the submissions to be sent."""
        backoff = Backoff(interval, self._max_backoff)
        while not stop_event.is_set():
            try:
                await self.tick()
            except TRANSIENT_RPC_ERRORS as exc:
                backoff.failed()
                log.warning(
                    "keeper: RPC unavailable (%s: %s); retrying in %.2fs", type(exc).__name__, exc, backoff.delay
                )
            except Exception:
                backoff.failed()
                log.exception("keeper: tick failed; retrying in %.2fs", backoff.delay)
            else:
                backoff.succeeded()
            await wait_any([stop_event.wait()], backoff.delay)

    def close(self) -> None:
        self._db.close()

    async def _load_timing(self) -> tuple[int, int]:
        """The escrow's start timeout and report grace, read from the chain once: they are immutable."""
        if self._timing is None:
            self._timing = (await self._reader.start_timeout(), await self._reader.report_grace())
        return self._timing

    async def _record_rentals(self, batch: LogBatch) -> None:
        with transaction(self._db) as db:
            for entry in batch.logs:
                db.execute(
                    "INSERT INTO keeper_rental (escrow, rental_id, first_seen_block) VALUES (?, ?, ?)"
                    " ON CONFLICT (escrow, rental_id) DO NOTHING",
                    (self.escrow, str(int.from_bytes(entry["topics"][1], "big")), int(entry["blockNumber"])),
                )

    async def _forget_orphaned(self, rewind: Rewind) -> None:
        self._db.execute(
            "DELETE FROM keeper_rental WHERE escrow = ? AND first_seen_block >= ?", (self.escrow, rewind.next_block)
        )

    def _due_for_check(self) -> list[int]:
        """The watched rentals to read this tick: all of them, or the next `max_checks_per_tick` in rotation."""
        watched = self.watched()
        if len(watched) <= self._max_checks_per_tick:
            return watched
        start = self._rotation % len(watched)
        self._rotation = start + self._max_checks_per_tick
        return (watched[start:] + watched[:start])[: self._max_checks_per_tick]

    def _my_turn(self, signers: Sequence[str], due_at: int, now: int) -> bool:
        """Whether this keeper makes a call due at `due_at` now, or leaves it to the one whose turn it is."""
        if now < due_at:
            return False
        return self._turns is None or self._turns.role(signers, due_at, now) is not None

    def _holds_report(self, rental_id: int, rental: Rental, due_at: int, now: int) -> bool:
        """Whether `finalize` waits for a report of the rental this oracle has yet to land (see the module)."""
        pending = None if self._pending_seq is None else self._pending_seq(rental_id)
        if pending is None or pending <= rental.last_seq:
            return False
        if now >= due_at + self._finalize_defer:
            log.warning(
                "keeper: rental %d still has seq %d pending %d s after it became final-able; finalising anyway",
                rental_id,
                pending,
                now - due_at,
            )
            return False
        if rental_id not in self._deferred:
            self._deferred.add(rental_id)
            log.info("keeper: rental %d due since %d; waiting for its seq %d to land", rental_id, due_at, pending)
        return True

    async def _activate_due_oracle_set(self, head: int, now: int, signers: Sequence[str]) -> None:
        pending = await self._reader.upcoming_oracle_set(head)
        if pending.effective_at == 0 or not self._my_turn(signers, pending.effective_at, now):
            return
        key = f"activate-oracle-set:{pending.effective_at}"
        if self._txmgr.record(key) is not None:
            return
        await self._txmgr.submit(key, self.escrow, self._escrow.encode_abi("activateOracleSet", args=[]))
        log.info(
            "keeper: oracle set of %d signers due since %d; submitted %s",
            len(pending.signers),
            pending.effective_at,
            key,
        )

    async def _submit_due(
        self, head: int, now: int, start_timeout: int, report_grace: int, signers: Sequence[str]
    ) -> list[KeeperAction]:
        submitted = []
        for rental_id in self._due_for_check():
            rental = await self._reader.rental(rental_id, head)
            if rental.status is RentalStatus.NONE or rental.status.is_final:
                self._db.execute(
                    "UPDATE keeper_rental SET closed = 1 WHERE escrow = ? AND rental_id = ?",
                    (self.escrow, str(rental_id)),
                )
                continue
            if rental.status is RentalStatus.OPEN:
                action, function, due_at = "timeout", "claimStartTimeout", rental.since + start_timeout + 1
            else:
                action, function, due_at = "finalize", "finalize", rental.end + report_grace
            if not self._my_turn(signers, due_at, now):
                continue
            if action == "finalize" and self._holds_report(rental_id, rental, due_at, now):
                continue
            key = f"{action}:{rental_id}"
            if self._db.execute("SELECT 1 FROM keeper_action WHERE tx_key = ?", (key,)).fetchone():
                continue
            await self._txmgr.submit(key, self.escrow, self._escrow.encode_abi(function, args=[rental_id]))
            record = KeeperAction(
                rental_id=rental_id,
                action=action,
                tx_key=key,
                due_at=due_at,
                block_number=head,
                block_timestamp=now,
                created_at=time.time(),
            )
            self._db.execute(
                "INSERT INTO keeper_action (escrow, rental_id, action, tx_key, due_at, block_number,"
                " block_timestamp, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (self.escrow, str(rental_id), action, key, due_at, head, now, record.created_at),
            )
            log.info("keeper: rental %d due since %d; submitted %s", rental_id, due_at, key)
            submitted.append(record)
        return submitted


def _migrate_cursor(db: sqlite3.Connection) -> None:
    """Earlier versions kept the last scanned block in `keeper_cursor.last_block`; the follower keeps the next
    block to read in `next_block`."""
    if "last_block" in {row[1] for row in db.execute("PRAGMA table_info(keeper_cursor)")}:
        with transaction(db):
            db.execute("ALTER TABLE keeper_cursor RENAME COLUMN last_block TO next_block")
            db.execute("UPDATE keeper_cursor SET next_block = next_block + 1")
