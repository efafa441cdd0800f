"""Fixtures of the `gpuex` tests: one devnet for the session (anvil on 8575, the oracle on 8775, short timers), a
`cli` that runs `gpuex` in-process or as a subprocess with a devnet role's key, and a `market`: the provider
staked, its agent key set, two simulated GPUs registered and listed as one offer, all through the CLI.

The devnet's deployment record goes to a temporary `GPUEX_DEPLOYMENTS_DIR`, never the repository's
`deployments/`. Brownie's own anvil (the runner needs one) plays no part.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from offchain.chain import deployments
from offchain.chain.contracts import PROJECT_ROOT
from offchain.cli import main
from offchain.ops import devnet
from offchain.ops.deploy import SuiteParams

#: `GPUEX_TEST_CLI_PORT_BASE` moves every port below to a block of its own (base to base + 9), so that two runs of
#: these tests on one machine need not share the fixed ones.
_PORT_BASE = int(os.environ.get("GPUEX_TEST_CLI_PORT_BASE", "0"))
PORT = _PORT_BASE or 8575
ORACLE_PORT = _PORT_BASE + 1 if _PORT_BASE else 8775
#: A spare pair of ports for a second devnet, and one for an anvil of another chain.
SPARE_PORT = _PORT_BASE + 2 if _PORT_BASE else 8578
SPARE_ORACLE_PORT = _PORT_BASE + 3 if _PORT_BASE else 8778
OTHER_CHAIN_PORT = _PORT_BASE + 4 if _PORT_BASE else 8577
#: Free ports for a test's own services.
FREE_PORTS = range(_PORT_BASE + 5, _PORT_BASE + 10) if _PORT_BASE else range(8580, 8585)
OTHER_CHAIN_ID = 4242
#: Short timers: unbonding ends within seconds, an unstarted rental times out in half a minute.
PARAMS = SuiteParams(start_timeout=30, report_grace=5, unbonding_period=1)
PRICE_PER_HOUR = "7.20"  # 2,000 token units per second
SIMULATED_GPUS = 2


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    @property
    def error(self) -> str:
        """The one-line error on stderr."""
        lines = self.err.strip().splitlines()
        assert len(lines) == 1, f"expected one line on stderr, got: {self.err!r}"
        assert lines[0].startswith("gpuex: error: "), lines[0]
        return lines[0].removeprefix("gpuex: error: ")


def _clean_environ(extra: dict[str, str]) -> dict[str, str]:
    """The process environment without any gpuex setting a developer's shell or config file may hold, plus
    `extra`."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith("GPUEX_") or k in extra}
    kept["GPUEX_CONFIG"] = os.devnull
    kept.update(extra)
    return kept


class Cli:
    """Runs `gpuex` against the session's devnet, acting as a devnet role (`role=` sets `GPUEX_KEY_FILE`)."""

    def __init__(self, state_dir: Path, deployments_dir: Path):
        self.state_dir = state_dir
        self.base_env = {"GPUEX_DEVNET_DIR": str(state_dir), "GPUEX_DEPLOYMENTS_DIR": str(deployments_dir)}

    def key_file(self, role: str) -> str:
        return str(devnet.key_path(self.state_dir, role))

    def address(self, role: str) -> str:
        state = devnet.read_state(self.state_dir)
        assert state is not None
        return state.accounts[role]

    def env(self, role: str | None, env: dict[str, str] | None) -> dict[str, str]:
        values = dict(self.base_env)
        if role is not None:
            values["GPUEX_KEY_FILE"] = self.key_file(role)
        values.update(env or {})
        return values

    def __call__(self, *args: str, role: str | None = None, env: dict[str, str] | None = None) -> CliResult:
        """`gpuex ARGS` in this process."""
        saved = dict(os.environ)
        environ = _clean_environ(self.env(role, env))
        os.environ.clear()
        os.environ.update(environ)
        out, err = io.StringIO(), io.StringIO()
        try:
            with redirect_stdout(out), redirect_stderr(err):
                code = main([str(a) for a in args])
        finally:
            os.environ.clear()
            os.environ.update(saved)
        return CliResult(code, out.getvalue(), err.getvalue())

    def ok(self, *args: str, **kwargs) -> CliResult:
        result = self(*args, **kwargs)
        assert result.code == 0, f"gpuex {' '.join(map(str, args))} exited {result.code}: {result.err}"
        return result

    def fails(self, code: int, *args: str, **kwargs) -> str:
        """Runs a command that must fail with exit status `code`; returns its one-line error."""
        result = self(*args, **kwargs)
        assert result.code == code, f"exited {result.code}, not {code}: {result.out}{result.err}"
        return result.error

    def spawn(
        self, *args: str, role: str | None = None, env: dict[str, str] | None = None, log: Path | None = None
    ) -> subprocess.Popen:
        """`python -m offchain.cli ARGS` as a subprocess; stdout piped, stderr to `log` (or piped)."""
        stderr = open(log, "wb") if log is not None else subprocess.PIPE
        try:
            return subprocess.Popen(
                [sys.executable, "-m", "offchain.cli", *map(str, args)],
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=_clean_environ({**self.env(role, env), "PYTHONPATH": str(PROJECT_ROOT)}),
                cwd=PROJECT_ROOT,
            )
        finally:
            if log is not None:
                stderr.close()


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.2)


def stop(process: subprocess.Popen, timeout: float = 20) -> int:
    """SIGTERM, then the exit status (killing the process if it does not stop in time)."""
    if process.poll() is None:
        process.terminate()
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


@pytest.fixture(scope="session")
def cli(tmp_path_factory) -> Cli:
    root = tmp_path_factory.mktemp("gpuex-cli")
    state_dir = root / "devnet"
    deployments_dir = root / "deployments"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GPUEX_DEPLOYMENTS_DIR", str(deployments_dir))
        asyncio.run(devnet.up(state_dir, PORT, ORACLE_PORT, params=PARAMS, epoch_seconds=1.0, say=lambda _: None))
        try:
            yield Cli(state_dir, deployments_dir)
        finally:
            devnet.down(state_dir, say=lambda _: None)


@dataclass(frozen=True)
class Market:
    """The provider's setup, done through the CLI: each result is the happy path of its command."""

    stake: CliResult
    set_agent: CliResult
    register_gpus: CliResult
    create_offer: CliResult

    @property
    def offer_id(self) -> int:
        return self.create_offer.json()["offer"]["offer_id"]


@pytest.fixture(scope="session")
def market(cli) -> Market:
    return Market(
        stake=cli.ok("provider", "stake", "--amount", "1000", "--approve", "--json", role="provider"),
        set_agent=cli.ok("provider", "set-agent", cli.address("agent"), "--json", role="provider"),
        register_gpus=cli.ok("provider", "register-gpus", "--simulated", SIMULATED_GPUS, "--json", role="provider"),
        create_offer=cli.ok(
            "offer",
            "create",
            "--simulated",
            SIMULATED_GPUS,
            "--price-per-hour",
            PRICE_PER_HOUR,
            "--region",
            "eu-west",
            "--min-duration",
            "10s",
            "--max-duration",
            "2h",
            "--json",
            role="provider",
        ),
    )


@pytest.fixture(scope="session")
def other_chain() -> str:
    """The RPC URL of an anvil serving another chain than the devnet's."""
    process = subprocess.Popen(
        ["anvil", "--port", str(OTHER_CHAIN_PORT), "--chain-id", str(OTHER_CHAIN_ID), "--silent"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{OTHER_CHAIN_PORT}"
    try:
        wait_for(lambda: listening(OTHER_CHAIN_PORT), 15, "anvil of another chain")
        yield url
    finally:
        stop(process)


@pytest.fixture(scope="session")
def staging(cli, tmp_path_factory) -> dict[str, str]:
    """The environment of a deployment record of the devnet's suite under another name, as a live network's:
    use with `--network staging --rpc-url <the devnet's RPC>`."""
    directory = tmp_path_factory.mktemp("staging-deployments")
    state = devnet.read_state(cli.state_dir)
    assert state is not None
    deployments.save(state.deployment.model_copy(update={"network": "staging"}), directory)
    return {"GPUEX_DEPLOYMENTS_DIR": str(directory)}


STAGING = ("--network", "staging", "--rpc-url", f"http://127.0.0.1:{PORT}")
