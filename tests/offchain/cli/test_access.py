"""A renter's job through the CLI and the agent's renter API on the devnet: `rent --secret-env` sends the spec
privately, `rental status` shows the container, `rental logs --follow` prints the job's output, `rental shell` is
a real terminal (driven through a pseudo-terminal), `rental results -o DIR` unpacks the checked output folder; and
what another renter or a wrong spec gets."""

from __future__ import annotations

import hashlib
import json
import socket
import sys
import time

import pexpect
import pytest

from offchain.chain.contracts import PROJECT_ROOT
from tests.offchain.cli.conftest import _clean_environ, stop, wait_for

SECRET = "hf_cli-s3cr3t value"
LINES = 8
SPEC = {
    "command": [
        "sh",
        "-c",
        f"i=0; while [ $i -lt {LINES} ]; do echo line $i; i=$((i+1)); sleep 0.2; done; "
        "mkdir -p out; printf %s \"$HF_TOKEN\" | sha256sum | cut -d' ' -f1 > out/token.sha256; "
        "echo done > out/status; while [ ! -e /workspace/stop ]; do sleep 0.2; done; echo bye",
    ],
    "timeout_seconds": 600,
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def agent_api(cli, market, tmp_path_factory):
    """The provider's agent running with its renter API on a free port, published on chain; unpublished and
    stopped afterwards, so that the other tests' rentals find specs in the devnet's spec folder as before."""
    port = free_port()
    log = tmp_path_factory.mktemp("agent-api") / "agent.log"
    start_block = cli.ok("devnet", "status", "--json").json()["block_number"]
    agent = cli.spawn(
        "agent",
        "run",
        "--simulated",
        "2",
        log=log,
        env={
            "GPUEX_AGENT_KEY_FILE": cli.key_file("agent"),
            "GPUEX_AGENT_START_BLOCK": str(start_block),
            "GPUEX_AGENT_REPORT_INTERVAL_SECONDS": "1",
            "GPUEX_AGENT_CHAIN_POLL_SECONDS": "0.3",
            "GPUEX_AGENT_STOP_GRACE_SECONDS": "1",
            "GPUEX_AGENT_API_PORT": str(port),
        },
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _listening(port) or agent.poll() is not None, 60, "the agent's renter API")
        assert agent.poll() is None, log.read_text()[-2000:]
        cli.ok("provider", "set-agent-url", url, role="provider")
        yield url
    finally:
        cli.ok("provider", "set-agent-url", "--clear", role="provider")
        stop(agent)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def shell(cli, rental_id: int, role: str = "renter") -> pexpect.spawn:
    env = _clean_environ({**cli.env(role, None), "PYTHONPATH": str(PROJECT_ROOT)})
    return pexpect.spawn(
        sys.executable,
        ["-m", "offchain.cli", "rental", "shell", str(rental_id)],
        env=env,
        cwd=str(PROJECT_ROOT),
        timeout=30,
        dimensions=(24, 100),
        encoding="utf-8",
    )


def test_a_renter_sends_its_spec_privately_and_reaches_its_job(cli, market, agent_api, tmp_path):
    spec_file = tmp_path / "job.json"
    spec_file.write_text(json.dumps(SPEC))
    rented = cli.ok(
        "rent",
        market.offer_id,
        "--duration",
        "10m",
        "--spec",
        spec_file,
        "--secret-env",
        "HF_TOKEN",
        "--approve",
        "--json",
        role="renter",
        env={"HF_TOKEN": SECRET},
    ).json()
    rental_id = rented["rental"]["rental_id"]
    assert (rented["spec_sent_to"], rented["spec_dir"]) == (agent_api, None)

    def job() -> dict | None:
        return cli.ok("rental", "status", rental_id, "--json", role="renter").json()["job"]

    wait_for(
        lambda: (job() or {}).get("container") and job()["container"]["state"] == "running",
        60,
        "the job's container to run",
    )
    shown = cli.ok("rental", "status", rental_id, role="renter").out
    assert "job (from the provider's agent)" in shown and "localhost/gpuex/job:busybox" in shown
    keyless = cli.ok("rental", "status", rental_id, "--json").json()
    assert keyless["job"] is None and keyless["exit_code"] is None, "without the renter's key"
    assert keyless["job_unavailable"].endswith("to its renter only: set GPUEX_KEY_FILE to its key")
    intruder = cli.ok("rental", "status", rental_id, "--json", role="renter2").json()
    assert intruder["job"] is None and intruder["job_unavailable"].startswith(
        "the provider's agent answered: not_renter"
    )

    error = cli.fails(1, "rental", "logs", rental_id, role="renter2")
    assert error.startswith("not_renter: ")
    for command in (("results", rental_id, "-o", tmp_path / "stolen"), ("send-spec", rental_id, "--spec", spec_file)):
        assert cli(*("rental", *command), role="renter2", env={"HF_TOKEN": "x"}).code != 0
    assert not (tmp_path / "stolen").exists() or not any((tmp_path / "stolen").iterdir())

    wait_for(lambda: f"line {LINES - 1}" in cli.ok("rental", "logs", rental_id, role="renter").out, 30, "every line")
    session = shell(cli, rental_id)
    session.expect(r"\$ ")
    session.sendline("echo $((6*7)) $(id -u) $HOME")
    session.expect("42 65534 /workspace")
    session.sendline("exit")
    session.expect(pexpect.EOF)
    session.close()
    assert session.exitstatus == 0
    intruder = shell(cli, rental_id, role="renter2")
    intruder.expect(pexpect.EOF)
    intruder.close()
    assert intruder.exitstatus == 1 and "not_renter" in intruder.before

    ender = shell(cli, rental_id)
    ender.expect(r"\$ ")
    ender.sendline("touch /workspace/stop")
    ender.expect(pexpect.EOF)  # the job ends, and with it the shell
    ender.close()
    followed = cli.ok("rental", "logs", rental_id, "--follow", role="renter")
    assert followed.out.splitlines() == [f"line {i}" for i in range(LINES)] + ["bye"]
    assert "the job ended: exited with 0" in followed.err
    logged = cli.ok("rental", "logs", rental_id, "--json", role="renter").out
    entries = [json.loads(line) for line in logged.splitlines()]
    assert entries[-1]["end"] is True and entries[-2]["offset"] == entries[-1]["offset"]

    results = cli.ok("rental", "results", rental_id, "-o", tmp_path / "results", "--json", role="renter").json()
    assert results["skipped"] == [] and results["bytes"] > 0
    assert (tmp_path / "results" / "token.sha256").read_text().strip() == hashlib.sha256(SECRET.encode()).hexdigest()
    assert (tmp_path / "results" / "status").read_text() == "done\n"
    status = cli.ok("rental", "status", rental_id, "--json", role="renter").json()
    assert status["job"]["result_digest"] == results["digest"] and status["job"]["exit_code"] == 0
    assert (status["exit_code"], status["result_digest"], status["failure_reason"]) == (0, results["digest"], None)
    assert status["job_unavailable"] is None
    deadline = time.monotonic() + 60
    while not cli.ok("rental", "status", rental_id, "--json").json()["final"]:
        assert time.monotonic() < deadline, "the rental never settled"
        time.sleep(1)


def test_status_shows_how_a_failed_job_ended(cli, market, agent_api):
    rented = cli.ok(
        "rent",
        market.offer_id,
        "--duration",
        "1m",
        "--approve",
        "--json",
        "--image",
        "localhost/gpuex/job:busybox",
        "--",
        "sh",
        "-c",
        "echo no data >&2; exit 3",
        role="renter",
    ).json()
    rental_id = rented["rental"]["rental_id"]

    def status() -> dict:
        return cli.ok("rental", "status", rental_id, "--json", role="renter").json()

    wait_for(lambda: status()["exit_code"] is not None, 60, "the job's end")
    ended = status()
    assert ended["exit_code"] == 3 == ended["job"]["exit_code"]
    assert ended["failure_reason"] == ended["job"]["reason"] and "3" in ended["failure_reason"]
    assert ended["result_digest"] == ended["job"]["result_digest"] and ended["result_digest"].startswith("0x")
    shown = cli.ok("rental", "status", rental_id, role="renter").out
    assert "failure reason" in shown and ended["failure_reason"] in shown and ended["result_digest"] in shown
    wait_for(lambda: cli.ok("rental", "status", rental_id, "--json").json()["final"], 60, "the rental's end")
    assert cli.ok("rental", "status", rental_id, "--json").json()["status"] == "failed"


def test_send_spec_refuses_a_spec_the_rental_was_not_opened_with(cli, market, agent_api, tmp_path):
    spec_file = tmp_path / "job.json"
    spec_file.write_text(json.dumps({"command": ["sleep", "1"]}))
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"command": ["sleep", "2"]}))
    rental_id = cli.ok(
        "rent", market.offer_id, "--duration", "1m", "--spec", spec_file, "--approve", "--json", role="renter"
    ).json()["rental"]["rental_id"]
    try:
        error = cli.fails(2, "rental", "send-spec", rental_id, "--spec", other, role="renter")
        assert error.startswith(f"--spec {other} hashes to 0x")
        assert (
            cli.fails(
                2, "rental", "send-spec", rental_id, "--spec", spec_file, "--secret-env", "UNSET_VAR", role="renter"
            )
            == "the secret environment variable UNSET_VAR is not set in this shell"
        )
    finally:
        wait_for(lambda: cli.ok("rental", "status", rental_id, "--json").json()["final"], 60, "the rental's end")


def test_a_shell_needs_a_terminal(cli):
    assert cli.fails(2, "rental", "shell", 1, role="renter") == "`gpuex rental shell` needs a terminal"
