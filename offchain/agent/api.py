"""The renter API the agent serves (aiohttp): a rental's renter uploads its job spec privately, reads its job's
status and logs, downloads its results and opens a shell in its running container. `offchain.protocol.renterapi` defines
the paths, the wire models and the request signatures; this module answers them. `GET /v1/agent`, unsigned, says
who the agent is and how its machine's clock stands against the chain's (`offchain.agent.chainclock`).

Every rental request is checked in this order, and a refused one changes nothing: a valid EIP-712 signature whose
expiry has not passed and is at most five minutes ahead (401); a rental of this agent's provider (404); signed by
that rental's renter, as the `RentalOpened` event named it (403); a nonce never seen before (401), kept in the
agent's SQLite until its expiry has passed, so that a restarted agent still refuses a replay.

What the API serves lives on the agent's disk (the rental's folder, the agent's book), so it is whole after the
agent restarts: logs are read from the engine's log file by byte offset, results from the tar packed when the job
ended, a shell opens in the container the restarted agent has taken over.

The API answers any origin (CORS: `Access-Control-Allow-Origin: *`, the `Gpuex-*` headers allowed, the result
digest exposed, `OPTIONS` preflights answered): the marketplace page calls it from the renter's browser, from
another origin than the agent's. That lends a page nothing it could not do itself: every rental request is signed
by the renter's key, and no cookie or other ambient credential is read.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import json
import logging
import os
import pty
import re
import sqlite3
import struct
import termios
import time
from typing import Callable

from aiohttp import WSMsgType, web
from eth_account import Account
from pydantic import ValidationError

from offchain.agent.containers import client_env
from offchain.agent.jobspec import JobSpec, JobSpecError, JobSpecStore
from offchain.agent.launcher import ISOLATION_CONTAINER, JobLauncher
from offchain.agent.logs import read_chunks
from offchain.agent.rentals import Phase, RentalBook, RentalRecord
from offchain.agent.settings import ProviderAgentSettings
from offchain.agent.workspace import write_private
from offchain.protocol.renterapi import (
    EXPIRY_HEADER,
    NONCE_HEADER,
    RESULT_DIGEST_HEADER,
    SIGNATURE_HEADER,
    Action,
    AgentInfo,
    ApiError,
    ApiErrorCode,
    ClockStatus,
    ContainerView,
    JobStatus,
    LogEnd,
    LogEntry,
    RequestRefused,
    SpecUpload,
    public_key_of,
    recover_signer,
    unseal,
)
from offchain.protocol.status import DeclineReason
from offchain.sqlite import transaction

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
LOG_POLL_SECONDS = 0.05
LOG_READ_BYTES = 256 * 1024
SHELL_READ_BYTES = 64 * 1024
CORS_MAX_AGE_SECONDS = 600
#: What every response carries so that a page of any origin may call the API (see the module docstring).
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": RESULT_DIGEST_HEADER,
}
#: What a preflight answers in addition.
CORS_PREFLIGHT_HEADERS = {
    "Access-Control-Allow-Methods": "GET, PUT, OPTIONS",
    "Access-Control-Allow-Headers": f"Content-Type, {EXPIRY_HEADER}, {NONCE_HEADER}, {SIGNATURE_HEADER}",
    "Access-Control-Max-Age": str(CORS_MAX_AGE_SECONDS),
}
_SHELL_PATH = re.compile(r"^/[A-Za-z0-9/_.-]{1,63}$")
_STATUS = {
    ApiErrorCode.UNSIGNED: 401,
    ApiErrorCode.EXPIRED: 401,
    ApiErrorCode.BAD_SIGNATURE: 401,
    ApiErrorCode.REPLAYED: 401,
    ApiErrorCode.NOT_RENTER: 403,
    ApiErrorCode.UNKNOWN_RENTAL: 404,
    ApiErrorCode.NO_RESULTS: 404,
    ApiErrorCode.INVALID_BODY: 422,
    ApiErrorCode.SPEC_HASH_MISMATCH: 422,
    ApiErrorCode.SECRETS_MISMATCH: 422,
    ApiErrorCode.NOT_NOW: 409,
    ApiErrorCode.UNSUPPORTED: 501,
}
NONCE_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_nonces (
    nonce  BLOB    PRIMARY KEY,
    expiry INTEGER NOT NULL
);
"""


def refusal(code: ApiErrorCode, detail: str) -> web.HTTPException:
    """The HTTP error of a refused request, with its `ApiError` body."""
    body = ApiError(error=code, detail=detail).model_dump_json()
    status = _STATUS[code]
    error_class = {
        401: web.HTTPUnauthorized,
        403: web.HTTPForbidden,
        404: web.HTTPNotFound,
        409: web.HTTPConflict,
        422: web.HTTPUnprocessableEntity,
        501: web.HTTPNotImplemented,
    }[status]
    return error_class(text=body, content_type="application/json")


class RenterApi:
    """The renter API of one agent. `start()` it; `port` is where it listens; `stop()` closes it (and every
    shell). `wake(rental_id)` is called when a rental's spec arrives."""

    def __init__(
        self,
        settings: ProviderAgentSettings,
        key: str,
        book: RentalBook,
        jobs: JobLauncher,
        specs: JobSpecStore,
        db: sqlite3.Connection,
        wake: Callable[[int], None],
        clock: Callable[[], float] = time.time,
        clock_status: Callable[[], ClockStatus] | None = None,
    ) -> None:
        self._settings = settings
        self._key = key
        self._book = book
        self._jobs = jobs
        self._specs = specs
        self._db = db
        self._wake = wake
        self._clock = clock
        self._clock_status = clock_status
        self._shells: dict[int, set[asyncio.Task]] = {}
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        db.executescript(NONCE_SCHEMA)
        self.info = AgentInfo(
            address=Account.from_key(key).address,
            public_key=public_key_of(key),
            chain_id=settings.chain.chain_id,
            escrow=settings.chain.escrow,
            isolation=jobs.isolation,
            engine=None if jobs.engine is None else jobs.engine.name,
        )

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_get("/v1/agent", self._agent)
        app.router.add_put("/v1/rentals/{rental_id}/spec", self._spec)
        app.router.add_get("/v1/rentals/{rental_id}/status", self._status)
        app.router.add_get("/v1/rentals/{rental_id}/logs", self._logs)
        app.router.add_get("/v1/rentals/{rental_id}/results", self._results)
        app.router.add_get("/v1/rentals/{rental_id}/shell", self._shell)
        app.router.add_route("OPTIONS", "/v1/{path:.*}", _preflight)
        app.on_response_prepare.append(_allow_any_origin)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._settings.api_host, self._settings.api_port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        log.info("renter API on http://%s:%d", self._settings.api_host, self.port)

    async def stop(self) -> None:
        for rental_id in list(self._shells):
            self.close_shells(rental_id)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def close_shells(self, rental_id: int) -> None:
        """Ends every open shell of a rental (its job ended, or the rental did)."""
        for task in self._shells.pop(rental_id, set()):
            task.cancel()

    # ---------------------------------------------------------------- authentication

    async def _authorize(self, request: web.Request, action: Action, body: bytes = b"") -> RentalRecord:
        """The rental a request may act on; raises the refusal otherwise (see the module docstring)."""
        try:
            rental_id = int(request.match_info["rental_id"])
        except ValueError:
            raise refusal(ApiErrorCode.UNKNOWN_RENTAL, "a rental id is a decimal number") from None
        chain = self._settings.chain
        try:
            signer, nonce, expiry = recover_signer(
                request.headers, chain.chain_id, chain.escrow, rental_id, action, body, now=self._clock()
            )
        except RequestRefused as exc:
            raise refusal(exc.code, exc.detail) from None
        record = self._book.get(rental_id)
        if record is None:
            raise refusal(ApiErrorCode.UNKNOWN_RENTAL, f"no rental {rental_id} of this agent's provider")
        if record.renter is None or record.renter.lower() != signer.lower():
            raise refusal(ApiErrorCode.NOT_RENTER, f"{signer} is not the renter of rental {rental_id}")
        with transaction(self._db) as db:
            db.execute("DELETE FROM api_nonces WHERE expiry < ?", (int(self._clock()) - 1,))
            try:
                db.execute("INSERT INTO api_nonces (nonce, expiry) VALUES (?, ?)", (nonce, expiry))
            except sqlite3.IntegrityError:
                raise refusal(ApiErrorCode.REPLAYED, "this request was made before: sign a new one") from None
        return record

    # ---------------------------------------------------------------- handlers

    async def _agent(self, request: web.Request) -> web.Response:
        clock = None if self._clock_status is None else self._clock_status()
        return web.json_response(text=self.info.model_copy(update={"clock": clock}).model_dump_json())

    async def _spec(self, request: web.Request) -> web.Response:
        body = await request.read()
        record = await self._authorize(request, Action.SPEC, body)
        if record.phase is Phase.DONE:
            raise refusal(ApiErrorCode.NOT_NOW, f"rental {record.rental_id} is over ({record.outcome})")
        try:
            upload = SpecUpload.model_validate_json(body)
            spec = JobSpec.model_validate(upload.spec)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"])
            raise refusal(ApiErrorCode.INVALID_BODY, f"{where + ': ' if where else ''}{error['msg']}") from None
        if spec.spec_hash() != record.spec_hash:
            raise refusal(
                ApiErrorCode.SPEC_HASH_MISMATCH,
                f"the spec hashes to 0x{spec.spec_hash().hex()}; rental {record.rental_id} was opened with "
                f"0x{record.spec_hash.hex()}",
            )
        if set(upload.secrets) != set(spec.secret_env):
            raise refusal(
                ApiErrorCode.SECRETS_MISMATCH,
                f"the spec's secret_env names {sorted(spec.secret_env)}; the upload seals {sorted(upload.secrets)}",
            )
        for name, sealed in upload.secrets.items():
            try:
                unseal(self._key, sealed)
            except ValueError:
                raise refusal(
                    ApiErrorCode.SECRETS_MISMATCH, f"{name} is not sealed to this agent's key {self.info.public_key}"
                ) from None
        files = self._jobs.files_of(record.rental_id)
        await asyncio.to_thread(files.ensure_root)
        await asyncio.to_thread(write_private, files.secrets, json.dumps(upload.secrets).encode())
        await asyncio.to_thread(self._specs.put, spec)
        log.info(
            "rental %d: job spec received from its renter (%d secret value(s), sealed)",
            record.rental_id,
            len(upload.secrets),
        )
        self._wake(record.rental_id)
        return web.json_response({"rental_id": record.rental_id, "spec_hash": "0x" + record.spec_hash.hex()})

    async def _status(self, request: web.Request) -> web.Response:
        record = await self._authorize(request, Action.STATUS)
        return web.json_response(text=(await self.status_of(record)).model_dump_json())

    async def status_of(self, record: RentalRecord) -> JobStatus:
        """What a rental's renter may know of its job."""
        spec = await self._spec_of(record)
        container = None
        if record.container is not None:
            state = None if self._jobs.engine is None else await self._jobs.engine.inspect(record.container)
            container = ContainerView(
                name=record.container,
                state="gone" if state is None else state.status,
                started_at=record.job_started_at if state is None else state.started_at,
                finished_at=record.job_finished_at if state is None else state.finished_at,
            )
        image = None
        if spec is not None:
            image = spec.image or self._settings.container.default_image
        return JobStatus(
            rental_id=record.rental_id,
            phase=record.phase.value,
            isolation=record.isolation,
            spec_received=spec is not None,
            image=None if self._jobs.engine is None else image,
            gpus=record.gpus,
            container=container,
            exit_code=record.exit_code,
            reason=record.job_reason,
            result_digest=None if record.result_digest is None else "0x" + record.result_digest.hex(),
            results_available=self._jobs.files_of(record.rental_id).results.is_file()
            and record.result_digest is not None,
            decline_reason=None if record.decline_reason is None else DeclineReason(record.decline_reason).name,
            decline_detail=record.decline_detail,
            outcome=record.outcome,
        )

    async def _spec_of(self, record: RentalRecord) -> JobSpec | None:
        """The rental's spec if this machine holds it (it never fetches one for a status)."""
        if not self._specs.path_of(record.spec_hash).is_file():
            return None
        try:
            return await self._specs.get(record.spec_hash)
        except JobSpecError:
            return None

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        record = await self._authorize(request, Action.LOGS)
        try:
            offset = int(request.query.get("offset", "0"))
            follow = request.query.get("follow", "0") in ("1", "true", "yes")
        except ValueError:
            raise refusal(ApiErrorCode.INVALID_BODY, "offset is a byte offset of the log (a whole number)") from None
        if offset < 0:
            raise refusal(ApiErrorCode.INVALID_BODY, "offset is a byte offset of the log (a whole number)")
        if self._jobs.engine is None:
            raise refusal(
                ApiErrorCode.UNSUPPORTED,
                "this agent runs jobs as bare processes (an unsafe development "
                "mode): their output is in the provider's rental folder",
            )
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-store"})
        await response.prepare(request)
        rental_id = record.rental_id
        while True:
            path = await self._jobs.log_path(self._book.get(rental_id))
            chunks, next_offset = (
                ([], offset)
                if path is None
                else await asyncio.to_thread(
                    read_chunks, path, self._jobs.engine.settings.engine.log_format, offset, LOG_READ_BYTES
                )
            )
            if chunks:
                await response.write(
                    b"".join(
                        LogEntry(offset=c.end, stream=c.stream, time=c.time, data=c.data.decode(errors="replace"))
                        .model_dump_json()
                        .encode()
                        + b"\n"
                        for c in chunks
                    )
                )
            offset = next_offset
            if chunks:
                continue
            current = self._book.get(rental_id)
            if current is None:  # the rental's record went away (its retention ran out): nothing more will come
                break
            ended = current.exit_code is not None or current.phase is Phase.DONE
            if ended or not follow:
                if ended:
                    await response.write(
                        LogEnd(offset=offset, exit_code=current.exit_code, reason=current.job_reason)
                        .model_dump_json()
                        .encode()
                        + b"\n"
                    )
                break
            await asyncio.sleep(LOG_POLL_SECONDS)
        await response.write_eof()
        return response

    async def _results(self, request: web.Request) -> web.StreamResponse:
        record = await self._authorize(request, Action.RESULTS)
        if record.result_digest is None:
            raise refusal(ApiErrorCode.NOT_NOW, f"the job of rental {record.rental_id} has not ended")
        results = self._jobs.files_of(record.rental_id).results
        if not results.is_file():
            raise refusal(
                ApiErrorCode.NO_RESULTS,
                "the job left no output folder; its result digest is of its stdout (read it with logs)",
            )
        return web.FileResponse(
            results,
            headers={"Content-Type": "application/x-tar", RESULT_DIGEST_HEADER: "0x" + record.result_digest.hex()},
        )

    async def _shell(self, request: web.Request) -> web.WebSocketResponse:
        record = await self._authorize(request, Action.SHELL)
        shell = request.query.get("shell", "/bin/sh")
        if not _SHELL_PATH.match(shell):
            raise refusal(ApiErrorCode.INVALID_BODY, "shell is an absolute path of the container's (e.g. /bin/sh)")
        rows, cols = _size(request.query.get("rows"), 24), _size(request.query.get("cols"), 80)
        engine = self._jobs.engine
        if engine is None or record.isolation != ISOLATION_CONTAINER or record.container is None:
            raise refusal(
                ApiErrorCode.NOT_NOW if engine is not None else ApiErrorCode.UNSUPPORTED,
                "there is no container of this rental's job to open a shell in",
            )
        state = await engine.inspect(record.container)
        if state is None or not state.running or record.phase is Phase.DONE:
            raise refusal(ApiErrorCode.NOT_NOW, f"the job of rental {record.rental_id} is not running")
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=MAX_BODY_BYTES)
        await ws.prepare(request)
        task = asyncio.current_task()
        assert task is not None
        self._shells.setdefault(record.rental_id, set()).add(task)
        argv = [
            engine.name,
            *engine.settings.global_args,
            "exec",
            "--interactive",
            "--tty",
            "--user",
            self._settings.container.user,
            "--workdir",
            "/workspace",
            "--env",
            "TERM=xterm-256color",
            record.container,
            shell,
        ]
        log.info("rental %d: shell opened by its renter", record.rental_id)
        try:
            await _relay(ws, argv, rows, cols)
        except asyncio.CancelledError:
            await ws.close(code=1001, message=b"the rental's job ended")
        finally:
            self._shells.get(record.rental_id, set()).discard(task)
            log.info("rental %d: shell closed", record.rental_id)
        return ws


async def _preflight(_: web.Request) -> web.Response:
    return web.Response(status=204, headers=CORS_PREFLIGHT_HEADERS)


async def _allow_any_origin(_: web.Request, response: web.StreamResponse) -> None:
    """Adds the CORS headers to every response, refusals and streams included, before its headers are sent."""
    response.headers.update(CORS_HEADERS)


def _size(value: str | None, default: int) -> int:
    try:
        return min(max(int(value), 1), 1000) if value is not None else default
    except ValueError:
        return default


def _set_window(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _controlling_terminal() -> None:
    """In the shell's client (a new session): make its terminal, on stdin, the controlling one."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


async def _relay(ws: web.WebSocketResponse, argv: list[str], rows: int, cols: int) -> None:
    """Runs `argv` (the engine's `exec -it`) on a new pseudo-terminal and relays it to the websocket until
    either side ends: binary frames are terminal bytes, a text frame `{"resize": [rows, cols]}` resizes."""
    master, slave = pty.openpty()
    _set_window(slave, rows, cols)
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=client_env(),
            start_new_session=True,
            preexec_fn=_controlling_terminal,
        )
    finally:
        os.close(slave)
    os.set_blocking(master, False)
    loop = asyncio.get_running_loop()
    output: asyncio.Queue[bytes | None] = asyncio.Queue()

    def readable() -> None:
        try:
            data = os.read(master, SHELL_READ_BYTES)
        except BlockingIOError:
            return
        except OSError:  # EIO: the terminal's other side closed
            data = b""
        if not data:
            loop.remove_reader(master)
        output.put_nowait(data or None)

    loop.add_reader(master, readable)

    async def to_client() -> None:
        while (data := await output.get()) is not None:
            await ws.send_bytes(data)

    async def from_client() -> None:
        async for message in ws:
            if message.type == WSMsgType.BINARY:
                await _write_all(master, message.data)
            elif message.type == WSMsgType.TEXT:
                try:
                    rows_, cols_ = json.loads(message.data)["resize"]
                    _set_window(master, _size(str(rows_), 24), _size(str(cols_), 80))
                except (ValueError, KeyError, TypeError):
                    continue
            else:
                break

    sending, receiving = asyncio.ensure_future(to_client()), asyncio.ensure_future(from_client())
    try:
        await asyncio.wait(
            {sending, receiving, asyncio.ensure_future(process.wait())}, return_when=asyncio.FIRST_COMPLETED
        )
        if process.returncode is not None:
            # Let what the shell printed last reach the client before the socket closes.
            await asyncio.wait_for(asyncio.shield(sending), 1.0)
    except TimeoutError:
        pass
    finally:
        loop.remove_reader(master)
        for task in (sending, receiving):
            task.cancel()
        if process.returncode is None:
            process.kill()
        await process.wait()
        os.close(master)
        if not ws.closed:
            await ws.close(code=1000, message=f"the shell exited with {process.returncode}".encode())


async def _write_all(fd: int, data: bytes) -> None:
    """Writes everything to a non-blocking terminal, waiting while its buffer is full."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            await asyncio.sleep(0.005)
            continue
        except OSError as exc:
            if exc.errno == errno.EIO:
                return
            raise
        view = view[written:]
