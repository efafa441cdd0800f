"""Fixtures for off-chain tests: a suite deployed on Brownie's real anvil, services pointed at it over HTTP.

Run through Brownie (`brownie test tests/offchain`), which launches anvil; the services under test talk to
it with their own AsyncWeb3 client, as they would to any node. The roles' accounts, the token and
`chain_settings` come from tests/conftest.py; ORACLES and AGENT are the accounts of offchain.ops.roles' keys.
"""

from __future__ import annotations

from dataclasses import fields

import pytest
from brownie import web3
from eth_account import Account

from offchain.chain.deployments import Deployment, SuiteConfig
from offchain.ops.roles import AGENT_KEY, ORACLE_KEYS
from offchain.protocol.messages import gpu_uuid_hash
from scripts.deploy import USDC, SuiteParams, deploy_suite

ORACLES = [Account.from_key(k) for k in ORACLE_KEYS]
AGENT = Account.from_key(AGENT_KEY)
GPU_UUIDS = ("GPU-0b1f7c2e-8d7a-4a51-9e0c-3f6d2b9a1c11", "GPU-7e4d2a90-15c3-4b8e-a2f6-9d0c8b7e6f22")
PRICE = 1_000


@pytest.fixture(scope="module")
def suite(deployer, treasury, token):
    """Registry + escrow with a 2-of-3 oracle set; payment and stake token are the same tUSD."""
    return deploy_suite(deployer, token, token, treasury, [o.address for o in ORACLES], 2, SuiteParams())


@pytest.fixture(scope="module")
def deployment(suite, deployer, treasury) -> Deployment:
    """The record `gpuex devnet up` would have written for the `suite` fixture's contracts."""
    params = SuiteParams()
    config = SuiteConfig(
        **{f.name: getattr(params, f.name) for f in fields(params)},
        treasury=treasury.address,
        oracles=[o.address for o in ORACLES],
        threshold=2,
    )
    return Deployment(
        chain_id=web3.eth.chain_id,
        network="development",
        deployer=deployer.address,
        registry=suite.registry.address,
        escrow=suite.escrow.address,
        payment_token=suite.payment_token.address,
        stake_token=suite.stake_token.address,
        test_token=True,
        start_block=suite.registry.tx.block_number,
        config=config,
    )


def fund_and_stake(suite, token, deployer, provider, renter) -> None:
    """Funds the provider and the renter, lets both contracts take their tokens, and stakes the provider with
    AGENT as its agent key."""
    for account in (provider, renter):
        token.mint(account, 1_000_000 * USDC, {"from": deployer})
        token.approve(suite.registry, 2**256 - 1, {"from": account})
        token.approve(suite.escrow, 2**256 - 1, {"from": account})
    suite.registry.stake(10_000 * USDC, {"from": provider})
    suite.registry.setAgent(AGENT.address, {"from": provider})


@pytest.fixture(scope="module")
def offer(suite, token, deployer, provider, renter):
    """An offer of the two GPU_UUIDS by `provider`, whose agent key is AGENT; `renter` is funded."""
    fund_and_stake(suite, token, deployer, provider, renter)
    hashes = [gpu_uuid_hash(u) for u in GPU_UUIDS]
    suite.registry.registerGpus(hashes, {"from": provider})
    terms = (
        b"H100-80GB".ljust(32, b"\0"),
        81_559,
        PRICE,
        60,
        86_400,
        b"eu-west".ljust(16, b"\0"),
        10_000,
        False,
        hashes,
    )
    return suite.registry.createOffer(terms, {"from": provider}).return_value
