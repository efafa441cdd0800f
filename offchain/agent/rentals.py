"""What the agent remembers of each rental of its offers, in SQLite, so that a restarted agent resumes where it
stopped: the phase, the start time and end from the chain, the next report's seq and period start, the rental's
cumulative totals and the telemetry root of its last report, the job's container (or bare process token), how the
job ended, and a decline it decided on.

Phases move forward only: `opened` (seen on chain, not started by the agent yet) -> `running` (started on
chain; the job runs and reports flow) -> `done` (nothing more to do; its reports may still be in the outbox, its
folder stays until the retention period has passed). `next_seq`, `period_start`, the totals and the last root
advance in the same transaction that queues each report in the outbox, and the job's outcome is written in the one
that queues its completion. The utilisation-weighted total is kept as an exact fraction, so no report's rounding
carries into the next.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction
from typing import Callable

from offchain.agent.watcher import WatchedEvent
from offchain.chain.events import RentalFinalized, RentalOpened, RentalTerminated
from offchain.protocol.messages import ZERO_ROOT
from offchain.sqlite import add_missing_columns, transaction
from offchain.telemetry.window import UsageTotals

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
    job_token     TEXT,                 -- GPUEX_JOB_TOKEN of the latest bare-process launch
    job_deadline  REAL,                 -- unix time the job times out, fixed at its first launch
    outcome       TEXT                  -- why the rental is done, for operators
);
"""
#: Columns added after the first release; `RentalBook` adds them to an older database.
LATER_COLUMNS = {
    "renter": "TEXT",  # who opened it (RentalOpened), the only one the renter API answers
    "container": "TEXT",  # name of the latest launch's container
    "gpus": "TEXT",  # JSON list: the UUIDs of the GPUs the job runs on
    "isolation": "TEXT",  # 'container' or 'bare-process'
    "exit_code": "INTEGER",  # how the job ended, once it has
    "job_reason": "TEXT",  # why it failed, for the renter
    "result_digest": "BLOB",  # the completion report's: keccak256 of results.tar, or of stdout
    "job_finished_at": "REAL",
    "decline_reason": "INTEGER",  # DeclineReason the agent decided on, sent until the chain has it
    "decline_detail": "TEXT",
    "start_confirmed_at": "REAL",  # when the agent saw the rental running on chain (its start receipt)
    "job_started_at": "REAL",  # when the latest launch began running
    "done_at": "REAL",  # when the phase became done
    "cleaned_at": "REAL",  # when its folder was removed
    "delivered_total": "INTEGER",  # delivered seconds the reports queued so far carry in total
    "util_total": "TEXT",  # their utilisation-weighted seconds, exactly: a fraction 'numerator/denominator'
    "prev_root": "BLOB",  # the telemetry root of the last report queued, which the next one chains
}
#: Later columns that `RentalRecord` holds as a record of their own rather than one field each.
_TOTALS_COLUMNS = ("delivered_total", "util_total", "prev_root")


@dataclass(frozen=True)
class JobExit:
    """How a job ended, as the book keeps it."""

    exit_code: int
    reason: str | None
    finished_at: float | None
    result_digest: bytes

    def fields(self) -> dict[str, object]:
        return {
            "exit_code": self.exit_code,
            "job_reason": self.reason,
            "job_finished_at": self.finished_at,
            "result_digest": self.result_digest,
        }


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
    job_deadline: float | None
    outcome: str | None
    renter: str | None
    container: str | None
    gpus: tuple[str, ...]
    isolation: str | None
    exit_code: int | None
    job_reason: str | None
    result_digest: bytes | None
    job_finished_at: float | None
    decline_reason: int | None
    decline_detail: str | None
    start_confirmed_at: float | None
    job_started_at: float | None
    done_at: float | None
    cleaned_at: float | None
    totals: UsageTotals  # of the reports queued so far
    prev_root: bytes  # the telemetry root of the last report queued (zero before the first)

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
            job_deadline=row["job_deadline"],
            outcome=row["outcome"],
            **{name: row[name] for name in LATER_COLUMNS if name not in ("result_digest", "gpus", *_TOTALS_COLUMNS)},
            result_digest=None if row["result_digest"] is None else bytes(row["result_digest"]),
            gpus=tuple(json.loads(row["gpus"])) if row["gpus"] else (),
            totals=UsageTotals(
                delivered_seconds=row["delivered_total"] or 0, util_seconds=Fraction(row["util_total"] or 0)
            ),
            prev_root=ZERO_ROOT if row["prev_root"] is None else bytes(row["prev_root"]),
        )


class RentalBook:
    """The `rentals` table."""

    def __init__(self, db: sqlite3.Connection, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock
        db.executescript(SCHEMA)
        add_missing_columns(db, "rentals", LATER_COLUMNS)

    def get(self, rental_id: int) -> RentalRecord | None:
        row = self._db.execute("SELECT * FROM rentals WHERE rental_id = ?", (str(rental_id),)).fetchone()
        return None if row is None else RentalRecord.from_row(row)

    def by_container(self, name: str) -> RentalRecord | None:
        """The rental whose latest launch is the container `name`."""
        row = self._db.execute("SELECT * FROM rentals WHERE container = ?", (name,)).fetchone()
        return None if row is None else RentalRecord.from_row(row)

    def unfinished(self) -> list[RentalRecord]:
        """Rentals not done, oldest first."""
        rows = self._db.execute("SELECT * FROM rentals WHERE phase != 'done' ORDER BY rowid").fetchall()
        return [RentalRecord.from_row(row) for row in rows]

    def expired_folders(self, done_before: float) -> list[RentalRecord]:
        """Done rentals whose folder is still there, done before `done_before`."""
        rows = self._db.execute(
            "SELECT * FROM rentals WHERE phase = 'done' AND cleaned_at IS NULL AND done_at IS NOT NULL "
            "AND done_at < ? ORDER BY done_at",
            (done_before,),
        ).fetchall()
        return [RentalRecord.from_row(row) for row in rows]

    def apply(self, event: WatchedEvent) -> bool:
        """Records a chain event (idempotent); whether it concerns a rental the agent knows."""
        match event:
            case RentalOpened():
                self._db.execute(
                    "INSERT INTO rentals (rental_id, offer_id, spec_hash, phase, renter) "
                    "VALUES (?, ?, ?, 'opened', ?) ON CONFLICT (rental_id) DO NOTHING",
                    (str(event.rental_id), str(event.offer_id), event.job_spec_hash, event.renter),
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

    def mark_started(
        self,
        rental_id: int,
        *,
        since: int,
        ends_at: int,
        next_seq: int,
        period_start: int,
        totals: UsageTotals,
        prev_root: bytes,
    ) -> None:
        """The rental runs on chain from `since`; reports continue at `next_seq` from `period_start`, adding to
        `totals` and chaining `prev_root`."""
        self._update(
            rental_id,
            phase=Phase.RUNNING.value,
            since=since,
            ends_at=ends_at,
            next_seq=next_seq,
            period_start=period_start,
            start_confirmed_at=self._clock(),
            **_totals_fields(totals, prev_root),
        )

    def sync_chain(self, rental_id: int, *, ends_at: int, terminated: bool, finalized: bool) -> None:
        """Takes the end and state the chain holds now (for events missed while the agent was down)."""
        self._update(rental_id, ends_at=ends_at, terminated=int(terminated), finalized=int(finalized))

    def set_launch(
        self,
        rental_id: int,
        *,
        isolation: str,
        container: str | None,
        token: str | None,
        deadline: float | None,
        gpus: tuple[str, ...],
    ) -> None:
        """Remembers a job launch before it is made, so a crash right after still finds it."""
        self._update(
            rental_id,
            isolation=isolation,
            container=container,
            job_token=token,
            job_deadline=deadline,
            gpus=json.dumps(list(gpus)),
        )

    def set_job_started(self, rental_id: int, started_at: float | None) -> None:
        """When the latest launch began running."""
        self._update(rental_id, job_started_at=started_at)

    def set_decline(self, rental_id: int, reason: int, detail: str) -> None:
        """Remembers the decision to decline the rental, so a restarted agent sends the same decline."""
        self._update(rental_id, decline_reason=reason, decline_detail=detail)

    def advance(
        self,
        rental_id: int,
        *,
        next_seq: int,
        period_start: int,
        totals: UsageTotals,
        prev_root: bytes,
        done: str | None = None,
        job_exit: JobExit | None = None,
    ) -> None:
        """Moves past a queued report, which carried `totals` and the telemetry root `prev_root`; `done` (the
        outcome) closes the rental, with how its job ended if it did. Joins the caller's transaction."""
        fields: dict[str, object] = {
            "next_seq": next_seq,
            "period_start": period_start,
            **_totals_fields(totals, prev_root),
        }
        if done is not None:
            fields.update(phase=Phase.DONE.value, outcome=done, done_at=self._clock())
        if job_exit is not None:
            fields.update(job_exit.fields())
        self._update(rental_id, **fields)

    def record_exit(self, rental_id: int, job_exit: JobExit) -> None:
        """How the job ended, for a rental that sends no completion report for it."""
        self._update(rental_id, **job_exit.fields())

    def finish(self, rental_id: int, outcome: str) -> None:
        """Closes the rental without a report."""
        self._update(rental_id, phase=Phase.DONE.value, outcome=outcome, done_at=self._clock())

    def mark_cleaned(self, rental_id: int) -> None:
        """The rental's folder was removed."""
        self._update(rental_id, cleaned_at=self._clock())

    def _update(self, rental_id: int, **fields: object) -> None:
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with transaction(self._db) as db:
            db.execute(f"UPDATE rentals SET {assignments} WHERE rental_id = ?", (*fields.values(), str(rental_id)))


def _totals_fields(totals: UsageTotals, prev_root: bytes) -> dict[str, object]:
    return {"delivered_total": totals.delivered_seconds, "util_total": str(totals.util_seconds), "prev_root": prev_root}
