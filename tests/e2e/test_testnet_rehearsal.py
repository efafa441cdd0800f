"""The testnet runbook, rehearsed: the deploy script against an anvil that poses as Sepolia (chain 11155111), added
to Brownie as a live network, then one rental run through the `gpuex` CLI with an oracle and an agent as separate
processes, as an operator, a provider and a renter would on a public testnet.

Everything runs as subprocesses with their own environment: the deploy script through `brownie run` (or
`python -m scripts.run` where a directory above the project has a dot in its name, which `brownie run` cannot
import from), `gpuex` through its console script. Keys are files; nothing secret is on a command line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from web3 import HTTPProvider, Web3

from offchain.chain.contracts import PROJECT_ROOT, load_artifact
from offchain.chain.reads import read_once
from offchain.ops import roles

CHAIN_ID = 11_155_111
NETWORK = "gpuex-rehearsal"
PORT, ORACLE_PORT = 8605, 8805
RPC_URL = f"http://127.0.0.1:{PORT}"
BIN = Path(sys.executable).parent
ROLES = ("deployer", "oracle", "provider", "agent", "renter")
PRICE_PER_HOUR = "3.6"  # 1,000 units of the 6-decimal test token per second
RENTAL_SECONDS = 30


@dataclass
class Run:
    code: int
    out: str
    err: str


def run(command: list[str], env: dict[str, str], timeout: float = 180) -> Run:
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=PROJECT_ROOT, timeout=timeout)
    return Run(done.returncode, done.stdout, done.stderr)


def base_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUEX_")}
    env.update(PYTHONPATH=str(PROJECT_ROOT), PATH=f"{PROJECT_ROOT / 'tools'}:{BIN}:{env.get('PATH', '')}", **extra)
    return env


def deploy_command() -> list[str]:
    if any("." in part for part in PROJECT_ROOT.parts[1:]):
        return [sys.executable, "-m", "scripts.run", "deploy", "--network", NETWORK]
    return [str(BIN / "brownie"), "run", "scripts/deploy.py", "--network", NETWORK]


@pytest.fixture(scope="module")
def testnet(tmp_path_factory):
    """Anvil as chain 11155111, known to Brownie as the live network `gpuex-rehearsal`; the role key files."""
    root = tmp_path_factory.mktemp("rehearsal")
    anvil = subprocess.Popen(
        [
            str(BIN / "anvil"),
            "--port",
            str(PORT),
            "--chain-id",
            str(CHAIN_ID),
            "--block-time",
            "1",
            "--accounts",
            str(roles.ACCOUNT_COUNT),
            "--silent",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    env = base_env({"GPUEX_DEPLOYMENTS_DIR": str(root / "deployments")})
    brownie = str(BIN / "brownie")
    run([brownie, "networks", "delete", NETWORK], env)
    added = run([brownie, "networks", "add", "Ethereum", NETWORK, f"host={RPC_URL}", f"chainid={CHAIN_ID}"], env)
    assert added.code == 0, added.out + added.err
    keys = {}
    for role in ROLES:
        keys[role] = root / f"{role}.key"
        keys[role].write_text("0x" + roles.KEYS[role].hex() + "\n")
        keys[role].chmod(0o600)
    w3 = Web3(HTTPProvider(RPC_URL))
    deadline = time.monotonic() + 20
    while not w3.is_connected():
        assert time.monotonic() < deadline, "anvil did not come up"
        time.sleep(0.2)
    try:
        yield root, env, keys, w3
    finally:
        run([brownie, "networks", "delete", NETWORK], env)
        os.killpg(anvil.pid, signal.SIGTERM)
        anvil.wait(10)


@pytest.fixture(scope="module")
def deployment(testnet):
    """Runs the deploy script as the runbook says: without a key (refused), dry, for real, and once more."""
    root, env, keys, w3 = testnet
    settings = {
        "GPUEX_DEPLOY_ORACLES": json.dumps([roles.address("oracle")]),
        "GPUEX_DEPLOY_THRESHOLD": "1",
        "GPUEX_DEPLOY_START_TIMEOUT": "30",
        "GPUEX_DEPLOY_REPORT_GRACE": "10",
    }
    runs = {"no key": run(deploy_command(), {**env, **settings})}
    settings["GPUEX_DEPLOY_KEY_FILE"] = str(keys["deployer"])
    runs["dry run"] = run(deploy_command(), {**env, **settings, "GPUEX_DEPLOY_DRY_RUN": "1"})
    runs["nonce after the dry run"] = w3.eth.get_transaction_count(roles.address("deployer"))
    runs["deploy"] = run(deploy_command(), {**env, **settings})
    runs["rerun"] = run(deploy_command(), {**env, **settings})
    return runs, json.loads((root / "deployments" / f"{CHAIN_ID}.json").read_text())


def payment_balance(record: dict, account: str) -> int:
    """The payment token balance of `account` on the rehearsal's chain."""
    return read_once(
        RPC_URL, record["registry"], record["escrow"], lambda r: r.token_balance(record["payment_token"], account)
    )


def test_the_deploy_script_refuses_to_run_without_a_key(deployment):
    runs, _ = deployment
    assert runs["no key"].code != 0
    assert "set GPUEX_DEPLOY_KEY or GPUEX_DEPLOY_KEY_FILE" in runs["no key"].out + runs["no key"].err


def test_a_dry_run_plans_and_sends_nothing(deployment):
    runs, _ = deployment
    assert runs["dry run"].code == 0, runs["dry run"].out + runs["dry run"].err
    assert "[dry run] would deploy ProviderRegistry" in runs["dry run"].out
    assert runs["nonce after the dry run"] == 0


def test_the_deploy_script_records_the_suite_and_a_rerun_sends_nothing(deployment, testnet):
    runs, record = deployment
    _, _, _, w3 = testnet
    assert runs["deploy"].code == 0, runs["deploy"].out + runs["deploy"].err
    assert (record["chain_id"], record["network"], record["test_token"]) == (CHAIN_ID, NETWORK, True)
    assert record["config"]["oracles"] == [roles.address("oracle")] and record["config"]["start_timeout"] == 30
    settings = read_once(RPC_URL, record["registry"], record["escrow"], lambda r: r.suite_settings())
    assert settings.escrow_registry == record["registry"]
    assert runs["rerun"].code == 0 and "nothing to send" in runs["rerun"].out
    nonce = w3.eth.get_transaction_count(roles.address("deployer"))
    assert nonce == 3, "token, registry, escrow (with its oracle set): and nothing from the rerun"


def test_one_rental_through_the_cli(deployment, testnet, job_image):
    _, record = deployment
    root, env, keys, w3 = testnet
    token = w3.eth.contract(address=record["payment_token"], abi=load_artifact("TestStablecoin")["abi"])
    for role in ("provider", "renter"):  # the test token's faucet step of the runbook
        tx = token.functions.mint(roles.address(role), 10_000 * 10**6).transact({"from": roles.address("deployer")})
        w3.eth.wait_for_transaction_receipt(tx)
    network = ["--network", NETWORK, "--rpc-url", RPC_URL]
    # This rehearsal's oracle accepts simulated telemetry, so the provider may list simulated GPUs.
    env = {**env, "GPUEX_AGENT_ALLOW_SIMULATED": "true"}

    def gpuex(role: str, *args: str) -> dict:
        done = run([str(BIN / "gpuex"), *args, *network, "--json"], {**env, "GPUEX_KEY_FILE": str(keys[role])})
        assert done.code == 0, f"gpuex {' '.join(args)}: {done.err}"
        return json.loads(done.out)

    def spawn(name: str, args: list[str], extra: dict[str, str]) -> subprocess.Popen:
        log = open(root / f"{name}.log", "wb")
        try:
            return subprocess.Popen(
                [str(BIN / "gpuex"), *args, *network],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**env, **extra},
                cwd=PROJECT_ROOT,
                start_new_session=True,
            )
        finally:
            log.close()

    oracle = spawn(
        "oracle",
        ["oracle", "serve"],
        {
            "GPUEX_ORACLE_KEY_FILE": str(keys["oracle"]),
            "GPUEX_ORACLE_PORT": str(ORACLE_PORT),
            "GPUEX_ORACLE_KEEPER": "true",
            "GPUEX_ORACLE_ALLOW_SIMULATED": "true",
            "GPUEX_ORACLE_EPOCH_SECONDS": "1",
            "GPUEX_ORACLE_STATE_DIR": str(root / "oracle"),
        },
    )
    agent = None
    try:
        gpuex("provider", "provider", "stake", "--amount", "1000", "--approve")
        gpuex("provider", "provider", "set-agent", roles.address("agent"))
        gpuex("provider", "provider", "register-gpus", "--simulated", "1")
        offer = gpuex(
            "provider",
            "offer",
            "create",
            "--simulated",
            "1",
            "--price-per-hour",
            PRICE_PER_HOUR,
            "--region",
            "eu-west",
            "--min-duration",
            "10",
        )["offer"]["offer_id"]
        found = gpuex("renter", "offers", "search", "--max-price-per-hour", PRICE_PER_HOUR)
        assert [o["offer_id"] for o in found] == [offer]
        agent = spawn(
            "agent",
            ["agent", "run", "--simulated", "1", "--oracle", f"http://127.0.0.1:{ORACLE_PORT}"],
            {
                "GPUEX_AGENT_KEY_FILE": str(keys["agent"]),
                "GPUEX_AGENT_STATE_DIR": str(root / "agent"),
                "GPUEX_AGENT_SPEC_DIR": str(root / "specs"),
                "GPUEX_AGENT_REPORT_INTERVAL_SECONDS": "2",
            },
        )
        time.sleep(3)  # the agent watches the chain from its head: let it start before the rental opens
        spec = root / "job.json"
        spec.write_text(json.dumps({"command": ["sleep", "6"], "image": job_image}))
        rental = gpuex(
            "renter",
            "rent",
            str(offer),
            "--duration",
            f"{RENTAL_SECONDS}s",
            "--spec",
            str(spec),
            "--approve",
            "--spec-dir",
            str(root / "specs"),
        )["rental"]["rental_id"]
        deadline = time.monotonic() + 90
        while not (status := gpuex("renter", "rental", "status", str(rental)))["final"]:
            assert oracle.poll() is None and agent.poll() is None, "the oracle or the agent stopped"
            assert time.monotonic() < deadline, f"rental still {status['status']}: see {root}/*.log"
            time.sleep(1)
        assert status["status"] == "COMPLETED"
        settlement = status["settlement"]
        assert settlement["delivered_seconds"] > 0 and settlement["provider_payout"] > 0
        assert settlement["refund"] > 0, "the job finished early: the unused time goes back"
        before = payment_balance(record, roles.address("renter"))
        gpuex("renter", "withdraw")
        assert payment_balance(record, roles.address("renter")) > before
        gpuex("provider", "withdraw")
    finally:
        for process in (agent, oracle):
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(20)
