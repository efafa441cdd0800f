"""`gpuex agent run` (its refusals; a whole rental is in test_rental.py), `gpuex oracle serve` and
`gpuex oracle keeper`, each stopped by a signal."""

from __future__ import annotations

import signal
import sqlite3
import urllib.request

from offchain.oracle.service import KEEPER_FILE
from tests.offchain.cli.conftest import STAGING, stop, wait_for

SERVE_PORT = 8779


def test_agent_run_without_a_key_names_the_variable(cli):
    error = cli.fails(2, "agent", "run", "--simulated", "2")
    assert error == "no key: set GPUEX_AGENT_KEY_FILE to a file holding the hex private key (or GPUEX_AGENT_KEY)"


def test_agent_run_with_a_key_that_is_no_agent(cli, market):
    error = cli.fails(1, "agent", "run", "--simulated", "2", env={"GPUEX_AGENT_KEY_FILE": cli.key_file("renter2")})
    assert (
        error == f"the key {cli.address('renter2')} is no provider's agent: the provider runs "
        f"`gpuex provider set-agent {cli.address('renter2')}` first"
    )


def test_agent_run_for_a_provider_with_another_agent(cli, market):
    error = cli.fails(
        1,
        "agent",
        "run",
        "--simulated",
        "2",
        "--provider",
        cli.address("provider"),
        env={"GPUEX_AGENT_KEY_FILE": cli.key_file("renter2")},
    )
    assert (
        error == f"provider {cli.address('provider')}'s agent is {cli.address('agent')}, not this key "
        f"{cli.address('renter2')}"
    )


def test_agent_run_off_the_devnet_needs_an_oracle_and_real_gpus(cli, market, staging):
    env = {**staging, "GPUEX_AGENT_KEY_FILE": cli.key_file("agent")}
    assert cli.fails(2, "agent", "run", *STAGING, env=env) == "no oracle: pass --oracle URL or set GPUEX_AGENT_ORACLES"
    error = cli.fails(2, "agent", "run", "--simulated", "2", "--oracle", "http://127.0.0.1:8775", *STAGING, env=env)
    assert error.startswith("--simulated is for the devnet")


def test_agent_run_refuses_bare_processes_off_the_devnet(cli, market, staging):
    env = {**staging, "GPUEX_AGENT_KEY_FILE": cli.key_file("agent"), "GPUEX_AGENT_ALLOW_SIMULATED": "true"}
    error = cli.fails(
        2,
        "agent",
        "run",
        "--simulated",
        "2",
        "--oracle",
        "http://127.0.0.1:8775",
        "--unsafe-bare-process",
        *STAGING,
        env=env,
    )
    assert error == "--unsafe-bare-process is for the devnet only: everywhere else every job runs in a container"


def test_oracle_serve_until_sigterm(cli, tmp_path):
    oracle = cli.spawn(
        "oracle",
        "serve",
        log=tmp_path / "oracle.log",
        env={
            "GPUEX_ORACLE_KEY_FILE": cli.key_file("renter2"),
            "GPUEX_ORACLE_PORT": str(SERVE_PORT),
            "GPUEX_ORACLE_STATE_DIR": str(tmp_path / "oracle"),
        },
    )
    try:

        def healthy() -> bool:
            assert oracle.poll() is None, (tmp_path / "oracle.log").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{SERVE_PORT}/healthz", timeout=2) as response:
                    return response.status == 200
            except OSError:
                return False

        wait_for(healthy, 30, "the oracle to answer /healthz")
    finally:
        assert stop(oracle) == 0, (tmp_path / "oracle.log").read_text()


def test_oracle_serve_without_a_key_names_the_variable(cli):
    error = cli.fails(2, "oracle", "serve")
    assert error == "no key: set GPUEX_ORACLE_KEY_FILE to a file holding the hex private key (or GPUEX_ORACLE_KEY)"


def test_oracle_serve_with_a_bad_setting(cli):
    error = cli.fails(
        2, "oracle", "serve", env={"GPUEX_ORACLE_KEY_FILE": cli.key_file("renter2"), "GPUEX_ORACLE_PORT": "http"}
    )
    assert error.startswith("bad GPUEX_ORACLE_* settings: port: ")


def test_oracle_keeper_until_sigint(cli, tmp_path):
    state = tmp_path / "keeper"
    keeper = cli.spawn(
        "oracle",
        "keeper",
        log=tmp_path / "keeper.log",
        env={
            "GPUEX_ORACLE_KEY_FILE": cli.key_file("renter2"),
            "GPUEX_ORACLE_STATE_DIR": str(state),
            "GPUEX_ORACLE_KEEPER_INTERVAL_SECONDS": "0.5",
        },
    )

    def scanned() -> bool:
        assert keeper.poll() is None, (tmp_path / "keeper.log").read_text()
        if not (state / KEEPER_FILE).is_file():
            return False
        with sqlite3.connect(state / KEEPER_FILE) as db:
            try:
                return db.execute("SELECT count(*) FROM keeper_cursor").fetchone()[0] == 1
            except sqlite3.OperationalError:  # the keeper has not created its tables yet
                return False

    try:
        wait_for(scanned, 30, "the keeper to scan the escrow's events")
        keeper.send_signal(signal.SIGINT)
        assert keeper.wait(20) == 0, (tmp_path / "keeper.log").read_text()
    finally:
        stop(keeper)


def test_oracle_keeper_without_a_key_names_the_variable(cli):
    assert cli.fails(2, "oracle", "keeper").startswith("no key: set GPUEX_ORACLE_KEY_FILE")


STATUS_PORT = 9231  # this suite's own port for the oracle that `oracle status` reads


def test_oracle_status_shows_what_waits_for_finality(cli, tmp_path):
    oracle = cli.spawn(
        "oracle",
        "serve",
        log=tmp_path / "oracle.log",
        env={
            "GPUEX_ORACLE_KEY_FILE": cli.key_file("renter2"),
            "GPUEX_ORACLE_PORT": str(STATUS_PORT),
            "GPUEX_ORACLE_STATE_DIR": str(tmp_path / "oracle"),
        },
    )
    url = f"http://127.0.0.1:{STATUS_PORT}"
    try:

        def healthy() -> bool:
            assert oracle.poll() is None, (tmp_path / "oracle.log").read_text()
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                    return response.status == 200
            except OSError:
                return False

        wait_for(healthy, 30, "the oracle to answer /healthz")
        shown = cli.ok("oracle", "status", "--url", url, "--json").json()
        human = cli.ok("oracle", "status", "--url", url + "/").out
        not_metrics = cli.fails(1, "oracle", "status", "--url", f"{url}/healthz")
    finally:
        assert stop(oracle) == 0, (tmp_path / "oracle.log").read_text()
    assert shown == {
        "url": url,
        "confirmations": 1,  # the devnet's chain id: a development chain
        "transactions_unconfirmed": {"lt_1m": 0, "1m_10m": 0, "ge_10m": 0},
        "transactions_awaiting_confirmations": 0,
        "oldest_unconfirmed_seconds": 0.0,
        "reports_held": 0,
        "reports_batched": 0,
        "reorgs": {},
        "reports_relanded": {},
    }
    assert f"oracle at {url}" in human and "1 blocks" in human and "reorgs seen" in human
    assert not_metrics == f"{url}/healthz/metrics answered HTTP 404"


def test_oracle_status_refuses_a_url_that_is_not_http(cli):
    assert cli.fails(2, "oracle", "status", "--url", "file:///etc/passwd").startswith("--url must be an http(s) URL")


def test_oracle_status_of_an_oracle_that_does_not_answer_fails_with_the_reason(cli):
    assert "Cannot connect" in cli.fails(1, "oracle", "status", "--url", f"http://127.0.0.1:{STATUS_PORT + 1}")
