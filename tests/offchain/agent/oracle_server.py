"""A small real oracle endpoint on loopback for the agent tests: `POST /v1/telemetry` answered as the oracle
service answers it, with every request recorded.

It validates the body as a `TelemetrySubmission`, checks the agent signature, and keeps each rental's reports
in sequence: a rental's first report must have the seq after the one the chain already holds (`chain_last_seq`,
default 0), each later one the last seq + 1, starting where the last report's coverage ended and chaining its
telemetry root. Answers, with the real oracle's models and reason codes: 202 `TelemetryAck`; 200
`TelemetryAck(duplicate=True)` for an identical retry of an accepted report; `OracleError` 400 invalid_body, 401
bad_signature, 403 signer_not_agent, 409 seq_gap / period_discontinuous / prev_root_mismatch / seq_conflict, 422
with the reason in `refuse` for those seqs (a check that failed).
`fail_next` makes it answer 503 to that many requests first (a struggling oracle); `before_accept_answer` is
awaited after a report is accepted and before the 202 goes out (a crash test kills the agent there). With
`takes_gaps` it answers as an oracle of cumulative reports does: a report beyond the next seq is accepted with the
first seq it lacks in its ack (`missing_from_seq`), and a report it lacks below its latest is accepted too;
`forget` drops what it accepted of a rental, as an oracle that lost its state.

With `agent_db`, each request is also checked against the agent's SQLite outbox: the report must already be
committed there (persisted before send), and this oracle's delivery of it must not be acked yet (an acked
report is never sent again). Breaches are collected in `violations`.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable

from aiohttp import web
from eth_keys.exceptions import BadSignature
from pydantic import ValidationError

from offchain.agent.outbox import normalize_oracle_url
from offchain.protocol.messages import OracleError, RejectReason, TelemetryAck, TelemetryReport, TelemetrySubmission


@dataclass
class Answer:
    """One request and how it was answered."""

    status: int
    submission: TelemetrySubmission | None
    body: bytes


@dataclass
class RecordingOracle:
    chain_id: int
    registry: str
    agent: str
    agent_db: Path | None = None
    fail_next: int = 0
    chain_last_seq: dict[int, int] = field(default_factory=dict)
    refuse: dict[int, RejectReason] = field(default_factory=dict)
    before_accept_answer: Callable[[TelemetryReport], Awaitable[None]] | None = None
    takes_gaps: bool = False
    answers: list[Answer] = field(default_factory=list)
    accepted: dict[tuple[int, int], bytes] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self, port: int = 0) -> str:
        app = web.Application()
        app.router.add_post("/v1/telemetry", self._telemetry)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        host, bound_port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{bound_port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def accepted_reports(self, rental_id: int) -> list[TelemetryReport]:
        """The rental's reports answered 202, in the order they arrived."""
        return [
            a.submission.report
            for a in self.answers
            if a.status == 202 and a.submission is not None and a.submission.report.rental_id == rental_id
        ]

    def forget(self, rental_id: int) -> None:
        """Drops every report of the rental this oracle accepted."""
        self.accepted = {key: body for key, body in self.accepted.items() if key[0] != rental_id}

    def statuses(self) -> list[int]:
        return [a.status for a in self.answers]

    async def _telemetry(self, request: web.Request) -> web.Response:
        body = await request.read()
        status, submission, answer = self._judge(body)
        self.answers.append(Answer(status, submission, body))
        if status == 202 and self.before_accept_answer is not None:
            await self.before_accept_answer(submission.report)
        return web.Response(status=status, body=answer.model_dump_json(), content_type="application/json")

    def _judge(self, body: bytes) -> tuple[int, TelemetrySubmission | None, TelemetryAck | OracleError]:
        if self.fail_next > 0:
            self.fail_next -= 1
            return 503, None, OracleError(error=RejectReason.CHAIN_UNAVAILABLE, detail="retry later")
        try:
            submission = TelemetrySubmission.model_validate_json(body)
        except ValidationError as exc:
            return 400, None, OracleError(error=RejectReason.INVALID_BODY, detail=str(exc.errors()[0]["msg"]))
        report = submission.report
        self._check_outbox(report)
        try:
            signer = report.signer(submission.signature, self.chain_id, self.registry)
        except (BadSignature, ValueError):
            return 401, submission, OracleError(error=RejectReason.BAD_SIGNATURE, detail="not recoverable")
        if signer != self.agent:
            return 403, submission, OracleError(error=RejectReason.SIGNER_NOT_AGENT, detail=f"signed by {signer}")
        if report.seq in self.refuse:
            return 422, submission, OracleError(error=self.refuse[report.seq], detail="refused by the test")
        key = (report.rental_id, report.seq)
        if key in self.accepted:
            if self.accepted[key] == body:
                return 200, submission, TelemetryAck(rental_id=report.rental_id, seq=report.seq, duplicate=True)
            return 409, submission, OracleError(error=RejectReason.SEQ_CONFLICT, detail="another body")
        previous = self.accepted.get((report.rental_id, report.seq - 1))
        if self.takes_gaps and previous is None:
            held = [seq for rental, seq in self.accepted if rental == report.rental_id]
            last = max(held, default=self.chain_last_seq.get(report.rental_id, 0))
            self.accepted[key] = body
            missing = last + 1 if report.seq > last + 1 else None
            return 202, submission, TelemetryAck(rental_id=report.rental_id, seq=report.seq, missing_from_seq=missing)
        if report.seq > self.chain_last_seq.get(report.rental_id, 0) + 1:
            if previous is None:
                return 409, submission, OracleError(error=RejectReason.SEQ_GAP, detail=f"seq {report.seq - 1} first")
            last = TelemetrySubmission.model_validate_json(previous).report
            if report.period_start != last.covered_until:
                return (
                    409,
                    submission,
                    OracleError(
                        error=RejectReason.PERIOD_DISCONTINUOUS, detail=f"last coverage ended at {last.covered_until}"
                    ),
                )
            if report.prev_root != last.telemetry_root:
                return 409, submission, OracleError(error=RejectReason.PREV_ROOT_MISMATCH, detail="another history")
        self.accepted[key] = body
        return 202, submission, TelemetryAck(rental_id=report.rental_id, seq=report.seq)

    def _check_outbox(self, report: TelemetryReport) -> None:
        if self.agent_db is None:
            return
        db = sqlite3.connect(f"file:{self.agent_db}?mode=ro", uri=True, timeout=10.0)
        try:
            stored = db.execute(
                "SELECT 1 FROM outbox_reports WHERE rental_id = ? AND seq = ?", (str(report.rental_id), report.seq)
            ).fetchone()
            delivery = db.execute(
                "SELECT state FROM outbox_deliveries WHERE rental_id = ? AND seq = ? AND oracle = ?",
                (str(report.rental_id), report.seq, normalize_oracle_url(self.url)),
            ).fetchone()
        finally:
            db.close()
        if stored is None:
            self.violations.append(f"seq {report.seq} posted before it was committed to the outbox")
        if delivery is not None and delivery[0] != "pending":
            self.violations.append(f"seq {report.seq} posted again after this oracle's delivery was {delivery[0]}")
