"""The oracle's HTTP service (aiohttp): telemetry ingest, co-signing, the held reports, health and metrics.

`create_app` builds the application from `OracleSettings`; the chain view, store, metrics and clock can be
injected (tests, benchmarks), and whatever the app creates itself it also closes. Resources live in a
`cleanup_ctx`: the node connection, the SQLite store, the chain follower and the WAL checkpoint tasks start
before the first request and are released after the last in-flight request has finished. With `settings.peers`,
the app also recovers from its peers what it lacks (`offchain.oracle.recovery`): everything they hold, once at
start, in the background, and a rental's reports when one of them arrives across a gap. With `settings.web`
the read-only marketplace page (`offchain.web`) is served under `/web/` as well, from its own event index.

Every refusal is JSON `OracleError` {"error": reason code, "detail": text}: 400 for a body that is not the
model, 401/403/404/409/413/422 for failed checks, 503 when the chain cannot be read. A rejected request leaves
nothing behind.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from typing import AsyncIterator, Callable, TypeVar

import aiohttp
from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from offchain.chain.rpc import ChainUnreachable, connect
from offchain.config import OracleSettings
from offchain.oracle.chainview import DEFAULT_POLL_INTERVAL_SECONDS, ChainView
from offchain.oracle.cosign import COSIGN_PATH, Cosigner
from offchain.oracle.ingest import Ingest
from offchain.oracle.metrics import CONTENT_TYPE, OracleMetrics
from offchain.oracle.recovery import MAX_PAGE_REPORTS, REPORTS_PATH, PeerRecovery
from offchain.oracle.store import SubmissionStore
from offchain.oracle.verify import Rejected, Verifier, VerifyPolicy
from offchain.protocol.digest import TelemetryDomain
from offchain.protocol.messages import (
    CosignRequest,
    OracleError,
    RejectReason,
    TelemetrySubmission,
    ValidationIssue,
)
from offchain.protocol.reports import BatchSigner
from offchain.web.app import create_web_app, deployment_of, mount

log = logging.getLogger(__name__)

TELEMETRY_PATH = "/v1/telemetry"
DB_FILENAME = "oracle.sqlite3"
HEALTH_TIMEOUT_SECONDS = 2.0
CHECKPOINT_INTERVAL_SECONDS = 1.0
MAX_REPORTED_ISSUES = 20

SETTINGS = web.AppKey("settings", OracleSettings)
METRICS = web.AppKey("metrics", OracleMetrics)
CHAIN = web.AppKey("chain", ChainView)
STORE = web.AppKey("store", SubmissionStore)
INGEST = web.AppKey("ingest", Ingest)
COSIGNER = web.AppKey("cosigner", Cosigner)

M = TypeVar("M", bound=BaseModel)


class ComponentHealth(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ok: bool
    block: int | None = None
    error: str | None = None


class Health(BaseModel):
    """The body of `GET /healthz` (200 when both parts are ok, else 503)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ok: bool
    chain: ComponentHealth
    db: ComponentHealth


def cosign_body_limit(settings: OracleSettings) -> int:
    """A cosign body carries up to `max_batch_reports` submissions of at most `max_body_bytes` each."""
    return settings.max_body_bytes * settings.max_batch_reports


def create_app(
    settings: OracleSettings,
    *,
    chain: ChainView | None = None,
    store: SubmissionStore | None = None,
    metrics: OracleMetrics | None = None,
    policy: VerifyPolicy | None = None,
    clock: Callable[[], float] = time.time,
    poll_interval: float = DEFAULT_POLL_INTERVAL_SECONDS,
) -> web.Application:
    """The oracle application. Without `chain` it connects to `settings.chain.rpc_url`; without `store` it opens
    `settings.state_dir / "oracle.sqlite3"`; `clock` (Unix seconds) is what report times are checked against."""
    app = web.Application(client_max_size=max(settings.max_body_bytes, cosign_body_limit(settings)))
    app[SETTINGS] = settings
    app[METRICS] = metrics or OracleMetrics()
    policy = policy or VerifyPolicy.from_settings(settings)

    async def resources(app: web.Application) -> AsyncIterator[None]:
        w3 = None
        if chain is None:
            w3 = connect(settings.chain.rpc_url)
            app[CHAIN] = ChainView(w3, settings.chain)
        else:
            app[CHAIN] = chain
        if store is None:
            settings.state_dir.mkdir(parents=True, exist_ok=True)
            app[STORE] = SubmissionStore(settings.state_dir / DB_FILENAME)
        else:
            app[STORE] = store
        domain = TelemetryDomain(settings.chain.chain_id, settings.chain.registry)
        verifier = Verifier(app[CHAIN], policy, domain, clock)
        app[INGEST] = Ingest(verifier, app[STORE], domain)
        app[COSIGNER] = Cosigner(
            verifier,
            app[STORE],
            app[CHAIN],
            domain,
            BatchSigner(settings.private_key, settings.chain.chain_id, settings.chain.escrow),
            settings.max_batch_reports,
        )
        await app[CHAIN].start_following()
        follower = asyncio.create_task(app[CHAIN].follow(poll_interval), name="chain follower")
        stop_checkpoints = asyncio.Event()
        checkpoints = asyncio.create_task(
            app[STORE].run_checkpoints(CHECKPOINT_INTERVAL_SECONDS, stop_checkpoints), name="sqlite checkpoints"
        )
        session = aiohttp.ClientSession()
        background: list[asyncio.Task] = [follower]
        if settings.peers and settings.recovery_max_pages:
            recovery = PeerRecovery(
                app[INGEST],
                settings.peers,
                session,
                max_report_age_seconds=policy.max_report_age_seconds,
                max_body_bytes=settings.max_body_bytes,
                max_pages=settings.recovery_max_pages,
                timeout=settings.recovery_timeout_seconds,
                clock=clock,
            )
            app[INGEST].gap_filler = recovery.fill
            background.append(asyncio.create_task(recovery.recover(), name="recovery from peers"))
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            stop_checkpoints.set()
            await asyncio.gather(*background, checkpoints, return_exceptions=True)
            await session.close()
            if store is None:
                app[STORE].close()
            if w3 is not None:
                await w3.provider.disconnect()

    app.cleanup_ctx.append(resources)
    if settings.web:
        mount(
            app,
            create_web_app(
                settings.chain.rpc_url,
                deployment_of(settings.chain),
                confirmations=settings.web_confirmations,
                gpu_periods=lambda rental_id, since, limit: app[STORE].gpu_periods(rental_id, since, limit),
            ),
        )
    app.router.add_post(TELEMETRY_PATH, post_telemetry)
    app.router.add_post(COSIGN_PATH, post_cosign)
    app.router.add_get(REPORTS_PATH, get_reports)
    app.router.add_get("/healthz", get_healthz)
    app.router.add_get("/metrics", get_metrics)
    return app


async def post_telemetry(request: web.Request) -> web.Response:
    """An agent's signed report: 202 accepted, 200 already held (duplicate), or a refusal."""
    app = request.app
    metrics = app[METRICS]
    started = time.perf_counter()
    try:
        body = await _read_body(request, app[SETTINGS].max_body_bytes)
        submission = _parse(TelemetrySubmission, body)
        ack = await app[INGEST].submit(submission, body)
    except (Rejected, ChainUnreachable) as exc:
        rejected = _as_rejected(exc)
        metrics.reports_rejected.inc(rejected.reason.value)
        response = _error_response(rejected)
    else:
        (metrics.reports_duplicate if ack.duplicate else metrics.reports_accepted).inc()
        response = _json_response(ack, 200 if ack.duplicate else 202)
    metrics.ingest_seconds.observe(time.perf_counter() - started)
    return response


async def post_cosign(request: web.Request) -> web.Response:
    """A submitting oracle's batch: 200 with this oracle's signature, or a refusal naming the submission at fault."""
    app = request.app
    try:
        body = await _read_body(request, cosign_body_limit(app[SETTINGS]))
        cosign_request = _parse(CosignRequest, body)
        answer = await app[COSIGNER].cosign(cosign_request)
    except (Rejected, ChainUnreachable) as exc:
        rejected = _as_rejected(exc)
        app[METRICS].cosign_requests.inc(rejected.reason.value)
        return _error_response(rejected)
    app[METRICS].cosign_requests.inc("signed")
    return _json_response(answer, 200)


async def get_reports(request: web.Request) -> web.Response:
    """The agent-signed submissions this oracle holds, as it received them, in the order it accepted them:
    `after` (a cursor, 0 for the first page), `limit` (at most MAX_PAGE_REPORTS), `rental_id` (one rental's
    only), `since` (received at or after this Unix time). A peer takes them as it would from their agent
    (`offchain.oracle.recovery`); they carry only what agents signed for the oracles."""
    try:
        after = _query_int(request, "after", 0, 2**63 - 1) or 0
        limit = _query_int(request, "limit", 1, MAX_PAGE_REPORTS) or MAX_PAGE_REPORTS
        since = _query_int(request, "since", 0, 2**63 - 1) or 0
        rental_id = _query_int(request, "rental_id", 0, 2**256 - 1)
    except Rejected as exc:
        return _error_response(exc)
    bodies, next_after = request.app[STORE].page(after, limit, rental_id, since)
    cursor = b"null" if next_after is None else str(next_after).encode()
    body = b'{"submissions":[' + b",".join(bodies) + b'],"next_after":' + cursor + b"}"
    return web.Response(body=body, content_type="application/json")


def _query_int(request: web.Request, name: str, low: int, high: int) -> int | None:
    """The query parameter `name` as a decimal integer in [low, high], or None when absent."""
    raw = request.query.get(name)
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 78 or not low <= int(raw) <= high:
        raise Rejected(RejectReason.INVALID_QUERY, f"{name} must be a decimal integer from {low} to {high}")
    return int(raw)


async def get_healthz(request: web.Request) -> web.Response:
    app = request.app
    try:
        block = await asyncio.wait_for(app[CHAIN].block_number(), HEALTH_TIMEOUT_SECONDS)
        chain = ComponentHealth(ok=True, block=block)
    except (ChainUnreachable, asyncio.TimeoutError) as exc:
        chain = ComponentHealth(ok=False, error=f"{type(exc).__name__}: {exc}")
    try:
        app[STORE].check()
        db = ComponentHealth(ok=True)
    except sqlite3.Error as exc:
        db = ComponentHealth(ok=False, error=f"{type(exc).__name__}: {exc}")
    health = Health(ok=chain.ok and db.ok, chain=chain, db=db)
    return _json_response(health, 200 if health.ok else 503)


async def get_metrics(request: web.Request) -> web.Response:
    store = request.app[STORE]
    request.app[METRICS].observe_quarantine(store.quarantine_counts(), store.count_equivocations())
    return web.Response(body=request.app[METRICS].render().encode(), headers={"Content-Type": CONTENT_TYPE})


async def _read_body(request: web.Request, limit: int) -> bytes:
    too_large = Rejected(RejectReason.BODY_TOO_LARGE, f"the body exceeds {limit} bytes")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large from None
    if len(body) > limit:
        raise too_large
    return body


def _parse(model: type[M], body: bytes) -> M:
    """The body as `model` in strict mode (no coercion of strings to numbers and the like), or INVALID_BODY."""
    try:
        return model.model_validate_json(body, strict=True)
    except ValidationError as exc:
        issues = exc.errors(include_url=False, include_input=False, include_context=False)
        summary = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in issues[:3])
        more = f" (and {len(issues) - 3} more)" if len(issues) > 3 else ""
        raise Rejected(
            RejectReason.INVALID_BODY,
            f"{exc.error_count()} validation error(s): {summary}{more}",
            tuple(ValidationIssue(loc=e["loc"], type=e["type"], msg=e["msg"]) for e in issues[:MAX_REPORTED_ISSUES]),
        ) from None


def _as_rejected(exc: Rejected | ChainUnreachable) -> Rejected:
    if isinstance(exc, ChainUnreachable):
        log.warning("chain unreachable: %s", exc)
        return Rejected(RejectReason.CHAIN_UNAVAILABLE, "the oracle cannot read the chain now; retry later")
    return exc


def _error_response(rejected: Rejected) -> web.Response:
    error = OracleError(error=rejected.reason, detail=rejected.detail, errors=rejected.errors, index=rejected.index)
    return _json_response(error, rejected.status)


def _json_response(model: BaseModel, status: int) -> web.Response:
    return web.Response(
        body=model.model_dump_json(exclude_none=True).encode(), status=status, content_type="application/json"
    )
