"""Fixtures of the transaction manager and keeper tests, on top of tests/offchain/conftest.py."""

from __future__ import annotations

import pytest
from brownie import web3
from eth_account import Account
from eth_utils import keccak


@pytest.fixture
def sender(request, accounts):
    """A fresh key, funded with 100 ether, that only the test at hand sends from."""
    account = Account.from_key(keccak(text=f"txmgr sender {request.node.nodeid}"))
    accounts[0].transfer(account.address, "100 ether")
    return account


@pytest.fixture(scope="session")
def chain_id():
    return web3.eth.chain_id


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "txmgr.sqlite"
