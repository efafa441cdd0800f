"""Oracles as separate processes (`python -m offchain.oracle`), each with its own settings, state directory and
log, that a test or an operator's rehearsal can start, kill, restart (with its state or without) and ask for its
health, while the rest of the exchange (the agent, the chain) runs elsewhere.

Each oracle is configured only through its environment (`GPUEX_ORACLE_*`), as a deployment configures it, so what
runs here is what runs on an oracle's machine. `OracleCluster.peers_of` gives every oracle the URLs of the others.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import aiohttp

from offchain.chain.contracts import PROJECT_ROOT
from offchain.config import ChainSettings

START_SECONDS = 30.0
STOP_SECONDS = 20.0


class OracleProcessError(RuntimeError):
    """An oracle process exited or did not answer its health check in time; the message ends with its log's tail."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class OracleProcess:
    """One oracle: its key, port and state directory, and the process while it runs."""

    index: int
    key: bytes
    port: int
    state_dir: Path
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Starts the oracle in its own session; its output goes to `log_path`."""
        if self.running:
            raise OracleProcessError(f"oracle {self.index} is already running")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "offchain.oracle"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **self.env},
                cwd=PROJECT_ROOT,
            )

    def kill(self) -> None:
        """Kills the oracle at once (SIGKILL), as a crash or a lost machine would: nothing is flushed or closed."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        """Stops the oracle as an operator would (SIGTERM), killing it if it does not exit within STOP_SECONDS."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.kill()

    def wipe_state(self) -> None:
        """Deletes the oracle's state directory, as a lost disk would; the oracle must not be running."""
        if self.running:
            raise OracleProcessError(f"oracle {self.index} is running: stop it before wiping its state")
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        if not self.log_path.exists():
            return "no output"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    async def wait_healthy(self, timeout: float = START_SECONDS) -> None:
        """Waits until `GET /healthz` answers 200; raises OracleProcessError if the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while True:
                if self.process is None or self.process.poll() is not None:
                    code = None if self.process is None else self.process.returncode
                    raise OracleProcessError(f"oracle {self.index} exited ({code}):\n{self.log_tail()}")
                try:
                    async with session.get(self.url + "/healthz", timeout=aiohttp.ClientTimeout(total=2)) as answer:
                        if answer.status == 200:
                            return
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                    pass
                if time.monotonic() > deadline:
                    raise OracleProcessError(
                        f"oracle {self.index} did not answer /healthz within {timeout:.0f} s:\n{self.log_tail()}"
                    )
                await asyncio.sleep(0.2)

    async def metrics(self) -> str:
        """The oracle's `/metrics` page (Prometheus text)."""
        async with aiohttp.ClientSession() as session:
            async with session.get(self.url + "/metrics", timeout=aiohttp.ClientTimeout(total=5)) as answer:
                answer.raise_for_status()
                return await answer.text()


def chain_env(chain: ChainSettings) -> dict[str, str]:
    """`chain` as an oracle's environment."""
    return {
        "GPUEX_ORACLE_CHAIN__RPC_URL": chain.rpc_url,
        "GPUEX_ORACLE_CHAIN__CHAIN_ID": str(chain.chain_id),
        "GPUEX_ORACLE_CHAIN__REGISTRY": chain.registry,
        "GPUEX_ORACLE_CHAIN__ESCROW": chain.escrow,
        "GPUEX_ORACLE_CHAIN__CONFIRMATIONS": str(chain.confirmations),
    }


@dataclass
class OracleCluster:
    """The oracles of one oracle set, as processes. `settings` apply to every oracle (names without the
    `GPUEX_ORACLE_` prefix, e.g. `{"EPOCH_SECONDS": "1"}`); `per_oracle` adds or overrides them for one."""

    chain: ChainSettings
    keys: Sequence[bytes]
    state_root: Path
    settings: Mapping[str, str] = field(default_factory=dict)
    per_oracle: Mapping[int, Mapping[str, str]] = field(default_factory=dict)
    oracles: list[OracleProcess] = field(default_factory=list)

    def __post_init__(self) -> None:
        ports = [free_port() for _ in self.keys]
        for index, (key, port) in enumerate(zip(self.keys, ports)):
            state_dir = self.state_root / f"oracle{index}"
            peers = [f"http://127.0.0.1:{p}" for i, p in enumerate(ports) if i != index]
            values = {
                "KEY": "0x" + key.hex(),
                "STATE_DIR": str(state_dir),
                "HOST": "127.0.0.1",
                "PORT": str(port),
                "PEERS": json.dumps(peers),
                **self.settings,
                **self.per_oracle.get(index, {}),
            }
            env = {**chain_env(self.chain), **{f"GPUEX_ORACLE_{name}": value for name, value in values.items()}}
            self.state_root.mkdir(parents=True, exist_ok=True)
            log_path = self.state_root / f"oracle{index}.log"
            self.oracles.append(OracleProcess(index, key, port, state_dir, env, log_path))

    @property
    def urls(self) -> list[str]:
        return [o.url for o in self.oracles]

    async def start(self, indexes: Sequence[int] | None = None) -> None:
        """Starts the given oracles (all by default) and waits until each answers its health check."""
        chosen = [self.oracles[i] for i in (range(len(self.oracles)) if indexes is None else indexes)]
        for oracle in chosen:
            oracle.start()
        await asyncio.gather(*(oracle.wait_healthy() for oracle in chosen))

    async def restart(self, index: int, *, wipe_state: bool = False) -> None:
        """Kills oracle `index` (SIGKILL), optionally deletes its state directory, and starts it again."""
        oracle = self.oracles[index]
        oracle.kill()
        if wipe_state:
            oracle.wipe_state()
        await self.start([index])

    def stop(self) -> None:
        """Stops every oracle still running."""
        for oracle in self.oracles:
            oracle.stop()

    def logs(self) -> str:
        """Every oracle's log tail, for a failing test's message."""
        return "\n".join(f"--- oracle {o.index} ({o.log_path})\n{o.log_tail(40)}" for o in self.oracles)
