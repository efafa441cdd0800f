"""Fixtures of the web page's API tests, on top of tests/offchain/conftest.py: a test client of the page served on
its own (`gpuex web`'s app) for the suite's deployment record, indexing the suite through Brownie's anvil. Every
test starts from the same chain state."""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from brownie import web3

from offchain.chain.deployments import Deployment
from offchain.web.app import create_standalone_app

POLL_SECONDS = 0.05


@pytest.fixture(autouse=True)
def isolation(fn_isolation):
    pass


@pytest.fixture
def web_client(rpc_url, deployment):
    """`async with web_client() as client`: the page's app on loopback, once its index has caught up."""

    @asynccontextmanager
    async def _client(record: Deployment = deployment, ready: bool = True) -> AsyncIterator[TestClient]:
        app = create_standalone_app(rpc_url, record, poll_interval=POLL_SECONDS)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            if ready:
                await until_block(client, web3.eth.block_number)
            yield client

    return _client


async def until_block(client: TestClient, block: int, seconds: float = 10) -> None:
    """Waits until the page's index has reached `block`."""
    deadline = time.monotonic() + seconds
    while True:
        response = await client.get("/web/api/market")
        index = (await response.json())["index"] if response.status == 200 else {"ready": False}
        if index["ready"] and index["block"] >= block:
            return
        assert time.monotonic() < deadline, f"the index did not reach block {block} within {seconds} s"
        await asyncio.sleep(POLL_SECONDS)
