"""A local gpuex exchange in the background: anvil, the suite deployed on it, funded roles and one oracle.

`gpuex devnet up|down|status` is the front end. Everything lives in a state directory the user can look into
(`./gpuex-devnet` by default):

    devnet.json          what is running: RPC URL, chain id, process ids, the oracle's URL, the roles
    anvil-state.json     the chain, dumped by anvil on exit and loaded on the next `up`
    anvil.log            anvil's output
    oracle.log, oracle/  the oracle's output and its SQLite state
    keys/<role>.key      the roles' private keys (anvil's public dev keys: never fund them anywhere real)
    specs/               job specs by hash, where `gpuex rent` puts them and the devnet's agents read them
    agents/<address>/    the state of each `gpuex agent run` on the devnet, by agent key, and its `agent.pid` while
                         it runs

The deployment record goes to `deployments/<chainId>.json` like any other. The oracle is the only one of a 1-of-1
oracle set, so every turn to land a report or keep is its own; it accepts simulated telemetry, so a machine
without a GPU can rent too.
Anvil mines a block every second, so time moves for the keeper even when nobody sends a transaction.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
from eth_account import Account
from pydantic import BaseModel, ConfigDict

from offchain.chain import deployments
from offchain.chain.contracts import PROJECT_ROOT, contract
from offchain.chain.deployments import Deployment
from offchain.chain.reads import ChainReader
from offchain.chain.rpc import connect
from offchain.chain.tx.oneshot import Wallet
from offchain.ops import roles
from offchain.ops.deploy import USDC, DeployRequest, SuiteParams, deploy
from offchain.ops.devnetdir import DEFAULT_DIR
from offchain.ops.processes import process_alive

#: The roles the devnet writes a key file for (offchain.ops.roles has their accounts).
ROLES = ("deployer", "treasury", "oracle", "provider", "agent", "renter", "renter2", "provider2", "agent2")
FUNDED_ROLES = ("provider", "renter", "renter2", "provider2")
FUNDING = 100_000 * USDC

DEFAULT_PORT = 8555
DEFAULT_ORACLE_PORT = 8700
DEVNET_CHAIN_ID = 31337
#: Shorter than a public deployment's so that timeouts and finalisation come within minutes.
DEVNET_PARAMS = SuiteParams(start_timeout=120, report_grace=60, unbonding_period=600)
START_TIMEOUT_SECONDS = 30.0
#: The image the devnet's agents run jobs in when a spec names none (and the demo's and the tests' jobs): Debian's
#: static busybox, built on this machine by `tools/build-job-image`, never pulled.
DEV_JOB_IMAGE = "localhost/gpuex/job:busybox"
AGENT_PID_FILE = "agent.pid"


class DevnetError(RuntimeError):
    """The devnet cannot be brought up, or is not up."""


class DevnetState(BaseModel):
    """`devnet.json`."""

    model_config = ConfigDict(extra="forbid")

    rpc_url: str
    chain_id: int
    anvil_pid: int
    oracle_pid: int
    oracle_url: str
    accounts: dict[str, str]  # role -> address
    deployment: Deployment


class RunningAgent(BaseModel):
    """`agent.pid` in an agent's state directory: the process of `gpuex agent run` for `provider`, while it runs."""

    model_config = ConfigDict(extra="forbid")

    agent: str
    provider: str
    pid: int


class DevnetStatus(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state_dir: str
    running: bool
    anvil_alive: bool
    oracle_alive: bool
    block_number: int | None
    oracle_healthy: bool
    state: DevnetState | None


def build_job_image(image: str = DEV_JOB_IMAGE) -> None:
    """Builds the busybox job image with podman unless it is there already."""
    try:
        subprocess.run(
            [str(PROJECT_ROOT / "tools" / "build-job-image"), image],
            check=True,
            capture_output=True,
            text=True,
            timeout=300,
        )
    except FileNotFoundError as exc:
        raise DevnetError(f"cannot build the job image {image}: {exc}") from exc
    except subprocess.CalledProcessError as exc:
        raise DevnetError(f"cannot build the job image {image}: {exc.stderr.strip() or exc}") from exc


def key_path(state_dir: Path, role: str) -> Path:
    return state_dir / "keys" / f"{role}.key"


def spec_dir(state_dir: Path) -> Path:
    return state_dir / "specs"


def agent_dir(state_dir: Path, agent: str) -> Path:
    return state_dir / "agents" / agent


def agent_pid_path(agent_state_dir: Path) -> Path:
    return agent_state_dir / AGENT_PID_FILE


@contextmanager
def agent_pid_file(agent_state_dir: Path, agent: str, provider: str) -> Iterator[None]:
    """Records this process as the agent `agent` of `provider` in its state directory while the block runs, so that
    `down` of a devnet whose `agents/` holds that directory can name it."""
    path = agent_pid_path(agent_state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = RunningAgent(agent=agent, provider=provider, pid=os.getpid()).model_dump_json()
    path.write_text(record + "\n")
    try:
        yield
    finally:
        if path.is_file() and path.read_text().strip() == record:
            path.unlink()


def running_agents(state_dir: Path) -> list[RunningAgent]:
    """The agents of the devnet's `agents/` whose processes run now (a pid file whose process is gone is stale)."""
    found = []
    for path in sorted((Path(state_dir) / "agents").glob(f"*/{AGENT_PID_FILE}")):
        try:
            agent = RunningAgent.model_validate_json(path.read_text())
        except (OSError, ValueError):
            continue
        if process_alive(agent.pid) and _runs_python(agent.pid):
            found.append(agent)
    return found


def _runs_python(pid: int) -> bool:
    """Whether `pid` runs a Python program: a pid file left by a crash may name a pid reused by something else."""
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0]
    except OSError:
        return True  # no /proc to ask: trust the pid file
    return "python" in os.path.basename(argv0.decode(errors="replace"))


def _state_file(state_dir: Path) -> Path:
    return state_dir / "devnet.json"


def read_state(state_dir: Path) -> DevnetState | None:
    path = _state_file(state_dir)
    return DevnetState.model_validate_json(path.read_text()) if path.is_file() else None


def _port_free(host: str, port: int) -> bool:
    """Nothing listens on the port (sockets of stopped processes lingering in TIME_WAIT do not count)."""
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) != 0


def anvil_command() -> str:
    """The anvil to run: the one on `PATH`, else the one `make setup` links beside this Python (`.venv/bin`), so
    that `.venv/bin/gpuex devnet up` works from a shell that never activated the environment."""
    beside = Path(sys.executable).parent / "anvil"
    return shutil.which("anvil") or (str(beside) if os.access(beside, os.X_OK) else "anvil")


def _spawn(command: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Starts `command` in its own session (it outlives this process and gets no terminal signals)."""
    log = open(log_path, "ab")
    try:
        return subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
            cwd=PROJECT_ROOT,
        )
    finally:
        log.close()


async def _wait_for(
    check, what: str, process: subprocess.Popen, log_path: Path, timeout: float = START_TIMEOUT_SECONDS
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] if log_path.exists() else []
            raise DevnetError(
                f"{what} exited with status {process.returncode}: {' '.join(tail) or 'no output'} (see {log_path})"
            )
        try:
            if await check():
                return
        except (aiohttp.ClientError, OSError):
            pass
        if time.monotonic() > deadline:
            raise DevnetError(f"{what} did not come up within {timeout:.0f} s (see {log_path})")
        await asyncio.sleep(0.2)


async def up(
    state_dir: Path = DEFAULT_DIR,
    port: int = DEFAULT_PORT,
    oracle_port: int = DEFAULT_ORACLE_PORT,
    params: SuiteParams = DEVNET_PARAMS,
    epoch_seconds: float = 5.0,
    checkpoint_interval_seconds: int = 60,
    say=print,
) -> DevnetState:
    """Starts anvil and the oracle in the background and deploys (or re-checks) the suite; returns the state.

    The oracle lands a running rental's latest report every `checkpoint_interval_seconds` of its coverage (a minute
    by default, so a developer sees rentals settle as they run; a deployment's oracles default to an hour).

    Idempotent: with a devnet already up it only returns its state; a devnet brought down keeps its chain and
    deployment, which the next `up` re-checks instead of redeploying.
    """
    state_dir = Path(state_dir).resolve()
    current = await status(state_dir)
    if current.running and current.state is not None:
        say(f"devnet already up at {current.state.rpc_url}")
        return current.state
    if current.anvil_alive or current.oracle_alive:
        down(state_dir, say=lambda _: None)
    for what, p in (("anvil", port), ("the oracle", oracle_port)):
        if not _port_free("127.0.0.1", p):
            raise DevnetError(f"port {p} for {what} is in use; pick another with --port / --oracle-port")
    (state_dir / "keys").mkdir(parents=True, exist_ok=True)
    for role in ROLES:
        path = key_path(state_dir, role)
        path.write_text("0x" + roles.KEYS[role].hex() + "\n")
        path.chmod(0o600)

    rpc_url = f"http://127.0.0.1:{port}"
    anvil_log = state_dir / "anvil.log"
    anvil = _spawn(
        [
            anvil_command(),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--chain-id",
            str(DEVNET_CHAIN_ID),
            "--block-time",
            "1",
            "--accounts",
            str(roles.ACCOUNT_COUNT),
            "--balance",
            "10000",
            "--mnemonic",
            roles.ANVIL_MNEMONIC,
            "--state",
            str(state_dir / "anvil-state.json"),
        ],
        anvil_log,
    )
    w3 = connect(rpc_url)
    oracle = None
    try:
        await _wait_for(w3.is_connected, "anvil", anvil, anvil_log)
        say(f"anvil listening on {rpc_url} (pid {anvil.pid}, chain {DEVNET_CHAIN_ID}, a block a second)")
        addresses = {role: roles.address(role) for role in ROLES}
        deployer = Wallet(w3, Account.from_key(roles.KEYS["deployer"]))
        request = DeployRequest(
            network="devnet", treasury=addresses["treasury"], oracles=[addresses["oracle"]], threshold=1, params=params
        )
        record = await _deploy_or_check(w3, deployer, request, say)
        await _fund(w3, deployer, record, [addresses[r] for r in FUNDED_ROLES], say)

        oracle_dir = state_dir / "oracle"
        oracle_log = state_dir / "oracle.log"
        env = dict(
            os.environ,
            PYTHONPATH=str(PROJECT_ROOT),
            GPUEX_ORACLE_KEY_FILE=str(key_path(state_dir, "oracle")),
            GPUEX_ORACLE_CHAIN__RPC_URL=rpc_url,
            GPUEX_ORACLE_CHAIN__CHAIN_ID=str(DEVNET_CHAIN_ID),
            GPUEX_ORACLE_CHAIN__REGISTRY=record.registry,
            GPUEX_ORACLE_CHAIN__ESCROW=record.escrow,
            GPUEX_ORACLE_PORT=str(oracle_port),
            GPUEX_ORACLE_KEEPER="true",
            GPUEX_ORACLE_ALLOW_SIMULATED="true",
            GPUEX_ORACLE_STATE_DIR=str(oracle_dir),
            GPUEX_ORACLE_EPOCH_SECONDS=str(epoch_seconds),
            GPUEX_ORACLE_CHECKPOINT_INTERVAL_SECONDS=str(checkpoint_interval_seconds),
            GPUEX_ORACLE_WEB="true",
        )
        env.pop("GPUEX_ORACLE_KEY", None)
        oracle = _spawn([sys.executable, "-m", "offchain.oracle"], oracle_log, env)
        oracle_url = f"http://127.0.0.1:{oracle_port}"
        async with aiohttp.ClientSession() as session:

            async def healthy() -> bool:
                async with session.get(f"{oracle_url}/healthz") as response:
                    return response.status == 200

            await _wait_for(healthy, "the oracle", oracle, oracle_log)
        say(f"oracle listening on {oracle_url} (pid {oracle.pid}, submitting and keeping)")
        state = DevnetState(
            rpc_url=rpc_url,
            chain_id=DEVNET_CHAIN_ID,
            anvil_pid=anvil.pid,
            oracle_pid=oracle.pid,
            oracle_url=oracle_url,
            accounts=addresses,
            deployment=record,
        )
        _state_file(state_dir).write_text(state.model_dump_json(indent=2) + "\n")
        say(f"devnet up; state in {state_dir}")
        return state
    except BaseException:
        for process in (oracle, anvil):
            if process is not None and process.poll() is None:
                _stop_group(process.pid)
        raise
    finally:
        await w3.provider.disconnect()


async def _deploy_or_check(w3, wallet: Wallet, request: DeployRequest, say) -> Deployment:
    """Reuses the devnet's recorded suite while the chain still has it; redeploys after a wiped chain."""
    try:
        recorded = deployments.load(DEVNET_CHAIN_ID)
    except deployments.DeploymentNotFound:
        recorded = None
    if recorded is not None and (recorded.network != "devnet" or not await w3.eth.get_code(recorded.registry)):
        deployments.record_path(DEVNET_CHAIN_ID).unlink()
    record = await deploy(w3, wallet, request, say=say)
    if record is None:  # only a dry run returns no record, and this is none
        raise DevnetError("the deployment returned no record")
    return record


async def _fund(w3, deployer: Wallet, record: Deployment, accounts: list[str], say) -> None:
    """Tops every funded role up to `FUNDING` test dollars (the deployer owns the TestStablecoin)."""
    reader = ChainReader(w3, record.registry, record.escrow)
    token = contract(w3, "TestStablecoin", record.payment_token)
    for account in accounts:
        balance = await reader.token_balance(token.address, account)
        if balance < FUNDING:
            await deployer.transact(token.functions.mint(account, FUNDING - balance))
    say(f"funded {len(accounts)} roles with {FUNDING // USDC:,} test dollars each")


def _stop_group(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM to the process group of `pid`, SIGKILL if it is still there after `timeout`."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 2.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not process_alive(pid):
                return
            time.sleep(0.1)


def down(state_dir: Path = DEFAULT_DIR, say=print) -> bool:
    """Stops what `up` started: the oracle, then anvil (which dumps the chain to `anvil-state.json`); False if
    nothing ran. `up` starts no agent: each agent still running on the devnet (`running_agents`) is named, and left
    to whoever started it."""
    state_dir = Path(state_dir).resolve()
    state = read_state(state_dir)
    if state is None:
        say(f"no devnet in {state_dir}")
        return False
    for agent in running_agents(state_dir):
        say(
            f"agent for provider {agent.provider} (pid {agent.pid}) was not started by devnet up; stop it yourself "
            f"(kill {agent.pid})"
        )
    stopped = False
    for name, pid in (("oracle", state.oracle_pid), ("anvil", state.anvil_pid)):
        if process_alive(pid):
            _stop_group(pid)
            say(f"stopped {name} (pid {pid})")
            stopped = True
    if not stopped:
        say("devnet was not running")
    return stopped


async def status(state_dir: Path = DEFAULT_DIR) -> DevnetStatus:
    """Whether the devnet's processes are alive and answering."""
    state_dir = Path(state_dir).resolve()
    state = read_state(state_dir)
    anvil_alive = state is not None and process_alive(state.anvil_pid)
    oracle_alive = state is not None and process_alive(state.oracle_pid)
    block_number = None
    oracle_healthy = False
    if state is not None and anvil_alive:
        block_number = await _block_number(state.rpc_url)
    if state is not None and oracle_alive:
        oracle_healthy = await _healthy(state.oracle_url)
    return DevnetStatus(
        state_dir=str(state_dir),
        running=anvil_alive and oracle_alive and block_number is not None,
        anvil_alive=anvil_alive,
        oracle_alive=oracle_alive,
        block_number=block_number,
        oracle_healthy=oracle_healthy,
        state=state,
    )


async def _block_number(rpc_url: str) -> int | None:
    w3 = connect(rpc_url, timeout=2)
    try:
        return await w3.eth.block_number
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError):
        return None
    finally:
        await w3.provider.disconnect()


async def _healthy(url: str) -> bool:
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            async with session.get(f"{url}/healthz") as response:
                return response.status == 200
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError):
        return False
