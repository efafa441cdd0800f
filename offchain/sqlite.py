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
