"""The keeper activates an announced oracle set once its governance delay has passed, once per announcement."""

from __future__ import annotations

import asyncio

import pytest
from brownie import chain
from eth_account import Account

from offchain.chain.reads import ChainReader
from offchain.chain.rpc import connect
from offchain.chain.tx.manager import TxManager
from offchain.chain.tx.store import TxState
from offchain.oracle.keeper import Keeper
from scripts.deploy import SuiteParams, deploy_suite
from tests.offchain.chain.helpers import settle
from tests.offchain.conftest import ORACLE_KEYS, ORACLES

DELAY = 600


@pytest.fixture(scope="module")
def suite(deployer, treasury, token):
    """Registry + escrow whose oracle set changes DELAY seconds after its announcement."""
    return deploy_suite(deployer, token, token, treasury, [ORACLES[0].address], 1, SuiteParams(governance_delay=DELAY))


def test_the_keeper_activates_an_announced_oracle_set_once_it_is_due(suite, deployer, rpc_url, tmp_path):
    suite.escrow.scheduleOracleSet([o.address for o in ORACLES], 2, {"from": deployer})
    effective_at = suite.read(lambda r: r.upcoming_oracle_set()).effective_at
    key = f"activate-oracle-set:{effective_at}"

    async def scenario():
        w3 = connect(rpc_url)
        txmgr = TxManager(w3, tmp_path / "txmgr.sqlite", Account.from_key(ORACLE_KEYS[0]), await w3.eth.chain_id)
        keeper = Keeper(ChainReader(w3, suite.registry.address, suite.escrow.address), txmgr, tmp_path / "k.sqlite")
        try:
            await txmgr.start()
            await keeper.tick()
            assert txmgr.record(key) is None  # announced, not yet due
            await asyncio.to_thread(lambda: (chain.sleep(DELAY + 1), chain.mine()))
            await keeper.tick()
            (activated,) = await settle(txmgr, key)
            await keeper.tick()  # nothing pending any more: nothing new
            return activated.state, len(txmgr.records())
        finally:
            keeper.close()
            txmgr.close()
            await w3.provider.disconnect()

    state, transactions = asyncio.run(scenario())
    assert (state, transactions) == (TxState.CONFIRMED, 1)
    oracle_set = suite.read(lambda r: r.oracle_set())
    assert (oracle_set.version, oracle_set.threshold) == (2, 2)
    assert set(oracle_set.signers) == {o.address for o in ORACLES}
    assert suite.read(lambda r: r.upcoming_oracle_set()).effective_at == 0
