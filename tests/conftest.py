"""Fixtures every suite shares: the roles' accounts on Brownie's anvil (offchain.ops.roles, the devnet's table),
the test token, and what the off-chain and end-to-end suites need to point services at the chain.

A suite's own conftest.py defines `suite`, its deployment, which `chain_settings` points at.
"""

from __future__ import annotations

import pytest
from brownie import web3

from offchain.config import ChainSettings
from offchain.ops.devnet import DEV_JOB_IMAGE, build_job_image
from offchain.ops.roles import ACCOUNTS


@pytest.fixture(scope="module")
def deployer(accounts):
    return accounts[ACCOUNTS["deployer"]]


@pytest.fixture(scope="module")
def treasury(accounts):
    return accounts[ACCOUNTS["treasury"]]


@pytest.fixture(scope="module")
def provider(accounts):
    return accounts[ACCOUNTS["provider"]]


@pytest.fixture(scope="module")
def provider2(accounts):
    return accounts[ACCOUNTS["provider2"]]


@pytest.fixture(scope="module")
def renter(accounts):
    return accounts[ACCOUNTS["renter"]]


@pytest.fixture(scope="module")
def renter2(accounts):
    return accounts[ACCOUNTS["renter2"]]


@pytest.fixture(scope="module")
def agent(accounts):
    """The account of offchain.ops.roles.AGENT_KEY, unlocked on anvil."""
    return accounts[ACCOUNTS["agent"]]


@pytest.fixture(scope="module")
def stranger(accounts):
    return accounts[ACCOUNTS["stranger"]]


@pytest.fixture(scope="module")
def relayer(accounts):
    """Sends the oracles' transactions."""
    return accounts[ACCOUNTS["relayer"]]


@pytest.fixture(scope="module")
def token(TestStablecoin, deployer):
    return TestStablecoin.deploy(deployer, {"from": deployer})


@pytest.fixture(scope="session")
def rpc_url():
    return web3.provider.endpoint_uri


@pytest.fixture(scope="session")
def job_image() -> str:
    """The busybox job image, built with podman from Debian's busybox-static if it is not there yet."""
    build_job_image()
    return DEV_JOB_IMAGE


@pytest.fixture(scope="module")
def chain_settings(rpc_url, suite):
    return ChainSettings(
        rpc_url=rpc_url, chain_id=web3.eth.chain_id, registry=suite.registry.address, escrow=suite.escrow.address
    )
