"""The report outbox: every signed report is committed to SQLite before it is sent, and stays there until each
configured oracle has answered it for good.

Each report has one delivery row per oracle, `pending` until that oracle answers:

- 202 (accepted) or 200 (an identical report was already accepted) with a `TelemetryAck` of this rental and
  seq: `acked` (an answer that is not such an ack is retried: whatever answered is not the oracle). An ack with
  `missing_from_seq` says the oracle took the report across a gap (it lost its state, or missed reports): the
  rental's reports from that seq that this oracle had acked are due to it again, and it stores those it lacks;
- a 4xx refusal (`OracleError` {"error", "detail"}) is final, `rejected` with the answer kept, except
  `seq_gap` (the oracle misses an earlier seq; it can take this one once the chain settled that seq), 408 and
  429, which are retried;
- anything else (5xx such as `chain_unavailable`, a refused connection, a timeout): retried with exponential
  backoff.

Reports of one rental reach each oracle in seq order: a report is not sent to an oracle until that oracle has
acked (or rejected) the rental's previous report, so an oracle that checks period continuity sees a gap only
where it lost reports; those it says it lacks are sent again after the later one, and it fills them in.
Each oracle has its own queue; a slow or dead oracle delays no other.

A killed agent loses nothing: on restart every pending delivery is sent again. A report an oracle acked but
whose ack the agent had not yet committed is sent to that oracle once more, which the oracle answers with 200;
an oracle whose ack was committed gets the report again only if it says it lacks it. The outbox keeps every
report it queued, so it can always send again what an oracle lost.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Sequence

import aiohttp
from pydantic import ValidationError

from offchain.http import SessionOwner
from offchain.protocol.messages import OracleError, RejectReason, TelemetryAck, TelemetrySubmission
from offchain.sqlite import transaction

log = logging.getLogger(__name__)

TELEMETRY_PATH = "/v1/telemetry"
RETRYABLE_CLIENT_ERRORS = frozenset({408, 429})
RETRYABLE_REASONS = frozenset({RejectReason.SEQ_GAP, RejectReason.CHAIN_UNAVAILABLE})
_MAX_ANSWER_BYTES = 64 * 1024
_MAX_ERROR_CHARS = 500  # of an answer kept in the database

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox_reports (
    rental_id   TEXT    NOT NULL,  -- decimal: rental ids do not fit SQLite's 64-bit integers
    seq         INTEGER NOT NULL,
    body        TEXT    NOT NULL,  -- the TelemetrySubmission JSON, sent byte for byte on every attempt
    created_at  REAL    NOT NULL,
    PRIMARY KEY (rental_id, seq)
);
CREATE TABLE IF NOT EXISTS outbox_deliveries (
    rental_id       TEXT    NOT NULL,
    seq             INTEGER NOT NULL,
    oracle          TEXT    NOT NULL,
    state           TEXT    NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'acked', 'rejected')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL    NOT NULL,
    http_status     INTEGER,
    last_error      TEXT,
    done_at         REAL,
    PRIMARY KEY (rental_id, seq, oracle),
    FOREIGN KEY (rental_id, seq) REFERENCES outbox_reports (rental_id, seq)
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox_deliveries (oracle, state, rental_id, seq);
"""


class OutboxConflict(Exception):
    """A different report was already queued under the same rental and seq."""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: `initial * 2**(attempts-1)` seconds capped at `maximum`, scaled by a random factor
    in [1 - jitter, 1] so that agents restarted together do not retry in step."""

    initial_seconds: float = 1.0
    maximum_seconds: float = 60.0
    jitter: float = 0.2

    def delay(self, attempts: int) -> float:
        base = min(self.maximum_seconds, self.initial_seconds * 2 ** max(0, attempts - 1))
        return base * (1 - self.jitter * random.random())


@dataclass(frozen=True)
class Delivery:
    """One report due for one oracle."""

    rental_id: int
    seq: int
    oracle: str
    body: str
    attempts: int


def _reason(body: str) -> RejectReason | None:
    """The reason code of an oracle refusal, or None when the body is not an `OracleError`."""
    try:
        return OracleError.model_validate_json(body).error
    except ValidationError:
        return None


def _ack(body: str, delivery: Delivery) -> TelemetryAck | None:
    """An oracle's 200/202 body if it acknowledges this delivery's report, else None."""
    try:
        ack = TelemetryAck.model_validate_json(body)
    except ValidationError:
        return None
    return ack if ack.accepted and (ack.rental_id, ack.seq) == (delivery.rental_id, delivery.seq) else None


def normalize_oracle_url(url: str) -> str:
    """An oracle's base URL without the trailing slash, as delivery rows key it."""
    return url.rstrip("/")


class Outbox(SessionOwner):
    """The durable queue of reports to the oracles. Use as `async with Outbox(...) as outbox:`; `enqueue` reports
    and `run` the delivery loop (or call `deliver_due` yourself)."""

    def __init__(
        self,
        db: sqlite3.Connection,
        oracles: Sequence[str],
        *,
        retry: RetryPolicy = RetryPolicy(),
        request_timeout_seconds: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not oracles:
            raise ValueError("configure at least one oracle")
        super().__init__(aiohttp.ClientTimeout(total=request_timeout_seconds))
        self._db = db
        self._oracles = tuple(dict.fromkeys(normalize_oracle_url(o) for o in oracles))
        self._retry = retry
        self._clock = clock
        self._wakeups = {oracle: asyncio.Event() for oracle in self._oracles}
        db.executescript(SCHEMA)

    @property
    def oracles(self) -> tuple[str, ...]:
        return self._oracles

    def enqueue(self, submission: TelemetrySubmission) -> None:
        """Commits a report with a pending delivery to every oracle; inside the caller's transaction if one is
        open, so the caller can commit the report together with what it consumed. Queuing the same report
        again changes nothing; a different report under the same rental and seq raises `OutboxConflict`."""
        report = submission.report
        rental_id, seq = str(report.rental_id), report.seq
        body = submission.model_dump_json()
        with transaction(self._db) as db:
            existing = db.execute(
                "SELECT body FROM outbox_reports WHERE rental_id = ? AND seq = ?", (rental_id, seq)
            ).fetchone()
            if existing is not None:
                if existing["body"] != body:
                    raise OutboxConflict(f"rental {rental_id} seq {seq} is already queued with another body")
                return
            now = self._clock()
            db.execute(
                "INSERT INTO outbox_reports (rental_id, seq, body, created_at) VALUES (?, ?, ?, ?)",
                (rental_id, seq, body, now),
            )
            db.executemany(
                "INSERT INTO outbox_deliveries (rental_id, seq, oracle, next_attempt_at) VALUES (?, ?, ?, ?)",
                [(rental_id, seq, oracle, now) for oracle in self._oracles],
            )
        for wakeup in self._wakeups.values():
            wakeup.set()

    def due(self, oracle: str | None = None) -> list[Delivery]:
        """Deliveries that may be sent now (to `oracle`, or to any): per oracle and rental, the lowest pending
        seq, once its backoff has passed."""
        rows = self._db.execute(
            """
            SELECT d.rental_id, d.seq, d.oracle, d.attempts, r.body
            FROM outbox_deliveries AS d JOIN outbox_reports AS r USING (rental_id, seq)
            WHERE d.state = 'pending' AND d.next_attempt_at <= ? AND (? IS NULL OR d.oracle = ?)
              AND d.seq = (SELECT MIN(x.seq) FROM outbox_deliveries AS x
                           WHERE x.rental_id = d.rental_id AND x.oracle = d.oracle AND x.state = 'pending')
            ORDER BY d.oracle, d.rental_id, d.seq
            """,
            (self._clock(), oracle, oracle),
        ).fetchall()
        return [Delivery(int(r["rental_id"]), r["seq"], r["oracle"], r["body"], r["attempts"]) for r in rows]

    def pending_count(self) -> int:
        """Deliveries not yet answered for good."""
        return self._db.execute("SELECT COUNT(*) FROM outbox_deliveries WHERE state = 'pending'").fetchone()[0]

    def next_attempt_at(self, oracle: str) -> float | None:
        """When the earliest pending delivery to `oracle` may be sent, or None when none is pending."""
        return self._db.execute(
            "SELECT MIN(next_attempt_at) FROM outbox_deliveries WHERE state = 'pending' AND oracle = ?", (oracle,)
        ).fetchone()[0]

    def delivery_states(self, rental_id: int) -> dict[tuple[int, str], str]:
        """(seq, oracle) -> state for every delivery of a rental."""
        rows = self._db.execute(
            "SELECT seq, oracle, state FROM outbox_deliveries WHERE rental_id = ?", (str(rental_id),)
        ).fetchall()
        return {(r["seq"], r["oracle"]): r["state"] for r in rows}

    async def deliver_due(self, oracle: str | None = None) -> int:
        """Sends every due delivery (to `oracle`, or to every oracle) once and returns how many were attempted.
        Each oracle's deliveries go one after another; different oracles' in parallel."""
        by_oracle: dict[str, list[Delivery]] = defaultdict(list)
        for delivery in self.due(oracle):
            by_oracle[delivery.oracle].append(delivery)
        await asyncio.gather(*(self._deliver_in_order(deliveries) for deliveries in by_oracle.values()))
        return sum(len(deliveries) for deliveries in by_oracle.values())

    async def run(self, idle_poll_seconds: float = 1.0) -> None:
        """Delivers for ever, one loop per oracle: each sends what is due to its oracle, then sleeps until its
        next retry, a new report, or at most `idle_poll_seconds`."""
        async with asyncio.TaskGroup() as group:
            for oracle in self._oracles:
                group.create_task(self._run_oracle(oracle, idle_poll_seconds))

    async def _run_oracle(self, oracle: str, idle_poll_seconds: float) -> None:
        wakeup = self._wakeups[oracle]
        while True:
            wakeup.clear()
            if await self.deliver_due(oracle):
                continue
            next_at = self.next_attempt_at(oracle)
            sleep = idle_poll_seconds if next_at is None else min(idle_poll_seconds, next_at - self._clock())
            if sleep > 0:
                try:
                    await asyncio.wait_for(wakeup.wait(), sleep)
                except TimeoutError:
                    pass

    async def _deliver_in_order(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            await self._deliver(delivery)

    async def _deliver(self, delivery: Delivery) -> None:
        if self._session is None:
            raise RuntimeError("use the outbox as `async with Outbox(...)`")
        url = delivery.oracle + TELEMETRY_PATH
        try:
            async with self._session.post(
                url, data=delivery.body.encode(), headers={"Content-Type": "application/json"}
            ) as response:
                status = response.status
                text = (await response.content.read(_MAX_ANSWER_BYTES)).decode(errors="replace")
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._record_retry(delivery, None, f"{type(exc).__name__}: {exc}")
            return
        if status in (200, 202):
            ack = _ack(text, delivery)
            if ack is not None:
                with transaction(self._db):
                    self._record_final(delivery, "acked", status, None)
                    if ack.missing_from_seq is not None and ack.missing_from_seq < delivery.seq:
                        self._send_again(delivery, ack.missing_from_seq)
            else:
                self._record_retry(delivery, status, f"not an ack of this report: {text[:_MAX_ERROR_CHARS]}")
        elif 400 <= status < 500 and status not in RETRYABLE_CLIENT_ERRORS and _reason(text) not in RETRYABLE_REASONS:
            log.error(
                "oracle %s rejected rental %d seq %d: %d %s",
                delivery.oracle,
                delivery.rental_id,
                delivery.seq,
                status,
                text[:_MAX_ERROR_CHARS],
            )
            self._record_final(delivery, "rejected", status, text[:_MAX_ERROR_CHARS])
        else:
            self._record_retry(delivery, status, text[:_MAX_ERROR_CHARS])

    def _record_final(self, delivery: Delivery, state: str, status: int, error: str | None) -> None:
        self._db.execute(
            """UPDATE outbox_deliveries SET state = ?, attempts = attempts + 1, http_status = ?, last_error = ?,
                   done_at = ? WHERE rental_id = ? AND seq = ? AND oracle = ?""",
            (state, status, error, self._clock(), str(delivery.rental_id), delivery.seq, delivery.oracle),
        )

    def _send_again(self, delivery: Delivery, from_seq: int) -> None:
        """Makes the rental's reports from `from_seq` below `delivery`'s, which its oracle had acked and now lacks,
        due to that oracle again (oldest first, before any later report)."""
        resent = self._db.execute(
            """UPDATE outbox_deliveries SET state = 'pending', next_attempt_at = ?, done_at = NULL
               WHERE rental_id = ? AND oracle = ? AND seq >= ? AND seq < ? AND state = 'acked'""",
            (self._clock(), str(delivery.rental_id), delivery.oracle, from_seq, delivery.seq),
        ).rowcount
        if resent:
            log.warning(
                "oracle %s lacks rental %d from seq %d: sending %d acked report(s) again",
                delivery.oracle,
                delivery.rental_id,
                from_seq,
                resent,
            )
        self._wakeups[delivery.oracle].set()

    def _record_retry(self, delivery: Delivery, status: int | None, error: str) -> None:
        attempts = delivery.attempts + 1
        delay = self._retry.delay(attempts)
        log.warning(
            "oracle %s: rental %d seq %d attempt %d failed (%s %s); retrying in %.1f s",
            delivery.oracle,
            delivery.rental_id,
            delivery.seq,
            attempts,
            status,
            error,
            delay,
        )
        self._db.execute(
            """UPDATE outbox_deliveries SET attempts = ?, http_status = ?, last_error = ?, next_attempt_at = ?
               WHERE rental_id = ? AND seq = ? AND oracle = ?""",
            (attempts, status, error, self._clock() + delay, str(delivery.rental_id), delivery.seq, delivery.oracle),
        )
