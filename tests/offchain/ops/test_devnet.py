"""`offchain.ops.devnet`: a real anvil and oracle brought up in the background, checked, brought down and back up
with the chain and deployment kept; its roles, which must be the tests' (offchain.ops.roles); and the refusals
(port taken)."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from eth_account import Account

from offchain.chain import deployments
from offchain.chain.reads import read_once
from offchain.ops import devnet
from offchain.ops.deploy import SuiteParams
from tests.contracts.helpers import ORACLES as CONTRACT_TEST_ORACLES
from tests.offchain.conftest import AGENT, ORACLES

PORT, ORACLE_PORT = 8595, 8795
PARAMS = SuiteParams(start_timeout=20, report_grace=10, unbonding_period=60)


@pytest.fixture(scope="module")
def devnet_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("devnet")
    patch = pytest.MonkeyPatch()
    patch.setenv(deployments.DIR_ENV, str(root / "deployments"))
    yield root / "state"
    devnet.down(root / "state", say=lambda _: None)
    patch.undo()


def up(state_dir):
    return asyncio.run(devnet.up(state_dir, PORT, ORACLE_PORT, PARAMS, say=lambda _: None))


def balance_of(state, account):
    deployment = state.deployment
    return read_once(
        state.rpc_url,
        deployment.registry,
        deployment.escrow,
        lambda r: r.token_balance(deployment.payment_token, account),
    )


def test_up_runs_anvil_and_the_oracle_and_records_the_deployment(devnet_dir):
    state = up(devnet_dir)
    status = asyncio.run(devnet.status(devnet_dir))
    assert status.running and status.oracle_healthy and status.block_number is not None
    assert deployments.load(devnet.DEVNET_CHAIN_ID) == state.deployment
    assert state.deployment.config.start_timeout == 20
    assert balance_of(state, state.accounts["renter"]) == devnet.FUNDING
    saved = json.loads((devnet_dir / "devnet.json").read_text())
    assert saved["oracle_url"] == f"http://127.0.0.1:{ORACLE_PORT}"
    key = devnet.key_path(devnet_dir, "provider")
    assert key.stat().st_mode & 0o777 == 0o600


def test_the_devnet_roles_are_the_accounts_the_test_fixtures_give_them(devnet_dir, request):
    state = up(devnet_dir)
    assert state.accounts == {
        role: Account.from_key(devnet.key_path(devnet_dir, role).read_text().strip()).address for role in devnet.ROLES
    }
    fixtures = {
        role: request.getfixturevalue(role).address
        for role in ("deployer", "treasury", "provider", "provider2", "renter", "renter2", "agent")
    }
    assert {role: state.accounts[role] for role in fixtures} == fixtures
    assert state.accounts["agent"] == AGENT.address
    assert state.accounts["oracle"] == ORACLES[0].address == CONTRACT_TEST_ORACLES[0].address
    assert state.deployment.config.treasury == fixtures["treasury"]
    assert state.deployment.config.oracles == [ORACLES[0].address]


def test_blocks_come_every_second_without_transactions(devnet_dir):
    first = asyncio.run(devnet.status(devnet_dir)).block_number
    asyncio.run(asyncio.sleep(2.5))
    assert asyncio.run(devnet.status(devnet_dir)).block_number >= first + 2


def test_up_again_returns_the_running_devnet(devnet_dir):
    before = devnet.read_state(devnet_dir)
    assert up(devnet_dir) == before


def test_down_then_up_keeps_the_chain_and_the_deployment(devnet_dir):
    before = devnet.read_state(devnet_dir)
    assert devnet.down(devnet_dir, say=lambda _: None)
    status = asyncio.run(devnet.status(devnet_dir))
    assert not status.running and not status.anvil_alive and not status.oracle_alive
    after = up(devnet_dir)
    assert after.deployment == before.deployment
    assert after.anvil_pid != before.anvil_pid


def test_a_taken_port_is_refused(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(devnet.DevnetError, match=f"port {port} for anvil is in use"):
            asyncio.run(devnet.up(tmp_path / "other", port, ORACLE_PORT + 1, PARAMS, say=lambda _: None))


def test_down_without_a_devnet_says_so(tmp_path):
    lines = []
    assert not devnet.down(tmp_path / "none", say=lines.append)
    assert lines and "no devnet" in lines[0]


def test_anvil_is_found_beside_python_when_path_lacks_it(monkeypatch):
    """`make setup` links anvil into the environment's bin/: a shell that never activated it still gets it."""
    monkeypatch.setenv("PATH", "/nonexistent")
    beside = Path(sys.executable).parent / "anvil"
    assert devnet.anvil_command() == str(beside)
    assert subprocess.run([devnet.anvil_command(), "--version"], capture_output=True).returncode == 0
