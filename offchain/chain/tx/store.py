"""The transaction manager's SQLite store: one row per transaction (`tx`) and one per signed attempt
(`tx_attempt`), and the records callers see of them."""

from __future__ import annotations

import sqlite3
import time
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel, ConfigDict

from offchain.chain.tx.fees import Fees
from offchain.sqlite import open_db, transaction


class TxState(str, Enum):
    UNSTARTED = "unstarted"
    IN_PROGRESS = "in_progress"
    UNCONFIRMED = "unconfirmed"
    CONFIRMED = "confirmed"
    FAILED = "failed"
    FATAL = "fatal"


FINAL_STATES = frozenset({TxState.CONFIRMED, TxState.FAILED, TxState.FATAL})

#: What a mined receipt sets on a transaction's row, and a reorg that drops the receipt clears.
RECEIPT_COLUMNS = (
    "mined_hash",
    "block_number",
    "block_hash",
    "receipt_status",
    "gas_used",
    "effective_gas_price",
    "error",
)


class TxRecord(BaseModel):
    """A stored transaction as callers see it. `hash` is the mined attempt's hash once mined, else the latest
    attempt's; `gas_limit` the one signed (or requested, before signing)."""

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_bytes="hex", val_json_bytes="hex")

    key: str
    state: TxState
    chain_id: int
    from_address: str
    to: str
    data: bytes
    nonce: int | None
    hash: str | None
    attempts: int
    gas_limit: int | None
    block_number: int | None
    block_hash: str | None
    gas_used: int | None
    effective_gas_price: int | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    broadcast_at: datetime | None
    confirmed_at: datetime | None


class TxAttempt(BaseModel):
    """One signed version of a transaction: the first send or a gas bump of the same nonce."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hash: str
    nonce: int
    gas_limit: int
    max_fee_per_gas: int
    max_priority_fee_per_gas: int
    sent_block: int  # chain head when it was signed; bumps count blocks from here
    created_at: datetime


_SCHEMA = """
CREATE TABLE IF NOT EXISTS tx (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    chain_id INTEGER NOT NULL,
    from_address TEXT NOT NULL,
    to_address TEXT NOT NULL,
    data BLOB NOT NULL,
    requested_gas_limit INTEGER,
    state TEXT NOT NULL,
    nonce INTEGER,
    error TEXT,
    mined_hash TEXT,
    block_number INTEGER,
    block_hash TEXT,
    receipt_status INTEGER,
    gas_used INTEGER,
    effective_gas_price INTEGER,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    broadcast_at REAL,
    confirmed_at REAL
);
CREATE INDEX IF NOT EXISTS tx_by_sender_state ON tx (chain_id, from_address, state, id);
-- Each new head looks for final transactions at or above the chain's mined nonce count (a deep reorg): a handful.
CREATE INDEX IF NOT EXISTS tx_by_sender_nonce ON tx (chain_id, from_address, nonce);
CREATE TABLE IF NOT EXISTS tx_attempt (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tx_id INTEGER NOT NULL REFERENCES tx (id),
    nonce INTEGER NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    raw BLOB NOT NULL,
    gas_limit INTEGER NOT NULL,
    max_fee INTEGER NOT NULL,
    tip INTEGER NOT NULL,
    sent_block INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tx_attempt_by_tx ON tx_attempt (tx_id, nonce, id);
"""


def _datetime(timestamp: float | None) -> datetime | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, tz=timezone.utc)


class TxStore:
    """The transactions of one account on one chain in a SQLite database (which may hold other accounts' and
    chains' too). Rows are `sqlite3.Row`s of `tx` and `tx_attempt`; `record` turns a `tx` row into a `TxRecord`."""

    def __init__(self, db_path: str | Path, chain_id: int, address: str):
        self._chain_id = chain_id
        self._address = address
        self._db = open_db(db_path)
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------------ transactions

    def insert(self, key: str, to: str, data: bytes, gas_limit: int | None, state: TxState) -> sqlite3.Row:
        """Stores a transaction under `key` unless the key exists; returns the row stored under it."""
        now = time.time()
        with transaction(self._db) as db:
            db.execute(
                "INSERT INTO tx (key, chain_id, from_address, to_address, data, requested_gas_limit, state,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
                (key, self._chain_id, self._address, to, data, gas_limit, state.value, now, now),
            )
        stored = self.by_key(key)
        assert stored is not None  # inserted above, or there before
        return stored

    def by_key(self, key: str) -> sqlite3.Row | None:
        return cast("sqlite3.Row | None", self._db.execute("SELECT * FROM tx WHERE key = ?", (key,)).fetchone())

    def row(self, tx_id: int) -> sqlite3.Row:
        return cast(sqlite3.Row, self._db.execute("SELECT * FROM tx WHERE id = ?", (tx_id,)).fetchone())

    def rows(self, state: TxState | None = None, limit: int = -1, order: str = "id") -> list[sqlite3.Row]:
        """This account's transactions on this chain (of one state), ordered by the column `order`."""
        sql = "SELECT * FROM tx WHERE chain_id = ? AND from_address = ?"
        args: list[Any] = [self._chain_id, self._address]
        if state is not None:
            sql += " AND state = ?"
            args.append(state.value)
        return self._db.execute(f"{sql} ORDER BY {order} LIMIT ?", (*args, limit)).fetchall()

    def first(self, state: TxState) -> sqlite3.Row | None:
        rows = self.rows(state, limit=1)
        return rows[0] if rows else None

    def max_nonce(self) -> int | None:
        """The highest nonce this account's transactions hold on this chain."""
        highest = self._db.execute(
            "SELECT MAX(nonce) FROM tx WHERE chain_id = ? AND from_address = ?", (self._chain_id, self._address)
        ).fetchone()[0]
        return cast("int | None", highest)

    def mined_final_from(self, nonce: int) -> list[sqlite3.Row]:
        """This account's final transactions on this chain mined under `nonce` or a later one, by nonce."""
        return self._db.execute(
            "SELECT * FROM tx WHERE chain_id = ? AND from_address = ? AND state IN (?, ?) AND nonce >= ?"
            " AND block_number IS NOT NULL ORDER BY nonce",
            (self._chain_id, self._address, TxState.CONFIRMED.value, TxState.FAILED.value, nonce),
        ).fetchall()

    def update(self, tx_id: int, **columns: Any) -> None:
        """Sets `columns` of a transaction (a `state` as a TxState) and its `updated_at`."""
        if "state" in columns:
            columns["state"] = columns["state"].value
        columns["updated_at"] = time.time()
        assignments = ", ".join(f"{name} = ?" for name in columns)
        with transaction(self._db) as db:
            db.execute(f"UPDATE tx SET {assignments} WHERE id = ?", (*columns.values(), tx_id))

    # ------------------------------------------------------------------ attempts

    def add_attempt(
        self,
        row: sqlite3.Row,
        nonce: int,
        raw: bytes,
        tx_hash: str,
        gas_limit: int,
        fees: Fees,
        head: int,
        state: TxState | None = None,
    ) -> sqlite3.Row:
        """Stores a signed attempt, with the transaction's new `state` and `nonce` when a state is given, in one
        commit; returns the attempt's row."""
        now = time.time()
        with transaction(self._db) as db:
            db.execute(
                "INSERT INTO tx_attempt (tx_id, nonce, hash, raw, gas_limit, max_fee, tip, sent_block, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (row["id"], nonce, tx_hash, raw, gas_limit, fees.max_fee, fees.tip, head, now),
            )
            if state is not None:
                db.execute(
                    "UPDATE tx SET state = ?, nonce = ?, error = NULL, updated_at = ? WHERE id = ?",
                    (state.value, nonce, now, row["id"]),
                )
        stored = self.attempt(tx_hash)
        assert stored is not None  # inserted above
        return stored

    def attempt(self, tx_hash: str) -> sqlite3.Row | None:
        return cast(
            "sqlite3.Row | None", self._db.execute("SELECT * FROM tx_attempt WHERE hash = ?", (tx_hash,)).fetchone()
        )

    def attempts(self, row: sqlite3.Row) -> list[sqlite3.Row]:
        """The attempts signed for the transaction's current nonce, oldest first."""
        return self._db.execute(
            "SELECT * FROM tx_attempt WHERE tx_id = ? AND nonce = ? ORDER BY id", (row["id"], row["nonce"])
        ).fetchall()

    def latest_attempt(self, row: sqlite3.Row) -> sqlite3.Row:
        return self.attempts(row)[-1]

    def restart_bump_clock(self, attempt: sqlite3.Row, head: int) -> None:
        """Counts the blocks before the next bump of `attempt` from `head`."""
        self._db.execute("UPDATE tx_attempt SET sent_block = ? WHERE id = ?", (head, attempt["id"]))

    def attempt_history(self, key: str) -> list[TxAttempt]:
        """Every signed attempt of a transaction, oldest first (all nonces it ever held)."""
        rows = self._db.execute(
            "SELECT a.hash, a.nonce, a.gas_limit, a.max_fee AS max_fee_per_gas, a.tip AS max_priority_fee_per_gas,"
            " a.sent_block, a.created_at FROM tx_attempt a JOIN tx t ON t.id = a.tx_id WHERE t.key = ? ORDER BY a.id",
            (key,),
        ).fetchall()
        return [TxAttempt.model_validate({**dict(r), "created_at": _datetime(r["created_at"])}) for r in rows]

    # ------------------------------------------------------------------ records

    def record(self, row: sqlite3.Row) -> TxRecord:
        attempts = self._db.execute(
            "SELECT COUNT(*) AS n, (SELECT hash FROM tx_attempt WHERE tx_id = ? ORDER BY id DESC LIMIT 1) AS latest,"
            " (SELECT gas_limit FROM tx_attempt WHERE tx_id = ? ORDER BY id DESC LIMIT 1) AS gas_limit"
            " FROM tx_attempt WHERE tx_id = ?",
            (row["id"], row["id"], row["id"]),
        ).fetchone()
        return TxRecord(
            key=row["key"],
            state=TxState(row["state"]),
            chain_id=row["chain_id"],
            from_address=row["from_address"],
            to=row["to_address"],
            data=bytes(row["data"]),
            nonce=row["nonce"],
            hash=row["mined_hash"] or attempts["latest"],
            attempts=attempts["n"],
            gas_limit=attempts["gas_limit"] or row["requested_gas_limit"],
            block_number=row["block_number"],
            block_hash=row["block_hash"],
            gas_used=row["gas_used"],
            effective_gas_price=row["effective_gas_price"],
            error=row["error"],
            created_at=_datetime(row["created_at"]),
            updated_at=_datetime(row["updated_at"]),
            broadcast_at=_datetime(row["broadcast_at"]),
            confirmed_at=_datetime(row["confirmed_at"]),
        )
