"""The per-GPU figures of accepted reports (`offchain.protocol.gpustats`), kept in the oracle's SQLite database for
the live views between on-chain checkpoints, and bounded: a rental keeps its latest `KEPT_PERIODS` periods, and
periods that ended more than `RETENTION_SECONDS` ago (rentals settled long ago) go.

`SubmissionStore` calls `insert` in the transaction that stores the submission, so a summary is kept exactly when
its report is; only summaries that passed `Verifier.verify` get there.
"""

from __future__ import annotations

import json
import sqlite3
import time

from offchain.protocol.gpustats import GpuPeriod, GpuPeriodStats, canonical_bytes
from offchain.protocol.messages import TelemetrySubmission

#: Periods kept per rental: as many as `GET /web/api/rentals/{id}/telemetry` answers at once.
KEPT_PERIODS = 500
RETENTION_SECONDS = 7 * 24 * 3600

SCHEMA = """
CREATE TABLE IF NOT EXISTS gpu_periods (
    rental_id TEXT NOT NULL,  -- decimal
    seq INTEGER NOT NULL,
    period_start INTEGER NOT NULL,
    covered_until INTEGER NOT NULL,
    gpus BLOB NOT NULL,  -- the figures' canonical bytes (`offchain.protocol.gpustats.canonical_bytes`)
    PRIMARY KEY (rental_id, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS gpu_periods_by_end ON gpu_periods (covered_until);
"""


def insert(db: sqlite3.Connection, submission: TelemetrySubmission, now: float | None = None) -> None:
    """Keeps the submission's per-GPU figures, if it has any, and drops what falls out of the bounds as of `now`
    (Unix seconds, default the clock). Runs in the caller's transaction; a period already kept stays as it is."""
    summary = submission.gpu_summary
    if summary is None:
        return
    report = submission.report
    rental = str(report.rental_id)
    db.execute(
        "INSERT OR IGNORE INTO gpu_periods (rental_id, seq, period_start, covered_until, gpus) VALUES (?, ?, ?, ?, ?)",
        (rental, report.seq, report.period_start, report.covered_until, canonical_bytes(summary.gpus)),
    )
    db.execute(
        "DELETE FROM gpu_periods WHERE rental_id = ? AND seq <= (SELECT MAX(seq) FROM gpu_periods WHERE rental_id = ?)"
        " - ?",
        (rental, rental, KEPT_PERIODS),
    )
    db.execute(
        "DELETE FROM gpu_periods WHERE covered_until < ?", ((time.time() if now is None else now) - RETENTION_SECONDS,)
    )


def read(db: sqlite3.Connection, rental_id: int, since: int, limit: int) -> tuple[int | None, list[GpuPeriod]]:
    """The rental's highest kept seq (None when none is kept), and its kept periods above seq `since`, oldest first,
    at most `limit`."""
    rental = str(rental_id)
    (latest,) = db.execute("SELECT MAX(seq) FROM gpu_periods WHERE rental_id = ?", (rental,)).fetchone()
    rows = db.execute(
        "SELECT seq, period_start, covered_until, gpus FROM gpu_periods WHERE rental_id = ? AND seq > ?"
        " ORDER BY seq LIMIT ?",
        (rental, since, limit),
    ).fetchall()
    return latest, [
        GpuPeriod(seq, start, end, tuple(GpuPeriodStats.model_validate(g) for g in json.loads(gpus)))
        for seq, start, end, gpus in rows
    ]
