"""The oracle's accepted telemetry submissions in SQLite: every report it accepted, signed, for audit and the live
views, and where each stands on its way to the chain.

One connection in WAL mode with `synchronous=NORMAL`: a commit survives a crash of the oracle process (not of
the machine's power, which costs an fsync per report); agents keep every report in their outbox until an
oracle acknowledges it, and every oracle of the set holds its own copy. Statements take tens of microseconds,
so the event loop calls them directly, and the store has one user at a time. Two measured costs are kept off
the request path:
- SQLite's automatic WAL checkpoints fsync and doubled the wall time of an insert: they are off, and
  `run_checkpoints` does them from a worker thread over a second connection.
- A commit writes every page it touched; concurrent ingest requests therefore share one transaction per
  event-loop iteration (`add_in_group`), which nearly halves the cost of an insert under load. Each request
  is answered only after that commit. Every other method first commits a group that is still open.

Rows are keyed by (rental_id, seq) and kept in acceptance order (`id`). Reports are cumulative, so only a rental's
latest report ever needs to land: accepting a report supersedes the rental's earlier `held` ones, and the batcher
looks only at the `held` rows (`ReportState`), about one per rental.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Sequence

from offchain.oracle import gpuperiods
from offchain.protocol.gpustats import GpuPeriod
from offchain.protocol.messages import TelemetryReport, TelemetrySubmission
from offchain.protocol.reports import ReportStatus


class ReportState(StrEnum):
    """Where an accepted report stands: `held` waits to land, `superseded` never will (a later report of its rental
    carries its totals), `batched` is in a transaction, `landed` the chain applied (it, or a later report of the
    rental), `skipped` the chain refused (`ReportSkipped`), `dropped` the chain no longer takes (the rental is
    final) and `quarantined` will never be sent: the chain would skip it for good, its batches kept failing, or
    too many oracles refuse to co-sign it (its `quarantine_reason` says which)."""

    HELD = "held"
    SUPERSEDED = "superseded"
    BATCHED = "batched"
    LANDED = "landed"
    SKIPPED = "skipped"
    DROPPED = "dropped"
    QUARANTINED = "quarantined"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS submissions (
    id INTEGER PRIMARY KEY,
    rental_id TEXT NOT NULL,  -- decimal: uint256 does not fit SQLite's INTEGER
    seq INTEGER NOT NULL,
    period_start INTEGER NOT NULL,
    covered_until INTEGER NOT NULL,
    delivered_seconds INTEGER NOT NULL,  -- the rental's totals up to covered_until
    util_seconds INTEGER NOT NULL,
    status INTEGER NOT NULL,  -- ReportStatus
    telemetry_root BLOB NOT NULL,
    report_digest BLOB NOT NULL,  -- the agent's EIP-712 digest: equal digests mean identical reports
    signature BLOB NOT NULL,
    body BLOB NOT NULL,  -- the submission as received (JSON)
    received_at REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'held',  -- ReportState
    batched_tx_key TEXT,  -- the transaction that carries (or carried) the report to the chain
    failed_batches INTEGER NOT NULL DEFAULT 0,  -- batch transactions carrying the report that ended failed
    quarantine_reason TEXT,  -- why a `quarantined` report will never be sent
    settled_at REAL,  -- when the report last reached landed, skipped, dropped or superseded by `settle`
    UNIQUE (rental_id, seq)
);
-- Two different reports an agent signed for one (rental, seq): its provider's fault, kept as evidence.
CREATE TABLE IF NOT EXISTS equivocations (
    id INTEGER PRIMARY KEY,
    rental_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    provider TEXT NOT NULL,  -- the offer's provider, whose agent key signed both
    held_digest BLOB NOT NULL,  -- the report this oracle accepted first
    held_signature BLOB NOT NULL,
    held_body BLOB NOT NULL,
    other_digest BLOB NOT NULL,  -- the different report signed for the same seq
    other_signature BLOB NOT NULL,
    other_body BLOB NOT NULL,
    recorded_at REAL NOT NULL,
    UNIQUE (rental_id, seq, other_digest)
);
CREATE INDEX IF NOT EXISTS submissions_held ON submissions (id) WHERE state = 'held';
-- A new report supersedes its rental's held ones through this index: without it, every report of a long rental
-- scanned all the rental's earlier reports (592 us a report at 10,000 reports of one rental, against 10 us).
CREATE INDEX IF NOT EXISTS submissions_held_by_rental ON submissions (rental_id, seq) WHERE state = 'held';
CREATE INDEX IF NOT EXISTS submissions_in_flight ON submissions (rental_id, batched_tx_key) WHERE state = 'batched';
CREATE INDEX IF NOT EXISTS submissions_landed ON submissions (rental_id, covered_until) WHERE state = 'landed';
-- Finality: the batcher re-checks recent landings against the chain, and follows a batch a reorg took back.
CREATE INDEX IF NOT EXISTS submissions_recently_landed ON submissions (settled_at) WHERE state = 'landed';
CREATE INDEX IF NOT EXISTS submissions_settled_by_tx ON submissions (batched_tx_key)
    WHERE state IN ('landed', 'skipped');
"""
_INSERT = (
    "INSERT INTO submissions (rental_id, seq, period_start, covered_until, delivered_seconds, util_seconds,"
    " status, telemetry_root, report_digest, signature, body, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SUPERSEDE = "UPDATE submissions SET state = 'superseded' WHERE rental_id = ? AND state = 'held' AND seq < ?"
#: Columns added after protocol v2's first release, added to an existing database when it is opened.
_ADDED_COLUMNS = {
    "failed_batches": "INTEGER NOT NULL DEFAULT 0",
    "quarantine_reason": "TEXT",
    "settled_at": "REAL",
}


class SubmissionKey(NamedTuple):
    rental_id: int
    seq: int


class PreviousReport(NamedTuple):
    """The report a rental's next one must follow: its seq, coverage and totals, and its telemetry root (None when
    these are the chain's applied totals, whose root the oracle does not read)."""

    seq: int
    covered_until: int
    delivered_seconds: int
    util_seconds: int
    telemetry_root: bytes | None

    @classmethod
    def of(cls, report: TelemetryReport) -> PreviousReport:
        return cls(
            report.seq, report.covered_until, report.delivered_seconds, report.util_seconds, report.telemetry_root
        )


class WaitingReport(NamedTuple):
    """A rental's latest report that may land next, and up to when the rental's latest landed report covers it
    (None when none of its reports landed from this store)."""

    rental_id: int
    seq: int
    covered_until: int
    status: ReportStatus
    landed_until: int | None

    @property
    def key(self) -> SubmissionKey:
        return SubmissionKey(self.rental_id, self.seq)


class HeldReport(NamedTuple):
    report_digest: bytes
    signature: bytes


class Equivocation(NamedTuple):
    """Two different reports the agent of `provider` signed for one (rental, seq): the one held first and the other."""

    rental_id: int
    seq: int
    provider: str
    held: TelemetrySubmission
    other: TelemetrySubmission


class NewSubmission(NamedTuple):
    """A verified submission to store, with its report digest and the body it came in."""

    submission: TelemetrySubmission
    report_digest: bytes
    body: bytes


class AlreadyHeld(Exception):
    """A submission with the same (rental_id, seq) is already stored; nothing of the call was stored."""

    def __init__(self, key: SubmissionKey) -> None:
        super().__init__(f"rental {key.rental_id} seq {key.seq} is already held")
        self.key = key


class NotBatchable(Exception):
    """A key given to `mark_batched` is unknown or not held; nothing was marked."""


def key_of(submission: TelemetrySubmission) -> SubmissionKey:
    return SubmissionKey(submission.report.rental_id, submission.report.seq)


def _row(entry: NewSubmission, received_at: float) -> tuple:
    report = entry.submission.report
    return (
        str(report.rental_id),
        report.seq,
        report.period_start,
        report.covered_until,
        report.delivered_seconds,
        report.util_seconds,
        int(report.status),
        report.telemetry_root,
        entry.report_digest,
        entry.submission.signature,
        entry.body,
        received_at,
    )


class OlderStoreError(RuntimeError):
    """The database was written by an oracle of the first protocol (per-period reports), which this one cannot
    continue."""


class SubmissionStore:
    """Accepted submissions and which transaction, if any, carries each."""

    def __init__(self, path: Path | str) -> None:
        self._path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute("PRAGMA wal_autocheckpoint=0")
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(submissions)")}
        if columns and "covered_until" not in columns:
            self._db.close()
            raise OlderStoreError(
                f"{path} holds the per-period reports of the first protocol; cumulative reports settle on a new "
                "deployment: move that file aside and start the oracle with an empty state directory"
            )
        # Before the schema script: its indexes name the added columns.
        for column, definition in _ADDED_COLUMNS.items():
            if columns and column not in columns:
                self._db.execute(f"ALTER TABLE submissions ADD COLUMN {column} {definition}")
        self._db.executescript(_SCHEMA + gpuperiods.SCHEMA)
        self._checkpointer: sqlite3.Connection | None = None
        self._group: asyncio.Future[None] | None = None  # the open transaction of `add_in_group`, if any

    def close(self) -> None:
        """Closes the connections; the last one to close writes the WAL back into the database."""
        self._commit_group()
        if self._checkpointer is not None:
            self._checkpointer.close()
        self._db.close()

    def checkpoint(self) -> None:
        """Writes the WAL back into the database file without blocking the writer. Blocks on the disk: call it
        from a worker thread, one call at a time."""
        if self._checkpointer is None:
            self._checkpointer = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    async def run_checkpoints(self, interval: float, stop: asyncio.Event) -> None:
        """Checkpoints every `interval` seconds in a worker thread until `stop` is set. Stopping waits for a
        checkpoint under way, so the store can be closed as soon as this returns."""
        while not stop.is_set():
            await asyncio.to_thread(self.checkpoint)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    def held(self, key: SubmissionKey) -> HeldReport | None:
        """The digest and signature of the report held under `key`, if any."""
        row = self._db.execute(
            "SELECT report_digest, signature FROM submissions WHERE rental_id = ? AND seq = ?",
            (str(key.rental_id), key.seq),
        ).fetchone()
        return HeldReport(*row) if row else None

    def last_accepted(self, rental_id: int) -> PreviousReport | None:
        """The highest-seq report held for the rental, or None if it has none."""
        row = self._db.execute(
            "SELECT seq, covered_until, delivered_seconds, util_seconds, telemetry_root FROM submissions"
            " WHERE rental_id = ? ORDER BY seq DESC LIMIT 1",
            (str(rental_id),),
        ).fetchone()
        return PreviousReport(*row) if row else None

    def neighbours(self, rental_id: int, seq: int) -> tuple[PreviousReport | None, TelemetrySubmission | None]:
        """The rental's held reports nearest below and above `seq` (None where there is none): where a report this
        oracle lacks fits in."""
        below = self._db.execute(
            "SELECT seq, covered_until, delivered_seconds, util_seconds, telemetry_root FROM submissions"
            " WHERE rental_id = ? AND seq < ? ORDER BY seq DESC LIMIT 1",
            (str(rental_id), seq),
        ).fetchone()
        above = self._db.execute(
            "SELECT body FROM submissions WHERE rental_id = ? AND seq > ? ORDER BY seq LIMIT 1", (str(rental_id), seq)
        ).fetchone()
        return (
            PreviousReport(*below) if below else None,
            TelemetrySubmission.model_validate_json(above[0]) if above else None,
        )

    def add_superseded(self, entry: NewSubmission) -> None:
        """Stores a report that fills a gap below the rental's latest, as `superseded`: a later report carries its
        totals, so it never lands. Raises AlreadyHeld if its (rental, seq) is taken."""
        try:
            with self._transaction():
                cursor = self._db.execute(_INSERT, _row(entry, time.time()))
                self._db.execute("UPDATE submissions SET state = 'superseded' WHERE id = ?", (cursor.lastrowid,))
                gpuperiods.insert(self._db, entry.submission)
        except sqlite3.IntegrityError as exc:
            raise AlreadyHeld(key_of(entry.submission)) from exc

    def page(
        self, after: int, limit: int, rental_id: int | None = None, received_since: float = 0.0
    ) -> tuple[list[bytes], int | None]:
        """Up to `limit` submission bodies as received, of the rental (or of every rental) and received at or after
        `received_since`, in acceptance order from the row after `after`; and the cursor of the next page, None
        when this one is the last."""
        self._commit_group()
        rows = self._db.execute(
            "SELECT id, body FROM submissions WHERE id > ? AND (? IS NULL OR rental_id = ?) AND received_at >= ?"
            " ORDER BY id LIMIT ?",
            (after, None if rental_id is None else str(rental_id), str(rental_id), received_since, limit + 1),
        ).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        return [body for _, body in rows], (rows[-1][0] if more else None)

    def add(self, entries: Sequence[NewSubmission]) -> None:
        """Stores all of `entries` in one transaction, or none of them (raises AlreadyHeld)."""
        rows = [_row(e, time.time()) for e in entries]
        latest: dict[int, int] = {}
        for entry in entries:
            report = entry.submission.report
            latest[report.rental_id] = max(latest.get(report.rental_id, 0), report.seq)
        try:
            with self._transaction():
                self._db.executemany(_INSERT, rows)
                self._db.executemany(_SUPERSEDE, [(str(rental), seq) for rental, seq in latest.items()])
                for entry in entries:
                    gpuperiods.insert(self._db, entry.submission)
        except sqlite3.IntegrityError as exc:
            duplicate = next((e for e in entries if self.held(key_of(e.submission))), entries[0])
            raise AlreadyHeld(key_of(duplicate.submission)) from exc

    async def add_in_group(self, entry: NewSubmission) -> None:
        """Stores one submission in the transaction shared by all added in this event-loop iteration and returns
        once it has committed.

        The insert happens when this is called, before its first await, so a caller's checks and the insert are
        not interleaved with other requests; `held` and `last_accepted` see the row at once. Raises AlreadyHeld
        at once (the group goes on), or the commit's error, in which case nothing of the group is stored.
        """
        if self._group is None:
            self._db.execute("BEGIN IMMEDIATE")
            loop = asyncio.get_running_loop()
            self._group = loop.create_future()
            loop.call_soon(self._commit_group)
        group = self._group
        try:
            self._db.execute(_INSERT, _row(entry, time.time()))
        except sqlite3.IntegrityError as exc:
            raise AlreadyHeld(key_of(entry.submission)) from exc
        report = entry.submission.report
        self._db.execute(_SUPERSEDE, (str(report.rental_id), report.seq))
        gpuperiods.insert(self._db, entry.submission)
        await asyncio.shield(group)

    def _commit_group(self) -> None:
        group, self._group = self._group, None
        if group is None:
            return
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._db.execute("ROLLBACK")
            group.set_exception(exc)
        else:
            group.set_result(None)

    def waiting(self) -> list[WaitingReport]:
        """The `held` report of each rental that has none in a transaction, oldest first: what may land next."""
        self._commit_group()
        rows = self._db.execute(
            "SELECT s.rental_id, s.seq, s.covered_until, s.status,"
            " (SELECT MAX(l.covered_until) FROM submissions AS l WHERE l.rental_id = s.rental_id"
            "  AND l.state = 'landed')"
            " FROM submissions AS s WHERE s.state = 'held' AND NOT EXISTS (SELECT 1 FROM submissions AS b"
            "  WHERE b.rental_id = s.rental_id AND b.state = 'batched') ORDER BY s.id"
        ).fetchall()
        return [
            WaitingReport(int(rental), seq, covered_until, ReportStatus(status), landed_until)
            for rental, seq, covered_until, status, landed_until in rows
        ]

    def submissions(self, keys: Iterable[SubmissionKey]) -> list[TelemetrySubmission]:
        """The stored submissions under `keys`, in that order."""
        self._commit_group()
        found = []
        for key in keys:
            (body,) = self._db.execute(
                "SELECT body FROM submissions WHERE rental_id = ? AND seq = ?", (str(key.rental_id), key.seq)
            ).fetchone()
            found.append(TelemetrySubmission.model_validate_json(body))
        return found

    def reports(self, rental_id: int) -> list[TelemetrySubmission]:
        """Every report held for the rental, in seq order (for audit and the live views)."""
        self._commit_group()
        rows = self._db.execute(
            "SELECT body FROM submissions WHERE rental_id = ? ORDER BY seq", (str(rental_id),)
        ).fetchall()
        return [TelemetrySubmission.model_validate_json(body) for (body,) in rows]

    def gpu_periods(self, rental_id: int, since: int, limit: int) -> tuple[int | None, list[GpuPeriod]]:
        """The rental's highest seq with per-GPU figures kept here (None when none is), and its kept periods above
        seq `since`, oldest first, at most `limit` (`offchain.oracle.gpuperiods`)."""
        self._commit_group()
        return gpuperiods.read(self._db, rental_id, since, limit)

    def batched(self, tx_key: str) -> list[TelemetrySubmission]:
        """The submissions transaction `tx_key` carries and that are not settled yet, in acceptance order."""
        self._commit_group()
        rows = self._db.execute(
            "SELECT body FROM submissions WHERE state = 'batched' AND batched_tx_key = ? ORDER BY id", (tx_key,)
        ).fetchall()
        return [TelemetrySubmission.model_validate_json(body) for (body,) in rows]

    def in_flight(self) -> list[str]:
        """The keys of the transactions that carry reports not settled yet."""
        self._commit_group()
        rows = self._db.execute("SELECT DISTINCT batched_tx_key FROM submissions WHERE state = 'batched'")
        return [key for (key,) in rows.fetchall()]

    def pending_seq(self, rental_id: int) -> int | None:
        """The highest seq of the rental's reports still on their way to the chain (`held` or `batched`), or None."""
        self._commit_group()
        row = self._db.execute(
            "SELECT MAX(seq) FROM submissions WHERE rental_id = ? AND state IN ('held', 'batched')", (str(rental_id),)
        ).fetchone()
        return None if row[0] is None else int(row[0])

    def state(self, key: SubmissionKey) -> ReportState | None:
        self._commit_group()
        row = self._db.execute(
            "SELECT state FROM submissions WHERE rental_id = ? AND seq = ?", (str(key.rental_id), key.seq)
        ).fetchone()
        return ReportState(row[0]) if row else None

    def covered_stand_in(self, rental_id: int, above_seq: int, below_seq: int, covered_by: int) -> SubmissionKey | None:
        """The rental's latest superseded report with a seq between `above_seq` and `below_seq` (both excluded) whose
        coverage ends by `covered_by`: what may land in place of a later report that is ahead of the chain's clock."""
        self._commit_group()
        row = self._db.execute(
            "SELECT seq FROM submissions WHERE rental_id = ? AND state = 'superseded' AND seq > ? AND seq < ?"
            " AND covered_until <= ? ORDER BY seq DESC LIMIT 1",
            (str(rental_id), above_seq, below_seq, covered_by),
        ).fetchone()
        return None if row is None else SubmissionKey(rental_id, row[0])

    def hold_again(self, key: SubmissionKey) -> bool:
        """Puts a superseded report back to `held`, so that it can be batched; whether it was superseded."""
        with self._transaction():
            return (
                self._db.execute(
                    "UPDATE submissions SET state = 'held' WHERE rental_id = ? AND seq = ? AND state = 'superseded'",
                    (str(key.rental_id), key.seq),
                ).rowcount
                == 1
            )

    def mark_batched(self, keys: Iterable[SubmissionKey], tx_key: str) -> None:
        """Marks every key as carried by transaction `tx_key`, atomically.

        Idempotent for keys already marked with the same `tx_key`; raises NotBatchable, marking nothing, if a
        key is not held or is marked with another transaction.
        """
        with self._transaction():
            for key in keys:
                cursor = self._db.execute(
                    "UPDATE submissions SET state = 'batched', batched_tx_key = ? WHERE rental_id = ? AND seq = ?"
                    " AND (state = 'held' OR (state = 'batched' AND batched_tx_key = ?))",
                    (tx_key, str(key.rental_id), key.seq, tx_key),
                )
                if cursor.rowcount != 1:
                    raise NotBatchable(f"rental {key.rental_id} seq {key.seq}: not held or in another transaction")

    def release_batch(self, tx_key: str) -> int:
        """Returns the unsettled submissions of an abandoned transaction to `held`, or to `superseded` where a later
        report of the rental was accepted meanwhile; how many were released."""
        with self._transaction():
            return self._db.execute(
                "UPDATE submissions SET state = CASE WHEN seq = (SELECT MAX(x.seq) FROM submissions AS x"
                " WHERE x.rental_id = submissions.rental_id) THEN 'held' ELSE 'superseded' END"
                " WHERE state = 'batched' AND batched_tx_key = ?",
                (tx_key,),
            ).rowcount

    def settle(self, outcomes: Iterable[tuple[SubmissionKey, ReportState]]) -> None:
        """Records where each report ended (landed, skipped, dropped or superseded) and when, atomically."""
        now = time.time()
        with self._transaction():
            self._db.executemany(
                "UPDATE submissions SET state = ?, settled_at = ? WHERE rental_id = ? AND seq = ?",
                [(state.value, now, str(key.rental_id), key.seq) for key, state in outcomes],
            )

    def recently_landed(self, since: float) -> list[SubmissionKey]:
        """Each rental's highest-seq report settled `landed` at or after `since` (a time), oldest landing first."""
        self._commit_group()
        rows = self._db.execute(
            "SELECT rental_id, MAX(seq) FROM submissions WHERE state = 'landed' AND settled_at >= ?"
            " GROUP BY rental_id ORDER BY MIN(settled_at)",
            (since,),
        ).fetchall()
        return [SubmissionKey(int(rental), seq) for rental, seq in rows]

    def reopen_batch(self, tx_key: str) -> int:
        """Puts the reports settled from transaction `tx_key` (landed or skipped) back to `batched` under it, for a
        transaction a reorg took back that is on its way to the chain again; how many were reopened."""
        with self._transaction():
            return self._db.execute(
                "UPDATE submissions SET state = 'batched' WHERE batched_tx_key = ? AND state IN ('landed', 'skipped')",
                (tx_key,),
            ).rowcount

    def reopen_landed(self, lost: Iterable[tuple[int, int]]) -> int:
        """For each (rental id, the chain's last applied seq), puts the rental's `landed` reports above that seq,
        which the chain no longer holds, back: its latest report to `held`, the others to `superseded` (the latest
        carries their totals), so the batcher lands it again. Returns how many reports were reopened."""
        with self._transaction():
            return sum(
                self._db.execute(
                    "UPDATE submissions SET state = CASE WHEN seq = (SELECT MAX(x.seq) FROM submissions AS x"
                    " WHERE x.rental_id = submissions.rental_id) THEN 'held' ELSE 'superseded' END"
                    " WHERE rental_id = ? AND seq > ? AND state = 'landed'",
                    (str(rental_id), last_seq),
                ).rowcount
                for rental_id, last_seq in lost
            )

    def count_failed_batch(self, tx_key: str, limit: int) -> list[SubmissionKey]:
        """Counts one more failed batch for each report transaction `tx_key` carries (call it before releasing
        them); the keys of those that have now failed `limit` times."""
        with self._transaction():
            self._db.execute(
                "UPDATE submissions SET failed_batches = failed_batches + 1"
                " WHERE state = 'batched' AND batched_tx_key = ?",
                (tx_key,),
            )
            rows = self._db.execute(
                "SELECT rental_id, seq FROM submissions WHERE state = 'batched' AND batched_tx_key = ?"
                " AND failed_batches >= ?",
                (tx_key, limit),
            ).fetchall()
        return [SubmissionKey(int(rental), seq) for rental, seq in rows]

    def quarantine(self, reasons: Iterable[tuple[SubmissionKey, str]]) -> list[SubmissionKey]:
        """Quarantines each report that is still `held` with its reason, atomically; the keys it quarantined."""
        quarantined = []
        with self._transaction():
            for key, reason in reasons:
                cursor = self._db.execute(
                    "UPDATE submissions SET state = 'quarantined', quarantine_reason = ?"
                    " WHERE rental_id = ? AND seq = ? AND state = 'held'",
                    (reason, str(key.rental_id), key.seq),
                )
                if cursor.rowcount == 1:
                    quarantined.append(key)
        return quarantined

    def quarantined(self) -> list[tuple[SubmissionKey, str]]:
        """Every quarantined report with its reason, in acceptance order."""
        self._commit_group()
        rows = self._db.execute(
            "SELECT rental_id, seq, quarantine_reason FROM submissions WHERE state = 'quarantined' ORDER BY id"
        ).fetchall()
        return [(SubmissionKey(int(rental), seq), reason) for rental, seq, reason in rows]

    def record_equivocation(self, key: SubmissionKey, provider: str, other: NewSubmission) -> bool:
        """Keeps `other`, a report different from the one held under `key` and signed by the same agent, as
        evidence against `provider`; False when it was kept already."""
        with self._transaction():
            return (
                self._db.execute(
                    "INSERT OR IGNORE INTO equivocations (rental_id, seq, provider, held_digest, held_signature,"
                    " held_body, other_digest, other_signature, other_body, recorded_at)"
                    " SELECT rental_id, seq, ?, report_digest, signature, body, ?, ?, ?, ? FROM submissions"
                    " WHERE rental_id = ? AND seq = ? AND report_digest != ?",
                    (
                        provider,
                        other.report_digest,
                        other.submission.signature,
                        other.body,
                        time.time(),
                        str(key.rental_id),
                        key.seq,
                        other.report_digest,
                    ),
                ).rowcount
                == 1
            )

    def equivocations(self) -> list[Equivocation]:
        """Every recorded equivocation, oldest first."""
        self._commit_group()
        rows = self._db.execute(
            "SELECT rental_id, seq, provider, held_body, other_body FROM equivocations ORDER BY id"
        ).fetchall()
        return [
            Equivocation(
                int(rental),
                seq,
                provider,
                TelemetrySubmission.model_validate_json(held),
                TelemetrySubmission.model_validate_json(other),
            )
            for rental, seq, provider, held, other in rows
        ]

    def quarantine_counts(self) -> dict[str, int]:
        """How many reports are quarantined, by the first word of their reason (a `SkipReason` name or one of the
        batcher's `QUARANTINE_*` kinds)."""
        self._commit_group()
        counts: dict[str, int] = {}
        for (reason,) in self._db.execute("SELECT quarantine_reason FROM submissions WHERE state = 'quarantined'"):
            kind = (reason or "").split(":", 1)[0]
            counts[kind] = counts.get(kind, 0) + 1
        return counts

    def count_equivocations(self) -> int:
        self._commit_group()
        return self._db.execute("SELECT count(*) FROM equivocations").fetchone()[0]

    def count(self, state: ReportState | None = None) -> int:
        """How many reports are stored (in `state`, or in all)."""
        self._commit_group()
        if state is None:
            return self._db.execute("SELECT count(*) FROM submissions").fetchone()[0]
        return self._db.execute("SELECT count(*) FROM submissions WHERE state = ?", (state.value,)).fetchone()[0]

    def check(self) -> None:
        """Raises sqlite3.Error unless the database answers a query."""
        self._db.execute("SELECT id FROM submissions LIMIT 1").fetchall()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on an exception (the connection is in autocommit mode)."""
        self._commit_group()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
