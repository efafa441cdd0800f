"""Whether a provider's agent is online: a `GET /v1/agent` to the agent URL the provider published on chain,
answered within a short timeout by a body that reads as `AgentInfo`.

The URL is anyone's to publish, so the probe trusts nothing about it: the URL must pass `check_agent_url` (http or
https, a host, no credentials), redirects are never followed (a redirect is an answer that is not the agent's),
at most `MAX_BODY_BYTES` of the body are read, and every failure (refused, timed out, too big, not JSON, not an
agent) reads as offline, never as an error. All it tells its caller is one bit per URL. Answers are kept for
`ttl` seconds, so a page refreshed every second probes each agent at most once per `ttl`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import aiohttp
from pydantic import ValidationError

from offchain.protocol.agenturl import AgentUrlInvalid, check_agent_url
from offchain.protocol.renterapi import AgentInfo

TIMEOUT_SECONDS = 2.0
TTL_SECONDS = 30.0
#: An `AgentInfo` body is a few hundred bytes.
MAX_BODY_BYTES = 16_384
#: URLs remembered at most; the oldest answers are forgotten first.
MAX_CACHED = 4_096


class AgentProbe:
    """Probes agent URLs and remembers each answer for `ttl` seconds."""

    def __init__(self, timeout: float = TIMEOUT_SECONDS, ttl: float = TTL_SECONDS) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._ttl = ttl
        self._answers: dict[str, tuple[float, bool]] = {}
        self._pending: dict[str, asyncio.Task[bool]] = {}

    async def online(self, urls: Iterable[str]) -> dict[str, bool]:
        """Whether the agent at each of `urls` answers; probes those not answered within the last `ttl` seconds,
        concurrently (one probe per URL, however many callers ask at once). A caller cancelled while it waits
        leaves the probes it shares with other callers running for them."""
        wanted = set(urls)
        now = time.monotonic()
        answers = {url: answer for url in wanted if (answer := self._fresh(url, now)) is not None}
        missing = wanted - set(answers)
        if missing:
            tasks = {url: self._task(url) for url in missing}
            results = await asyncio.gather(*(asyncio.shield(task) for task in tasks.values()))
            answers.update(zip(tasks, results))
        return answers

    def _fresh(self, url: str, now: float) -> bool | None:
        cached = self._answers.get(url)
        if cached is None or now - cached[0] > self._ttl:
            return None
        return cached[1]

    def _task(self, url: str) -> asyncio.Task[bool]:
        task = self._pending.get(url)
        if task is None:
            task = asyncio.ensure_future(self._probe(url))
            self._pending[url] = task
            task.add_done_callback(lambda done: self._remember(url, done))
        return task

    def _remember(self, url: str, task: asyncio.Task[bool]) -> None:
        self._pending.pop(url, None)
        if task.cancelled():
            return
        if len(self._answers) >= MAX_CACHED:
            del self._answers[next(iter(self._answers))]
        self._answers[url] = (time.monotonic(), task.result())

    async def _probe(self, url: str) -> bool:
        """One probe with a session of its own: a probe outlives the caller that started it when other callers wait
        for it too."""
        try:
            base = check_agent_url(url)
            async with (
                aiohttp.ClientSession(timeout=self._timeout) as session,
                session.get(f"{base}/v1/agent", allow_redirects=False) as response,
            ):
                if response.status != 200:
                    return False
                body = await response.content.read(MAX_BODY_BYTES + 1)
            if len(body) > MAX_BODY_BYTES:
                return False
            AgentInfo.model_validate_json(body)
        except (AgentUrlInvalid, aiohttp.ClientError, asyncio.TimeoutError, OSError, ValidationError, ValueError):
            return False
        return True
