"""Whether a provider's agent is online, as the offer lists show it: a real HTTP server on loopback plays the agent,
a well-behaved one and hostile ones (a huge body, a redirect elsewhere, a hang, a body that is not an agent's), and
every failure reads as offline. Answers are remembered for the probe's ttl."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web
from eth_account import Account

from offchain.market.agentprobe import MAX_BODY_BYTES, AgentProbe
from offchain.protocol.renterapi import AgentInfo

#: Ports of this file's servers (the test suite's range for the market tests' HTTP servers).
AGENT_PORT = 9161
ELSEWHERE_PORT = 9162
CLOSED_PORT = 9163
TIMEOUT = 0.5

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def agent_info() -> AgentInfo:
    account = Account.create()
    public_key = "0x" + account._key_obj.public_key.to_bytes().hex()
    return AgentInfo(
        address=account.address,
        public_key=public_key,
        chain_id=31337,
        escrow="0x" + "11" * 20,
        isolation="container",
        engine="podman",
    )


async def _serve(routes: dict[int, Handler], body: Callable[[], Awaitable[object]]) -> object:
    """Serves each handler at `GET /v1/agent` on its port while `body()` runs; returns what it returned."""
    runners = []
    try:
        for port, handler in routes.items():
            app = web.Application()
            app.router.add_get("/v1/agent", handler)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            runners.append(runner)
        return await body()
    finally:
        for runner in runners:
            await runner.cleanup()


def probe_once(handler: Handler, url: str = f"http://127.0.0.1:{AGENT_PORT}", elsewhere: Handler | None = None) -> bool:
    """Whether a fresh probe finds the agent at `url` online while `handler` serves the agent's port (and
    `elsewhere`, if given, `ELSEWHERE_PORT`)."""

    async def body() -> object:
        return (await AgentProbe(timeout=TIMEOUT).online([url]))[url]

    routes = {AGENT_PORT: handler, **({ELSEWHERE_PORT: elsewhere} if elsewhere is not None else {})}
    return bool(asyncio.run(_serve(routes, body)))


async def an_agent(_: web.Request) -> web.Response:
    return web.Response(body=agent_info().model_dump_json(), content_type="application/json")


def test_an_agent_that_answers_is_online():
    assert probe_once(an_agent) is True
    assert probe_once(an_agent, url=f"http://127.0.0.1:{AGENT_PORT}/") is True


def test_an_agent_that_does_not_answer_is_offline():
    assert probe_once(an_agent, url=f"http://127.0.0.1:{CLOSED_PORT}") is False


def test_a_huge_body_is_offline_and_not_read_to_its_end():
    async def huge(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        padding = b" " * 65_536
        for _ in range(1_000):  # 64 MiB, if anyone read it all
            await response.write(padding)
        return response

    assert probe_once(huge) is False
    padded = agent_info().model_dump_json().encode().ljust(MAX_BODY_BYTES + 1)

    async def just_too_big(_: web.Request) -> web.Response:
        return web.Response(body=padded, content_type="application/json")

    assert probe_once(just_too_big) is False


def test_a_redirect_is_not_followed():
    visits: list[str] = []

    async def elsewhere(request: web.Request) -> web.Response:
        visits.append(request.path)
        return await an_agent(request)

    async def redirect(_: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://localhost:{ELSEWHERE_PORT}/v1/agent")

    assert probe_once(redirect, elsewhere=elsewhere) is False
    assert visits == []


def test_a_hanging_agent_is_offline_after_the_timeout():
    async def hang(_: web.Request) -> web.Response:
        await asyncio.sleep(TIMEOUT * 4)
        raise AssertionError("unreachable")

    assert probe_once(hang) is False


def test_bodies_that_are_not_an_agents_are_offline():
    async def not_json(_: web.Request) -> web.Response:
        return web.Response(text="<html>hello</html>", content_type="text/html")

    async def other_json(_: web.Request) -> web.Response:
        return web.json_response({"address": "0x0", "extra": [1] * 10})

    async def error(_: web.Request) -> web.Response:
        return web.Response(status=500, body=agent_info().model_dump_json())

    for handler in (not_json, other_json, error):
        assert probe_once(handler) is False, handler.__name__


def test_urls_that_are_not_agent_urls_are_offline_without_a_connection():
    for url in (
        f"ftp://127.0.0.1:{AGENT_PORT}",
        "file:///etc/passwd",
        f"http://user:secret@127.0.0.1:{AGENT_PORT}",
        f"http://127.0.0.1:{AGENT_PORT}/?q=1",
        "",
        "not a url",
    ):
        assert probe_once(an_agent, url=url) is False, url


def test_answers_are_remembered_for_the_ttl():
    hits: list[int] = []

    async def counted(request: web.Request) -> web.Response:
        hits.append(1)
        return await an_agent(request)

    url = f"http://127.0.0.1:{AGENT_PORT}"

    async def body() -> object:
        probe = AgentProbe(timeout=TIMEOUT, ttl=0.5)
        first = await asyncio.gather(probe.online([url]), probe.online([url, url]))
        again = await probe.online([url])
        await asyncio.sleep(0.6)
        later = await probe.online([url])
        return first, again, later

    first, again, later = asyncio.run(_serve({AGENT_PORT: counted}, body))  # type: ignore[misc]
    assert first == [{url: True}, {url: True}] and again == {url: True} and later == {url: True}
    assert len(hits) == 2, "one probe for the concurrent asks and the cached one, one after the ttl"


def test_a_caller_cancelled_while_it_waits_leaves_the_shared_probe_to_the_others():
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.2)
        return await an_agent(request)

    url = f"http://127.0.0.1:{AGENT_PORT}"

    async def body() -> object:
        probe = AgentProbe(timeout=TIMEOUT)
        first = asyncio.ensure_future(probe.online([url]))
        await asyncio.sleep(0.05)  # the first caller's probe is under way
        second = asyncio.ensure_future(probe.online([url]))
        await asyncio.sleep(0.05)
        first.cancel()  # as aiohttp cancels the handler of a request whose client went away
        return await second, first.cancelled()

    assert asyncio.run(_serve({AGENT_PORT: slow}, body)) == ({url: True}, True)
