"""What the agent remembers of each rental of its offers, in SQLite, so that a restarted agent resumes where it
stopped: the phase, the start time and end from the chain, the next report's seq and period start, and the job
launch it may have left running.

Phases move forward only: `opened` (seen on chain, not started by the agent yet) -> `running` (started on
chain; the job runs and reports flow) -> `done` (nothing more to do; its reports may still be in the outbox).
`next_seq` and `period_start` advance in the same transaction that queues each report in the outbox.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from enum import StrEnum

from offchain.sqlite import transaction
from offchain.agent.watcher import RentalEvent, RentalFinalized, RentalOpened, RentalTerminated

SCHEMA = """
CREATE TABLE IF NOT EXISTS rentals (
    rental_id     TEXT    PRIMARY KEY,  -- decimal
    offer_id      TEXT    NOT NULL,
    spec_hash     BLOB    NOT NULL,
    phase         TEXT    NOT NULL CHECK (phase IN ('opened', 'running', 'done')),
    since         INTEGER,              -- start time on chain, once started
    ends_at       INTEGER,              -- since + duration; moved earlier by a termination
    terminated    INTEGER NOT NULL DEFAULT 0,
    finalized     INTEGER NOT NULL DEFAULT 0,
    next_seq      INTEGER NOT NULL DEFAULT 1,
    period_start  INTEGER,
    job_token     TEXT,                 -- GPUEX_JOB_TOKEN of the latest launch
    job_kill_argv TEXT,                 -- JSON list: the container kill command of that launch, if any
    job_deadline  REAL,                 -- unix time the job times out, fixed at its first launch
    outcome       TEXT                  -- why the rental is done, for operators
);
"""


class Phase(StrEnum):
    OPENED = "opened"
    RUNNING = "running"
    DONE = "done"


@dataclass(frozen=True)
class RentalRecord:
    rental_id: int
    offer_id: int
    spec_hash: bytes
    phase: Phase
    since: int | None
    ends_at: int | None
    terminated: bool
    finalized: bool
    next_seq: int
    period_start: int | None
    job_token: str | None
    job_kill_argv: tuple[str, ...] | None
    job_deadline: float | None
    outcome: str | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> RentalRecord:
        return cls(
            rental_id=int(row["rental_id"]),
            offer_id=int(row["offer_id"]),
            spec_hash=bytes(row["spec_hash"]),
            phase=Phase(row["phase"]),
            since=row["since"],
            ends_at=row["ends_at"],
            terminated=bool(row["terminated"]),
            finalized=bool(row["finalized"]),
            next_seq=row["next_seq"],
            period_start=row["period_start"],
            job_token=row["job_token"],
            job_kill_argv=None if row["job_kill_argv"] is None else tuple(json.loads(row["job_kill_argv"])),
            job_deadline=row["job_deadline"],
            outcome=row["outcome"],
        )


class RentalBook:
    """The `rentals` table."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        db.executescript(SCHEMA)

    def get(self, rental_id: int) -> RentalRecord | None:
        row = self._db.execute("SELECT * FROM rentals WHERE rental_id = ?", (str(rental_id),)).fetchone()
        return None if row is None else RentalRecord.from_row(row)

    def unfinished(self) -> list[RentalRecord]:
        """Rentals not done, oldest first."""
        rows = self._db.execute("SELECT * FROM rentals WHERE phase != 'done' ORDER BY rowid").fetchall()
        return [RentalRecord.from_row(row) for row in rows]

    def apply(self, event: RentalEvent) -> bool:
        """Records a chain event (idempotent); whether it concerns a rental the agent knows."""
        match event:
            case RentalOpened():
                self._db.execute(
                    "INSERT INTO rentals (rental_id, offer_id, spec_hash, phase) VALUES (?, ?, ?, 'opened') "
                    "ON CONFLICT (rental_id) DO NOTHING",
                    (str(event.rental_id), str(event.offer_id), event.job_spec_hash),
                )
                return True
            case RentalTerminated():
                cursor = self._db.execute(
                    "UPDATE rentals SET terminated = 1, ends_at = ? WHERE rental_id = ?",
                    (event.ends_at, str(event.rental_id)),
                )
            case RentalFinalized():
                cursor = self._db.execute(
                    "UPDATE rentals SET finalized = 1 WHERE rental_id = ?", (str(event.rental_id),)
                )
        return cursor.rowcount > 0

    def mark_started(self, rental_id: int, *, since: int, ends_at: int, next_seq: int, period_start: int) -> None:
        """The rental runs on chain from `since`; reports continue at `next_seq` from `period_start`."""
        self._update(rental_id, phase=Phase.RUNNING.value, since=since, ends_at=ends_at, next_seq=next_seq,
                     period_start=period_start)

    def sync_chain(self, rental_id: int, *, ends_at: int, terminated: bool, finalized: bool) -> None:
        """Takes the end and state the chain holds now (for events missed while the agent was down)."""
        self._update(rental_id, ends_at=ends_at, terminated=int(terminated), finalized=int(finalized))

    def set_launch(self, rental_id: int, *, token: str, kill_argv: tuple[str, ...] | None,
                   deadline: float | None) -> None:
        """Remembers a job launch before the process is spawned, so a crash right after still finds it."""
        self._update(rental_id, job_token=token, job_kill_argv=None if kill_argv is None else json.dumps(kill_argv),
                     job_deadline=deadline)

    def advance(self, rental_id: int, *, next_seq: int, period_start: int, done: str | None = None) -> None:
        """Moves past a queued report; `done` (the outcome) closes the rental. Joins the caller's transaction."""
        fields: dict[str, object] = {"next_seq": next_seq, "period_start": period_start}
        if done is not None:
            fields.update(phase=Phase.DONE.value, outcome=done)
        self._update(rental_id, **fields)

    def finish(self, rental_id: int, outcome: str) -> None:
        """Closes the rental without a report."""
        self._update(rental_id, phase=Phase.DONE.value, outcome=outcome)

    def _update(self, rental_id: int, **fields: object) -> None:
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with transaction(self._db) as db:
            db.execute(f"UPDATE rentals SET {assignments} WHERE rental_id = ?", (*fields.values(), str(rental_id)))
