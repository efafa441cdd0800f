"""`gpuex devnet up|down|status`."""

from __future__ import annotations

import json
import subprocess

from offchain.ops import devnet
from offchain.ops.devnet import DEVNET_CHAIN_ID
from offchain.ops.processes import process_alive
from tests.offchain.cli.conftest import PORT, SPARE_ORACLE_PORT, SPARE_PORT, stop, wait_for


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


def test_down_stops_what_up_started_and_names_the_agents_it_did_not(cli, tmp_path):
    env = {"GPUEX_DEPLOYMENTS_DIR": str(tmp_path / "deployments")}
    state_dir = tmp_path / "devnet"
    on_spare = ("--state-dir", state_dir)
    cli.ok("devnet", "up", *on_spare, "--port", SPARE_PORT, "--oracle-port", SPARE_ORACLE_PORT, env=env)
    state = devnet.read_state(state_dir)
    assert state is not None
    agent_address = cli.address("agent2")
    agent = None
    try:
        cli.ok("provider", "set-agent", agent_address, *on_spare, role="provider2", env=env)
        cli.ok("provider", "set-agent", cli.address("agent"), *on_spare, role="provider", env=env)  # never run
        agent = cli.spawn(
            "agent",
            "run",
            "--simulated",
            "1",
            "--unsafe-bare-process",
            *on_spare,
            log=tmp_path / "agent.log",
            env={**env, "GPUEX_AGENT_KEY_FILE": cli.key_file("agent2"), "GPUEX_AGENT_API_PORT": "0"},
        )
        pid_file = devnet.agent_pid_path(devnet.agent_dir(state_dir, agent_address))
        wait_for(pid_file.is_file, 30, "the agent's pid file")
    finally:
        down = cli(*("devnet", "down", *on_spare, "--json"), env=env)
    assert down.code == 0, down.err
    assert not process_alive(state.anvil_pid) and not process_alive(state.oracle_pid)
    assert agent is not None and agent.poll() is None, "the agent down did not start is left running"
    provider = cli.address("provider2")
    assert f"agent for provider {provider} (pid {agent.pid}) was not started by devnet up; stop it yourself" in down.err
    assert (
        f"agent for provider {cli.address('provider')} (key {cli.address('agent')}, set on the devnet's chain) was not "
        "started by devnet up; if it runs, stop it yourself" in down.err
    )
    assert f"agent for provider {provider} (key" not in down.err, "the running agent is named once, with its pid"
    assert down.json()["agents_registered"] == sorted(
        [
            {"provider": provider, "agent": agent_address},
            {"provider": cli.address("provider"), "agent": cli.address("agent")},
        ],
        key=lambda a: a["provider"],
    )
    assert down.json()["agents_left_running"] == [{"agent": agent_address, "provider": provider, "pid": agent.pid}]
    listed = cli.ok("devnet", "down", *on_spare, "--json", env=env)
    assert listed.json()["agents_registered"] == [], "the chain is down: only the pid files tell"
    assert listed.json()["agents_left_running"] == [{"agent": agent_address, "provider": provider, "pid": agent.pid}]
    assert listed.json()["stopped"] is False and "was not started by devnet up" in listed.err
    stop(agent)
    assert not pid_file.exists(), "a stopped agent takes its pid file away"
    assert cli.ok("devnet", "down", *on_spare, "--json", env=env).json()["agents_left_running"] == []


def test_a_stale_agent_pid_file_names_no_agent(tmp_path):
    """A pid file left by a crash names a process that is gone, or one that reused its pid and is no agent."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    other = subprocess.Popen(["sleep", "30"])
    try:
        for number, pid in enumerate((gone.pid, other.pid)):
            address = f"0x{number + 1:040x}"
            agent_dir = devnet.agent_dir(tmp_path, address)
            agent_dir.mkdir(parents=True)
            record = {"agent": address, "provider": address, "pid": pid}
            devnet.agent_pid_path(agent_dir).write_text(json.dumps(record))
        assert devnet.running_agents(tmp_path) == []
    finally:
        stop(other)
