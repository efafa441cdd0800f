"""`gpuex devnet up|down|status`."""

from __future__ import annotations

import json

from offchain.ops.devnet import DEVNET_CHAIN_ID
from tests.offchain.cli.conftest import PORT, SPARE_ORACLE_PORT, SPARE_PORT


def test_status_of_the_running_devnet(cli):
    status = cli.ok("devnet", "status", "--json").json()
    assert status["running"] and status["oracle_healthy"] and status["block_number"] > 0
    assert cli.ok("--json", "devnet", "status").json()["state"] == status["state"]
    assert "running" in cli.ok("devnet", "status").out


def test_status_of_a_directory_without_a_devnet_exits_1(cli, tmp_path):
    result = cli("devnet", "status", "--state-dir", tmp_path)
    assert result.code == 1 and "not running" in result.out


def test_up_of_a_running_devnet_returns_its_state(cli):
    state = cli.ok("devnet", "up", "--json").json()
    assert state["rpc_url"] == f"http://127.0.0.1:{PORT}" and state["chain_id"] == DEVNET_CHAIN_ID
    assert state["keys"]["renter"]["key_file"] == cli.key_file("renter")


def test_up_refuses_a_port_in_use(cli, tmp_path):
    error = cli.fails(1, "devnet", "up", "--state-dir", tmp_path, "--port", PORT, "--oracle-port", SPARE_ORACLE_PORT)
    assert f"port {PORT} for anvil is in use" in error


def test_down_without_a_devnet_exits_1(cli, tmp_path):
    assert cli.fails(1, "devnet", "down", "--state-dir", tmp_path) == f"no devnet in {tmp_path}"


def test_up_deploys_and_down_stops(cli, tmp_path):
    env = {"GPUEX_DEPLOYMENTS_DIR": str(tmp_path / "deployments")}
    state_dir = tmp_path / "devnet"
    up = cli.ok(
        "devnet",
        "up",
        "--state-dir",
        state_dir,
        "--port",
        SPARE_PORT,
        "--oracle-port",
        SPARE_ORACLE_PORT,
        "--epoch-seconds",
        "1",
        env=env,
    )
    try:
        assert "devnet up" in up.out and "GPUEX_KEY_FILE" in up.out
        record = json.loads((tmp_path / "deployments" / f"{DEVNET_CHAIN_ID}.json").read_text())
        assert record["network"] == "devnet"
        assert cli.ok("devnet", "status", "--state-dir", state_dir, "--json", env=env).json()["running"]
        assert cli.ok("offers", "search", "--state-dir", state_dir, "--json", env=env).json() == []
    finally:
        down = cli.ok("devnet", "down", "--state-dir", state_dir, "--json", env=env)
    assert down.json()["stopped"] is True
    assert cli("devnet", "status", "--state-dir", state_dir, env=env).code == 1
    assert (state_dir / "anvil-state.json").is_file()
