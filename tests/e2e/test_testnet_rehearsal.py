"""The testnet runbook, rehearsed: docs/DEPLOY.md followed on an anvil that has the chain id of each of its four
networks (Sepolia, Base Sepolia, Arbitrum Sepolia, OP Sepolia), by running its blocks themselves.

Every fenced `sh` block of DEPLOY.md whose first line is `# runbook: STEP` is a step; they run in the order of the
file, each in `bash -euo pipefail` after the network's own block (`# runbook: network CHAIN_ID`), from the root of
the checkout; `service` steps (the three oracles, the agent) run in the background until the end. The only
changes are those a local chain needs (`rehearsal_edits`), each of which must still find its text in the file, and
the few settings a fast rehearsal adds to the environment (`rehearsal_env`). So the runbook cannot drift from what
works: the deploy script, the oracles and the agent as separate processes, the `gpuex` CLI of every role.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pytest
from web3 import HTTPProvider, Web3
from web3.types import RPCEndpoint

from offchain.chain.contracts import PROJECT_ROOT
from offchain.chain.reads import read_once

RUNBOOK = PROJECT_ROOT / "docs" / "DEPLOY.md"
MARKER = "# runbook: "
#: Chain id -> the Brownie network name DEPLOY.md gives it, without its `gpuex-` prefix.
NETWORKS = {11_155_111: "sepolia", 84_532: "base-sepolia", 421_614: "arbitrum-sepolia", 11_155_420: "op-sepolia"}
PORT = 9350
RPC_URL = f"http://127.0.0.1:{PORT}"
ORACLE_PORTS = {1: 9351, 2: 9352, 3: 9353}
AGENT_PORT = 9354
SERVICE_PORTS = {**{f"oracle-{n}": port for n, port in ORACLE_PORTS.items()}, "agent": AGENT_PORT}
BIN = Path(sys.executable).parent
ROLES = ("deployer", "treasury", "oracle-1", "oracle-2", "oracle-3", "provider", "agent", "renter")
TOKEN_DECIMALS = 6
FAUCET_UNITS = 10_000 * 10**6  # one claim of the test token's faucet
STAKE_UNITS = 1_000 * 10**6  # what the runbook's provider stakes
FIRST_RENTAL = (1 << 32) | 1  # the first rental of offer 1, as the runbook names it


@dataclass(frozen=True)
class Step:
    name: str  # what follows the marker: `keys`, `service oracle-1`, `network 84532`, ...
    script: str


def runbook_steps(text: str) -> list[Step]:
    """The marked `sh` blocks of the runbook, in order."""
    steps = []
    for body in re.findall(r"^```sh\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL):
        first, _, rest = body.partition("\n")
        if first.startswith(MARKER):
            steps.append(Step(first.removeprefix(MARKER).strip(), rest))
    return steps


def rehearsal_edits(ops: Path, job_image: str) -> list[tuple[str, str]]:
    """(pattern, replacement) pairs that turn the runbook for a public testnet into one for the local anvil."""
    edits = [
        (r"^export GPUEX_RPC_URL=\S+$", f"export GPUEX_RPC_URL={RPC_URL}"),
        (r"\bOPS=\S+", f"OPS={ops}"),
        (r"\bNETWORK=gpuex-", "NETWORK=gpuex-rehearsal-"),
        (r"https://agent\.example\.org", f"http://127.0.0.1:{AGENT_PORT}"),
        (r"\bGPUEX_AGENT_API_PORT=8780\b", f"GPUEX_AGENT_API_PORT={AGENT_PORT}"),
        (r"\bgpuex provider register-gpus$", "gpuex provider register-gpus --simulated 1"),
        (r"\bgpuex offer create ", "gpuex offer create --simulated 1 "),
        (r"\bgpuex agent run$", "gpuex agent run --simulated 1"),
        (r"docker\.io/nvidia/cuda:[^\"]+", job_image),
        (r"\bnvidia-smi -L\b", "echo simulated"),
    ]
    for n, port in ORACLE_PORTS.items():
        edits.append((rf"https://oracle-{n}\.example\.org", f"http://127.0.0.1:{port}"))
        edits.append((rf"\bGPUEX_ORACLE_PORT=870{n}\b", f"GPUEX_ORACLE_PORT={port}"))
    return edits


def apply_edits(steps: list[Step], edits: list[tuple[str, str]]) -> list[Step]:
    """`steps` with every edit applied; an edit that no longer finds its text fails the rehearsal."""
    edited = steps
    for pattern, replacement in edits:
        compiled = re.compile(pattern, flags=re.MULTILINE)
        assert any(compiled.search(s.script) for s in edited), f"DEPLOY.md no longer has {pattern!r}"
        edited = [Step(s.name, compiled.sub(replacement.replace("\\", "\\\\"), s.script)) for s in edited]
    return edited


def rehearsal_env(deployments: Path) -> dict[str, str]:
    """The environment every step runs in: this checkout's tools, none of the caller's GPUEX_* settings, and what
    a rehearsal adds: temporary deployment records, simulated telemetry, batches every second, reports every two."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUEX_")}
    env.update(
        PYTHONPATH=str(PROJECT_ROOT),
        PATH=f"{PROJECT_ROOT / 'tools'}:{BIN}:{env.get('PATH', '')}",
        COLUMNS="200",  # tables wide enough to read whole
        GPUEX_DEPLOYMENTS_DIR=str(deployments),
        GPUEX_ORACLE_ALLOW_SIMULATED="true",
        GPUEX_ORACLE_EPOCH_SECONDS="1",
        GPUEX_AGENT_ALLOW_SIMULATED="true",
        GPUEX_AGENT_REPORT_INTERVAL_SECONDS="2",
        GPUEX_AGENT_START_BLOCK="0",  # the agent may start a block after the rental it must run opens
    )
    return env


def wait_for_port(port: int, process: subprocess.Popen, log: Path, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        assert process.poll() is None, f"it stopped: {log.read_text()[-2000:]}"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert time.monotonic() < deadline, f"nothing listens on {port}: {log.read_text()[-2000:]}"
        time.sleep(0.2)


@dataclass
class Rehearsal:
    """What one network's rehearsal ran and left behind."""

    chain_id: int
    ops: Path
    env: dict[str, str]
    network_script: str
    outputs: dict[str, str] = field(default_factory=dict)
    services: dict[str, subprocess.Popen] = field(default_factory=dict)

    def run(self, step: Step, timeout: float = 180, succeeds: bool = True) -> str:
        """Runs `step` after the network's block; its output, once it exited as `succeeds` says."""
        process = subprocess.Popen(
            ["bash", "-euo", "pipefail", "-c", f"{self.network_script}\n{step.script}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
            cwd=PROJECT_ROOT,
            start_new_session=True,
        )
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
            pytest.fail(f"step {step.name} ran past {timeout} s:\n{output}\n{self.service_logs()}")
        assert (process.returncode == 0) is succeeds, (
            f"step {step.name}: {process.returncode}\n{output}\n{self.service_logs()}"
        )
        return output

    def start(self, step: Step) -> None:
        name = step.name.removeprefix("service ")
        log = self.ops / f"{name}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                ["bash", "-euo", "pipefail", "-c", f"{self.network_script}\n{step.script}"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=PROJECT_ROOT,
                start_new_session=True,
            )
        self.services[name] = process
        wait_for_port(SERVICE_PORTS[name], process, log)

    def service_logs(self, chars: int = 1500) -> str:
        """The end of each background service's log, for a step that failed."""
        return "\n".join(f"--- {name}:\n{(self.ops / f'{name}.log').read_text()[-chars:]}" for name in self.services)

    def stop(self) -> None:
        for process in reversed(self.services.values()):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(30)

    def gpuex(self, *args: str) -> dict:
        done = subprocess.run(
            [str(BIN / "gpuex"), *args, "--json"],
            capture_output=True,
            text=True,
            env={**self.env, "GPUEX_NETWORK": str(self.chain_id), "GPUEX_RPC_URL": RPC_URL},
            cwd=PROJECT_ROOT,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def address(self, role: str) -> str:
        return (self.ops / "keys" / f"{role}.address").read_text().strip()

    def record(self) -> dict:
        return json.loads((Path(self.env["GPUEX_DEPLOYMENTS_DIR"]) / f"{self.chain_id}.json").read_text())

    def token_balance(self, role: str) -> int:
        record = self.record()
        return read_once(
            RPC_URL,
            record["registry"],
            record["escrow"],
            lambda r: r.token_balance(record["payment_token"], self.address(role)),
        )


def start_anvil(chain_id: int) -> subprocess.Popen:
    anvil = subprocess.Popen(
        [str(BIN / "anvil"), "--port", str(PORT), "--chain-id", str(chain_id), "--block-time", "1", "--silent"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    w3 = Web3(HTTPProvider(RPC_URL))
    deadline = time.monotonic() + 20
    while not w3.is_connected():
        assert anvil.poll() is None and time.monotonic() < deadline, "anvil did not come up"
        time.sleep(0.2)
    return anvil


def fund(ops: Path) -> None:
    """The runbook's step 3 (ether from a faucet), done by anvil: 100 ether for each key's address."""
    w3 = Web3(HTTPProvider(RPC_URL))
    addresses = sorted((ops / "keys").glob("*.address"))
    assert [a.stem for a in addresses] == sorted(ROLES)
    for path in addresses:
        w3.provider.make_request(RPCEndpoint("anvil_setBalance"), [path.read_text().strip(), hex(100 * 10**18)])


@pytest.fixture(scope="module", params=list(NETWORKS), ids=NETWORKS.get)
def rehearsal(request, tmp_path_factory, job_image) -> Iterator[Rehearsal]:
    """One network's runbook run from its first step to its last on an anvil with the network's chain id."""
    chain_id = request.param
    root = tmp_path_factory.mktemp(NETWORKS[chain_id])
    steps = apply_edits(runbook_steps(RUNBOOK.read_text()), rehearsal_edits(root / "ops", job_image))
    networks = {s.name.removeprefix("network "): s for s in steps if s.name.startswith("network ")}
    assert sorted(networks) == sorted(map(str, NETWORKS)), "one network block per network"
    env = rehearsal_env(root / "deployments")
    brownie_network = f"gpuex-rehearsal-{NETWORKS[chain_id]}"
    brownie = [str(BIN / "brownie"), "networks", "delete", brownie_network]
    subprocess.run(brownie, capture_output=True, env=env, cwd=PROJECT_ROOT, timeout=60)
    anvil = start_anvil(chain_id)
    rehearsal = Rehearsal(chain_id, root / "ops", env, networks[str(chain_id)].script)
    try:
        for step in steps:
            if step.name.startswith("network "):
                continue
            if step.name.startswith("service "):
                rehearsal.start(step)
                continue
            rehearsal.outputs[step.name] = rehearsal.run(step)
            if step.name == "keys":
                fund(rehearsal.ops)
        (deploy,) = [s for s in steps if s.name == "deploy"]
        rehearsal.outputs["deploy again"] = rehearsal.run(deploy)
        yield rehearsal
    finally:
        rehearsal.stop()
        subprocess.run(brownie, capture_output=True, env=env, cwd=PROJECT_ROOT, timeout=60)
        os.killpg(anvil.pid, signal.SIGTERM)
        anvil.wait(10)


def test_every_network_has_its_runbook_block():
    steps = runbook_steps(RUNBOOK.read_text())
    names = [s.name for s in steps]
    assert [n for n in names if n.startswith("network ")] == [f"network {c}" for c in NETWORKS]
    for chain_id in NETWORKS:
        assert f"chain {chain_id}" in RUNBOOK.read_text()
    assert {"keys", "deploy", "tokens", "provider", "renter", "earnings"} <= set(names)
    assert names.index("tokens") < names.index("provider") < names.index("renter") < names.index("earnings")


def test_the_runbook_deploys_a_two_of_three_suite_and_a_rerun_sends_nothing(rehearsal):
    record = rehearsal.record()
    assert record["chain_id"] == rehearsal.chain_id and record["test_token"] is True
    assert record["network"] == f"gpuex-rehearsal-{NETWORKS[rehearsal.chain_id]}"
    oracles = [Web3.to_checksum_address(rehearsal.address(f"oracle-{n}")) for n in ORACLE_PORTS]
    assert (record["config"]["oracles"], record["config"]["threshold"]) == (oracles, 2)
    assert record["config"]["treasury"] == Web3.to_checksum_address(rehearsal.address("treasury"))
    assert "[dry run] would deploy ProviderRegistry" in rehearsal.outputs["deploy"]
    assert "nothing to send" in rehearsal.outputs["deploy again"]
    nonce = Web3(HTTPProvider(RPC_URL)).eth.get_transaction_count(rehearsal.address("deployer"))
    assert nonce == 3, "token, registry, escrow: nothing from the dry run or the rerun"


def test_the_deploy_script_refuses_a_live_network_without_a_key(rehearsal):
    keyless = Step("deploy without a key", 'python -m scripts.run deploy --network "$NETWORK"')
    refused = rehearsal.run(keyless, succeeds=False)
    assert "set GPUEX_DEPLOY_KEY or GPUEX_DEPLOY_KEY_FILE" in refused


def test_the_renter_sees_the_new_providers_offer_and_the_rental_settles(rehearsal):
    listed = rehearsal.outputs["renter-search"]
    assert "eu-west" in listed and "new" in listed and "available" in listed
    status = rehearsal.gpuex("rental", "status", str(FIRST_RENTAL))
    assert status["status"] == "completed"
    settlement = status["settlement"]
    assert settlement["delivered_seconds"] > 0 and Decimal(settlement["provider_payout"]) > 0
    assert Decimal(settlement["refund"]) > 0, "the job ended within seconds: the rest of the hour goes back"
    (gpus,) = (rehearsal.ops / "results").rglob("gpus.txt")
    assert gpus.read_text().strip() == "simulated"


def test_the_provider_the_treasury_and_the_renter_withdrew_what_the_settlement_credited(rehearsal):
    settlement = rehearsal.gpuex("rental", "status", str(FIRST_RENTAL))["settlement"]
    payout, fee = (int(Decimal(settlement[name]).scaleb(TOKEN_DECIMALS)) for name in ("provider_payout", "fee"))
    assert fee > 0
    assert rehearsal.token_balance("provider") == FAUCET_UNITS - STAKE_UNITS + payout
    assert rehearsal.token_balance("treasury") == fee
    assert rehearsal.token_balance("renter") == FAUCET_UNITS - payout - fee, "the refund came home"
