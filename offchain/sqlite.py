"""SQLite as every off-chain service uses it for state that must survive a crash.

WAL journal with `synchronous=FULL`: a commit that returned survives a kill -9 or a power cut.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def open_db(path: str | Path) -> sqlite3.Connection:
    """Opens (creating it and its folder if needed) the database at `path` in autocommit mode; group statements
    with `transaction`."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), isolation_level=None, timeout=10.0)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA foreign_keys=ON")
    return db


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write transaction (`BEGIN IMMEDIATE`), committed on exit and rolled back on error.

    Nested use joins the outer transaction, so a caller can wrap several modules' writes in one commit.
    """
    if db.in_transaction:
        yield db
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def add_missing_columns(db: sqlite3.Connection, table: str, columns: dict[str, str]) -> None:
    """Adds the `columns` (name -> SQL declaration) that `table` lacks: how a database written by an earlier
    version takes on new nullable or defaulted columns."""
    present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
    with transaction(db):
        for name, declaration in columns.items():
            if name not in present:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {declaration}")
