"""Chain access for the off-chain services: AsyncWeb3 connections and contract handles whose ABIs come from
Brownie's build artifacts (`build/contracts/*.json`), so no ABI is written twice."""

from __future__ import annotations

import asyncio
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, ClientTimeout, TCPConnector
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3._utils.http_session_manager import HTTPSessionManager

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS_DIR = PROJECT_ROOT / "build" / "contracts"


class ArtifactMissing(RuntimeError):
    """The Brownie build artifact is absent: run `make compile` (or `brownie compile`) first."""


@lru_cache(maxsize=None)
def load_artifact(name: str, artifacts_dir: Path = ARTIFACTS_DIR) -> dict[str, Any]:
    """The Brownie build artifact of contract `name` (abi, bytecode, ...)."""
    path = artifacts_dir / f"{name}.json"
    if not path.is_file():
        raise ArtifactMissing(f"no build artifact {path}; run `make compile` first")
    return json.loads(path.read_text())


def abi(name: str) -> list[dict[str, Any]]:
    """The ABI of contract `name` from its build artifact."""
    return load_artifact(name)["abi"]


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

    async def async_cache_and_return_session(self, endpoint_uri: Any, session: ClientSession | None = None,
                                             request_timeout: ClientTimeout | None = None) -> ClientSession:
        loop = asyncio.get_running_loop()
        _, cached = self._sessions.get(id(loop), (None, None))
        if cached is None or cached.closed:
            # As web3 builds it: a connection per request, so a node restart never leaves a stale one behind.
            cached = session or ClientSession(
                raise_for_status=True, connector=TCPConnector(force_close=True, enable_cleanup_closed=True))
            self._sessions[id(loop)] = (loop, cached)
            self.session_cache.cache(f"{id(loop)}:{endpoint_uri}", cached)  # closed by the provider's disconnect
        return cached


#: Default web3 middleware we never need and that costs on every call: `validation` asks the node for its chain
#: id before each eth_call and gas estimate (we sign raw transactions with an explicit chain id), and ENS name
#: resolution scans every argument for names (we only ever pass addresses).
_UNUSED_MIDDLEWARE = ("validation", "ens_name_to_address")


def connect(rpc_url: str, timeout: float = 10.0) -> AsyncWeb3:
    """An AsyncWeb3 over HTTP with a request timeout, without web3's session lock (see `_LoopSessions`) and
    without the middleware of `_UNUSED_MIDDLEWARE`."""
    provider = AsyncHTTPProvider(rpc_url, request_kwargs={"timeout": timeout})
    provider._request_session_manager = _LoopSessions()
    w3 = AsyncWeb3(provider)
    for name in _UNUSED_MIDDLEWARE:
        w3.middleware_onion.remove(name)
    return w3


def contract(w3: AsyncWeb3, name: str, address: str):
    """An async contract handle for the deployed `name` at `address`."""
    return w3.eth.contract(address=AsyncWeb3.to_checksum_address(address), abi=abi(name))


def returned_struct(function: Any, values: tuple) -> dict[str, Any]:
    """The struct a contract view returned (`getProvider`, `getOffer`) as a dict by its ABI's field names, so that
    a reader does not depend on the order of the struct's fields."""
    return dict(zip((c["name"] for c in function.abi["outputs"][0]["components"]), values))
