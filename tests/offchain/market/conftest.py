"""Fixtures of the event index tests, on top of tests/offchain/conftest.py: every test starts from the same chain
state (the suite deployed, `offer` listed once a test asks for it) and indexes the suite from its deployment
block over its own connection to the node."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

import pytest
from web3 import AsyncWeb3

from offchain.chain.rpc import connect
from offchain.market.index import EventIndex


@pytest.fixture(autouse=True)
def isolation(fn_isolation):
    pass


@pytest.fixture
def node(chain_settings):
    """`async with node() as w3`: an AsyncWeb3 connection to Brownie's anvil, closed on the way out."""

    @asynccontextmanager
    async def _node() -> AsyncIterator[AsyncWeb3]:
        w3 = connect(chain_settings.rpc_url)
        try:
            yield w3
        finally:
            await w3.provider.disconnect()

    return _node


@pytest.fixture
def make_index(suite):
    """An index of the suite from its deployment block."""

    def _make(w3: AsyncWeb3, **options) -> EventIndex:
        return EventIndex(w3, suite.registry.address, suite.escrow.address, suite.registry.tx.block_number, **options)

    return _make
