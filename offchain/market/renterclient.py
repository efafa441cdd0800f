"""A renter's client of a provider agent's renter API (`offchain.protocol.renterapi`): the `gpuex rental` commands
and the benchmarks use it.

`RenterClient` signs every request with the renter's key for the deployment's chain and escrow, and checks the
agent before it trusts it with anything: the agent it reaches must hold the provider's registered agent key, and the
public key it gives must be that key's, so a secret is only ever sealed to the provider's own agent.
"""

from __future__ import annotations

import asyncio
import json
import os
import tarfile
from pathlib import Path
from typing import AsyncIterator

import aiohttp
from eth_account import Account
from eth_hash.auto import keccak

from offchain.agent.jobspec import JobSpec
from offchain.http import SessionOwner
from offchain.protocol.renterapi import (
    RESULT_DIGEST_HEADER,
    Action,
    AgentInfo,
    ApiError,
    JobStatus,
    LogEnd,
    LogEntry,
    SpecUpload,
    address_of_public_key,
    seal,
    sign_request,
)

DOWNLOAD_CHUNK = 1 << 20
LOG_RECONNECT_SECONDS = 0.5
#: What a refused websocket handshake means (its body, which says it in full, does not reach a websocket client).
_SHELL_REFUSALS = {
    401: ("unsigned", "the agent refused the request's signature (a clock far off, or a replay)"),
    403: ("not_renter", "this key is not the rental's renter"),
    404: ("unknown_rental", "the provider's agent knows no such rental"),
    409: ("not_now", "the rental's job is not running"),
    501: ("unsupported", "this agent runs no containers to open a shell in"),
}


class RenterApiError(Exception):
    """The agent refused a request (`status`, `code`, `detail`), or could not be reached (`status` 0)."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}" if code else detail)
        self.status = status
        self.code = code
        self.detail = detail


class RenterClient(SessionOwner):
    """`async with RenterClient(url, chain_id, escrow, key, agent=address) as client: ...`"""

    def __init__(
        self,
        base_url: str,
        chain_id: int,
        escrow: str,
        key: bytes | str,
        *,
        agent: str | None = None,
        timeout_seconds: float = 30.0,
    ) -> None:
        super().__init__(aiohttp.ClientTimeout(total=None, connect=timeout_seconds, sock_read=None))
        self.base_url = base_url.rstrip("/")
        self._chain_id = chain_id
        self._escrow = escrow
        self._key = key
        self._expected_agent = agent
        self._agent: AgentInfo | None = None
        self.renter = Account.from_key(key).address

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("use the client as `async with RenterClient(...)`")
        return self._session

    def _headers(self, rental_id: int, action: Action, body: bytes = b"") -> dict[str, str]:
        return sign_request(self._key, self._chain_id, self._escrow, rental_id, action, body)

    def _url(self, rental_id: int, path: str) -> str:
        return f"{self.base_url}/v1/rentals/{rental_id}/{path}"

    async def agent(self) -> AgentInfo:
        """Who answers at the URL, checked: the expected agent key (when given), its own public key, our chain."""
        if self._agent is None:
            async with self._request("GET", f"{self.base_url}/v1/agent") as response:
                info = AgentInfo.model_validate_json(await response.read())
            if address_of_public_key(info.public_key) != info.address:
                raise RenterApiError(0, "bad_agent", "the agent's public key is not its address's")
            if self._expected_agent is not None and info.address.lower() != self._expected_agent.lower():
                raise RenterApiError(
                    0,
                    "bad_agent",
                    f"{self.base_url} answers as {info.address}, not the provider's agent key {self._expected_agent}",
                )
            if info.chain_id != self._chain_id or info.escrow.lower() != self._escrow.lower():
                raise RenterApiError(0, "bad_agent", "the agent serves another chain or deployment")
            self._agent = info
        return self._agent

    async def upload_spec(self, rental_id: int, spec: JobSpec, secret_values: dict[str, str] | None = None) -> None:
        """Uploads the rental's spec, with the values of its `secret_env` names sealed to the agent's key."""
        values = secret_values or {}
        missing = set(spec.secret_env) - set(values)
        if missing:
            raise ValueError(f"no value for the secret environment variable(s) {', '.join(sorted(missing))}")
        agent = await self.agent()
        upload = SpecUpload(
            spec=spec.model_dump(mode="json"),
            secrets={name: seal(agent.public_key, values[name]) for name in spec.secret_env},
        )
        body = upload.model_dump_json().encode()
        async with self._request(
            "PUT",
            self._url(rental_id, "spec"),
            data=body,
            headers={**self._headers(rental_id, Action.SPEC, body), "Content-Type": "application/json"},
        ):
            pass

    async def status(self, rental_id: int) -> JobStatus:
        async with self._request(
            "GET", self._url(rental_id, "status"), headers=self._headers(rental_id, Action.STATUS)
        ) as response:
            return JobStatus.model_validate_json(await response.read())

    async def logs(self, rental_id: int, offset: int = 0, follow: bool = False) -> AsyncIterator[LogEntry | LogEnd]:
        """The job's output from byte `offset` of its log; with `follow`, as it is written, reconnecting from the
        last offset received when the connection drops, until the job has ended (a `LogEnd` comes last)."""
        while True:
            params = {"offset": str(offset), "follow": "1" if follow else "0"}
            try:
                async with self._request(
                    "GET", self._url(rental_id, "logs"), params=params, headers=self._headers(rental_id, Action.LOGS)
                ) as response:
                    async for line in response.content:
                        if not line.strip():
                            continue
                        entry = json.loads(line)
                        if entry.get("end"):
                            yield LogEnd.model_validate(entry)
                            return
                        chunk = LogEntry.model_validate(entry)
                        offset = chunk.offset
                        yield chunk
            except (
                aiohttp.ClientPayloadError,
                aiohttp.ServerDisconnectedError,
                aiohttp.ClientConnectionError,
                RenterApiError,
            ) as exc:
                if not follow or (isinstance(exc, RenterApiError) and exc.status != 0):
                    raise
                await asyncio.sleep(LOG_RECONNECT_SECONDS)
                continue
            if not follow:
                return

    async def download_results(self, rental_id: int, destination: Path) -> bytes:
        """Saves the results tar to `destination` and returns its keccak256, checked against the digest the agent
        reported (the completion report's)."""
        hasher = keccak.new(b"")
        partial = destination.with_name(destination.name + ".partial")
        async with self._request(
            "GET", self._url(rental_id, "results"), headers=self._headers(rental_id, Action.RESULTS)
        ) as response:
            expected = bytes.fromhex(response.headers.get(RESULT_DIGEST_HEADER, "").removeprefix("0x"))
            with partial.open("wb") as stream:
                async for chunk in response.content.iter_chunked(DOWNLOAD_CHUNK):
                    hasher.update(chunk)
                    stream.write(chunk)
        digest = hasher.digest()
        if digest != expected:
            partial.unlink(missing_ok=True)
            raise RenterApiError(
                0, "digest_mismatch", f"the results hash to 0x{digest.hex()}, not the reported 0x{expected.hex()}"
            )
        os.replace(partial, destination)
        return digest

    async def shell(
        self, rental_id: int, rows: int, cols: int, shell: str = "/bin/sh"
    ) -> aiohttp.ClientWebSocketResponse:
        """A websocket to a shell in the job's container (binary frames: terminal bytes; `resize` text frames)."""
        try:
            return await self.session.ws_connect(
                self._url(rental_id, "shell"),
                params={"rows": str(rows), "cols": str(cols), "shell": shell},
                headers=self._headers(rental_id, Action.SHELL),
                heartbeat=30,
            )
        except aiohttp.WSServerHandshakeError as exc:
            code, detail = _SHELL_REFUSALS.get(exc.status, ("refused", f"{exc.status} {exc.message}"))
            raise RenterApiError(exc.status, code, detail) from exc
        except aiohttp.ClientConnectionError as exc:
            raise RenterApiError(0, "unreachable", f"{self.base_url}: {exc}") from exc

    def _request(self, method: str, url: str, **kwargs) -> _Request:
        return _Request(self.session, method, url, kwargs)


class _Request:
    """One request as an async context manager that turns refusals into `RenterApiError`."""

    def __init__(self, session: aiohttp.ClientSession, method: str, url: str, kwargs: dict) -> None:
        self._context = session.request(method, url, **kwargs)
        self._url = url
        self._response: aiohttp.ClientResponse | None = None

    async def __aenter__(self) -> aiohttp.ClientResponse:
        try:
            self._response = await self._context.__aenter__()
        except aiohttp.ClientConnectionError as exc:
            raise RenterApiError(0, "unreachable", f"{self._url}: {exc}") from exc
        if self._response.status >= 400:
            text = await self._response.text()
            await self._context.__aexit__(None, None, None)
            try:
                error = ApiError.model_validate_json(text)
            except ValueError:
                raise RenterApiError(
                    self._response.status, "http_error", text[:500] or self._response.reason or ""
                ) from None
            raise RenterApiError(self._response.status, error.error.value, error.detail)
        return self._response

    async def __aexit__(self, *exc_info) -> None:
        await self._context.__aexit__(*exc_info)


def extract_results(tar_path: Path, directory: Path) -> list[str]:
    """Unpacks a results tar into `directory` with the standard library's `data` filter: nothing lands outside
    it, no device or special file, no link that points out. Members the filter refuses are skipped and named."""
    directory.mkdir(parents=True, exist_ok=True)
    skipped = []
    with tarfile.open(tar_path) as tar:
        for member in tar.getmembers():
            try:
                tar.extract(member, directory, filter="data")
            except tarfile.FilterError as exc:
                skipped.append(f"{member.name} ({exc})")
    return skipped
