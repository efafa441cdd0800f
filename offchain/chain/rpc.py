"""AsyncWeb3 connections of the off-chain services to a chain's JSON-RPC endpoint."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, TypeVar

import aiohttp
from aiohttp import ClientSession, ClientTimeout, TCPConnector
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3._utils.http_session_manager import HTTPSessionManager
from web3.types import RPCEndpoint, RPCResponse

T = TypeVar("T")


class _LoopSessions(HTTPSessionManager):
    """One aiohttp session per event loop for one provider, found without a lock.

    web3 7.16 looks each request's session up in a cache guarded by a process-wide `threading.Lock` that it
    acquires in a worker thread. A request cancelled while it waits for that lock (a timeout around a call) leaves
    the lock acquired for good, and every later request of the process hangs. A provider belongs to one process
    and its requests to event loops, so a plain dict keyed by the running loop needs no lock.
    """

    def __init__(self) -> None:
        super().__init__()
        # The loop is kept with its session: while it is referenced, no later loop can take its id.
        self._sessions: dict[int, tuple[asyncio.AbstractEventLoop, ClientSession]] = {}

    async def async_cache_and_return_session(
        self, endpoint_uri: Any, session: ClientSession | None = None, request_timeout: ClientTimeout | None = None
    ) -> ClientSession:
        loop = asyncio.get_running_loop()
        _, cached = self._sessions.get(id(loop), (None, None))
        if cached is None or cached.closed:
            # As web3 builds it: a connection per request, so a node restart never leaves a stale one behind.
            cached = session or ClientSession(
                raise_for_status=True, connector=TCPConnector(force_close=True, enable_cleanup_closed=True)
            )
            self._sessions[id(loop)] = (loop, cached)
            self.session_cache.cache(f"{id(loop)}:{endpoint_uri}", cached)  # closed by the provider's disconnect
        return cached


class ChainUnreachable(ConnectionError):
    """The chain's node did not answer: refused or dropped connection, timeout. The one spelling of "the node is
    down" for every layer; a revert or an error the node returned is not this."""


#: What a request to a node raises when the node cannot be reached (`ChainUnreachable` wraps them).
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


async def reach(call: Awaitable[T]) -> T:
    """Awaits one request to the node, turning a transport failure into `ChainUnreachable` (anything else, such as
    a revert, passes through)."""
    try:
        return await call
    except ChainUnreachable:
        raise
    except TRANSPORT_ERRORS as exc:
        raise ChainUnreachable(f"the chain's node did not answer: {type(exc).__name__}: {exc}") from exc


class _NodeProvider(AsyncHTTPProvider):
    """An HTTP provider whose requests raise `ChainUnreachable` when the node does not answer, so that every
    caller of a connection made by `connect` meets that one exception, whatever the call."""

    async def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        return await reach(super().make_request(method, params))

    async def make_batch_request(
        self, batch_requests: list[tuple[RPCEndpoint, Any]]
    ) -> list[RPCResponse] | RPCResponse:
        return await reach(super().make_batch_request(batch_requests))


#: Default web3 middleware we never need and that costs on every call: `validation` asks the node for its chain
#: id before each eth_call and gas estimate (we sign raw transactions with an explicit chain id), and ENS name
#: resolution scans every argument for names (we only ever pass addresses).
_UNUSED_MIDDLEWARE = ("validation", "ens_name_to_address")


def connect(rpc_url: str, timeout: float = 10.0) -> AsyncWeb3[Any]:
    """An AsyncWeb3 over HTTP with a request timeout, whose requests raise `ChainUnreachable` when the node does
    not answer (`_NodeProvider`), without web3's session lock (see `_LoopSessions`) and without the middleware of
    `_UNUSED_MIDDLEWARE`."""
    provider = _NodeProvider(rpc_url, request_kwargs={"timeout": timeout})
    provider._request_session_manager = _LoopSessions()
    w3 = AsyncWeb3(provider)
    for name in _UNUSED_MIDDLEWARE:
        w3.middleware_onion.remove(name)
    return w3
