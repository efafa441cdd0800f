"""An agent running against recording oracles on loopback, with the helpers the agent's service and API tests share:
jobs in the busybox image, rentals opened by a renter, the completion report an oracle received."""

from __future__ import annotations

import asyncio
import os
import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Callable

from offchain.agent.jobspec import JobSpec
from offchain.agent.rentals import Phase
from offchain.agent.service import ProviderAgent
from offchain.chain.contracts import PROJECT_ROOT
from offchain.protocol.messages import TelemetryReport
from offchain.protocol.reports import ReportStatus
from tests.offchain.agent.helpers import AGENT_ADDRESS, wait_until
from tests.offchain.agent.oracle_server import RecordingOracle
from tests.offchain.conftest import PRICE

DURATION = 600


def job(script: str, **fields) -> JobSpec:
    """A shell script run in the busybox job image (the agent's default image in these tests)."""
    return JobSpec(command=("sh", "-c", script), **fields)


async def start_oracles(settings, count: int = 2) -> list[RecordingOracle]:
    """Oracle endpoints that check the agent's signature for this deployment and its outbox at `settings.db_path`."""
    oracles = [
        RecordingOracle(settings.chain.chain_id, settings.chain.registry, AGENT_ADDRESS, agent_db=settings.db_path)
        for _ in range(count)
    ]
    for oracle in oracles:
        await oracle.start()
    return oracles


@asynccontextmanager
async def running(agent: ProviderAgent) -> AsyncIterator[Callable[..., object]]:
    """Runs the agent; yields `until(condition, seconds, what)`, a bounded wait that also fails if the agent
    died."""
    task = asyncio.create_task(agent.run())

    async def until(condition: Callable[[], bool], seconds: float, what: str) -> None:
        await wait_until(lambda: condition() or task.done(), seconds, what)
        if task.done():
            task.result()
            raise AssertionError(f"the agent stopped while waiting for {what}")

    try:
        yield until
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@asynccontextmanager
async def agent_with_oracles(settings, source, count: int = 1):
    """A running agent reporting to `count` recording oracles, its renter API listening; yields (agent, oracles,
    until)."""
    oracles = await start_oracles(settings, count)
    agent = ProviderAgent(settings.model_copy(update={"oracles": [o.url for o in oracles]}), source)
    try:
        async with running(agent) as until:
            await until(lambda: agent.api is None or agent.api.port is not None, 10, "the renter API")
            yield agent, oracles, until
    finally:
        for oracle in oracles:
            await oracle.stop()


async def open_rental(suite, renter, offer_id: int, spec: JobSpec, duration: int = DURATION) -> int:
    tx = await asyncio.to_thread(suite.escrow.openRental, offer_id, duration, PRICE, spec.spec_hash(), {"from": renter})
    return tx.return_value


def rental_done(agent: ProviderAgent, rental_id: int) -> bool:
    """Whether the agent has seen the rental and has nothing more to do for it."""
    record = agent.book.get(rental_id)
    return record is not None and record.phase is Phase.DONE


def final_report(oracle: RecordingOracle, rental_id: int) -> TelemetryReport | None:
    reports = oracle.accepted_reports(rental_id)
    return reports[-1] if reports and reports[-1].status is not ReportStatus.RUNNING else None


def agent_process(
    settings, key_file: Path, oracles: list[RecordingOracle], seed: int, **extra: str
) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of an agent in its own process (`agent_process.py`), configured from the
    environment as a deployed agent is: `settings`' chain, state and job image, fast timers, and `extra`
    (`GPUEX_AGENT_*` names without the prefix)."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("GPUEX_")},
        "PYTHONPATH": str(PROJECT_ROOT),
        "GPUEX_AGENT_CHAIN__RPC_URL": settings.chain.rpc_url,
        "GPUEX_AGENT_CHAIN__CHAIN_ID": str(settings.chain.chain_id),
        "GPUEX_AGENT_CHAIN__REGISTRY": settings.chain.registry,
        "GPUEX_AGENT_CHAIN__ESCROW": settings.chain.escrow,
        "GPUEX_AGENT_KEY_FILE": str(key_file),
        "GPUEX_AGENT_PROVIDER": settings.provider,
        "GPUEX_AGENT_ORACLES": "[" + ",".join(f'"{o.url}"' for o in oracles) + "]",
        "GPUEX_AGENT_ALLOW_SIMULATED": "true",
        "GPUEX_AGENT_STATE_DIR": str(settings.state_dir),
        "GPUEX_AGENT_REPORT_INTERVAL_SECONDS": "1",
        "GPUEX_AGENT_CHAIN_POLL_SECONDS": "0.2",
        "GPUEX_AGENT_STOP_GRACE_SECONDS": "1",
        "GPUEX_AGENT_RETRY_INITIAL_SECONDS": "0.1",
        "GPUEX_AGENT_RETRY_MAX_SECONDS": "0.5",
        "GPUEX_AGENT_START_BLOCK": str(settings.start_block),
        "GPUEX_AGENT_CONTAINER__DEFAULT_IMAGE": settings.container.default_image,
        "GPUEX_AGENT_MAX_CLOCK_SKEW_SECONDS": str(settings.max_clock_skew_seconds),
        **{f"GPUEX_AGENT_{name.upper()}": value for name, value in extra.items()},
    }
    return [sys.executable, str(Path(__file__).with_name("agent_process.py")), str(seed)], env
