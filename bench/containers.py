"""Job containers: how soon a rented job runs, and what the container costs a short job.

Issue #10 asks that a rental's container run at most 3 s after the agent's start transaction is mined (p50 of
20 rentals, local image). A real exchange runs in this process (`offchain.ops.inprocess`: three oracles and the
provider agent with simulated GPUs), on the Brownie network's anvil; 20 rentals are opened one after another, each
on an offer of its own, with a job in the busybox image. For each: when the renter sent `openRental`, the agent's
start receipt (`start_confirmed_at`) and the container's own start time (`StartedAt` from the engine, as the
agent records it in `job_started_at`). Sent -> running also holds the renter's transaction being mined, the
agent's chain poll (every 0.2 s in the in-process exchange), in which it learns of the rental, and its start
transaction.

The overhead of the container against a bare process: a 1-second job (`sleep 1`) run to its end 10 times each
way through the agent's own job classes, wall time from start to the outcome, median against median.
"""

from __future__ import annotations

import asyncio
import sqlite3
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from eth_utils import keccak

from bench.agents import percentile
from bench.records import Figure, SectionResult, Target
from offchain.agent.bareprocess import BareProcessJob, new_token
from offchain.agent.containers import ContainerPlan, ContainerSettings, Engine, labels
from offchain.agent.job import ContainerJob, Job
from offchain.agent.jobspec import JobSpec, JobSpecStore
from offchain.agent.store import DB_FILE_NAME
from offchain.agent.workspace import RentalFiles
from offchain.config import ChainSettings
from offchain.ops.devnet import DEV_JOB_IMAGE, build_job_image
from offchain.ops.inprocess import ProviderMachine, agent_spec_dir, running_exchange
from offchain.protocol.messages import gpu_uuid_hash
from offchain.telemetry.simulated import SimulatedSource

SECTION = "Job containers"
RUNS = 20
OVERHEAD_RUNS = 10
PRICE = 1_000
DURATION = 600
START_TARGET = Target(op="<=", threshold=3.0, source="issue #10")


RENTER_KEY = "0x" + keccak(text="gpuex bench renter").hex()


@dataclass(frozen=True)
class BenchMarket:
    """A suite with the 2-of-3 oracle set, a staked provider whose agent key is funded, a funded renter whose key
    is known (it signs renter API requests), and offers of two of the simulated machine's GPUs each."""

    suite: object
    chain: ChainSettings
    provider: object
    renter: object
    oracle_keys: list[bytes]
    agent_key: bytes
    source: SimulatedSource
    offers: list[int]


def deploy_market(offers: int) -> BenchMarket:
    from brownie import TestStablecoin, accounts, web3
    from eth_account import Account

    from offchain.ops.deploy import USDC
    from scripts.deploy import SuiteParams, deploy_suite

    deployer, treasury, provider = accounts[0], accounts[1], accounts[2]
    renter = accounts.add(RENTER_KEY)
    deployer.transfer(renter, "10 ether")
    oracle_keys = [keccak(text=f"gpuex bench containers oracle {i}") for i in range(3)]
    agent_key = keccak(text="gpuex bench containers agent")
    token = TestStablecoin.deploy(deployer, {"from": deployer})
    suite = deploy_suite(
        deployer,
        token,
        token,
        treasury,
        [Account.from_key(k).address for k in oracle_keys],
        2,
        SuiteParams(min_stake_per_gpu=USDC),
    )
    for account in (provider, renter):
        token.mint(account, 10_000_000 * USDC, {"from": deployer})
        token.approve(suite.registry, 2**256 - 1, {"from": account})
        token.approve(suite.escrow, 2**256 - 1, {"from": account})
    suite.registry.stake(1_000 * USDC, {"from": provider})
    agent = Account.from_key(agent_key).address
    suite.registry.setAgent(agent, {"from": provider})
    for address in [agent, *(Account.from_key(k).address for k in oracle_keys)]:
        deployer.transfer(address, "10 ether")
    source = SimulatedSource("NVIDIA H100 80GB HBM3", 2 * offers, seed=10)
    uuids = [gpu.uuid for gpu in source.gpus()]
    suite.registry.registerGpus([gpu_uuid_hash(u) for u in uuids], {"from": provider})
    offer_ids = []
    for i in range(offers):
        terms = (
            b"H100-80GB".ljust(32, b"\0"),
            81_559,
            PRICE,
            60,
            86_400,
            b"bench".ljust(16, b"\0"),
            10_000,
            False,
            [gpu_uuid_hash(u) for u in uuids[2 * i : 2 * i + 2]],
        )
        offer_ids.append(suite.registry.createOffer(terms, {"from": provider}).return_value)
    chain = ChainSettings(
        rpc_url=web3.provider.endpoint_uri,
        chain_id=web3.eth.chain_id,
        registry=suite.registry.address,
        escrow=suite.escrow.address,
    )
    return BenchMarket(suite, chain, provider, renter, oracle_keys, agent_key, source, offer_ids)


async def _start_latencies(runs: int) -> list[tuple[float, float]]:
    """(start receipt -> running, openRental sent -> running) in seconds, one pair per rental."""
    market = deploy_market(runs)
    spec = JobSpec(command=("sleep", "2"))
    pairs = []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        JobSpecStore(agent_spec_dir(root)).put(spec)
        machine = ProviderMachine(market.provider.address, market.agent_key, market.source)
        async with running_exchange(market.chain, root, market.oracle_keys, machine) as exchange:
            for offer in market.offers:
                sent_at = time.time()
                tx = await asyncio.to_thread(
                    market.suite.escrow.openRental, offer, DURATION, PRICE, spec.spec_hash(), {"from": market.renter}
                )
                rental = tx.return_value
                await exchange.until(
                    lambda rental=rental: (
                        _row(root, rental) is not None and _row(root, rental)["job_started_at"] is not None
                    ),
                    30,
                    "the container",
                )
                row = _row(root, rental)
                pairs.append((row["job_started_at"] - row["start_confirmed_at"], row["job_started_at"] - sent_at))
    return pairs


def _row(root: Path, rental_id: int) -> sqlite3.Row | None:
    with sqlite3.connect(root / "agent" / DB_FILE_NAME) as db:
        db.row_factory = sqlite3.Row
        return db.execute("SELECT * FROM rentals WHERE rental_id = ?", (str(rental_id),)).fetchone()


async def _one_second_job(make_job) -> float:
    job: Job = make_job()
    started = time.perf_counter()
    await job.start()
    outcome = await job.wait()
    took = time.perf_counter() - started
    if outcome.exit_code != 0:
        raise RuntimeError(f"the 1-second job failed: {outcome.reason}")
    return took


async def _overhead(runs: int) -> tuple[float, float]:
    """Median wall seconds of a 1-second job in a container and as a bare process."""
    settings = ContainerSettings(memory_mib_per_gpu=256)
    engine = Engine(settings)
    spec = JobSpec(command=("sleep", "1"))
    container_times, bare_times = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for i in range(runs):
            files = RentalFiles(Path(scratch) / f"c{i}")
            files.prepare(".", (settings.uid, settings.gid))
            plan = ContainerPlan(
                name=f"gpuex-bench-{i}-{new_token()[:8]}",
                image=DEV_JOB_IMAGE,
                argv=tuple(spec.argv),
                workspace=files.work,
                working_dir=".",
                env_file=files.env_file,
                log_path=files.container_log,
                gpu_uuids=(),
                memory_mib=256,
                cpus=1,
                egress=False,
                labels=labels("bench", i),
            )
            container_times.append(
                await _one_second_job(
                    lambda plan=plan, files=files: ContainerJob(
                        engine,
                        plan,
                        {},
                        output_dir="out",
                        results=files.results,
                        deadline=None,
                        stop_grace_seconds=2,
                        timeout_seconds=None,
                    )
                )
            )
            await engine.remove(plan.name)
            bare_times.append(
                await _one_second_job(
                    lambda i=i: BareProcessJob(
                        spec,
                        RentalFiles(Path(scratch) / f"b{i}"),
                        rental_id=i,
                        gpu_uuids=(),
                        token=new_token(),
                        deadline=None,
                        stop_grace_seconds=2,
                    )
                )
            )
    return statistics.median(container_times), statistics.median(bare_times)


def measure(runs: int = RUNS, overhead_runs: int = OVERHEAD_RUNS) -> SectionResult:
    started = time.perf_counter()
    build_job_image()
    pairs = asyncio.run(_start_latencies(runs))
    container, bare = asyncio.run(_overhead(overhead_runs))
    after_receipt = [p[0] for p in pairs]
    after_open = [p[1] for p in pairs]
    figures = (
        Figure(
            section=SECTION,
            name=f"start receipt -> container running, p50 of {runs}",
            value=percentile(after_receipt, 0.5),
            unit="s",
            target=START_TARGET,
            note=f"max {max(after_receipt):.2f} s",
        ),
        Figure(
            section=SECTION,
            name=f"openRental sent -> container running, p50 of {runs}",
            value=percentile(after_open, 0.5),
            unit="s",
            note=f"max {max(after_open):.2f} s; the renter's transaction mined, the agent's 0.2 s chain poll, "
            "its start transaction",
        ),
        Figure(
            section=SECTION,
            name="1-second job in a container, median wall time",
            value=container,
            unit="s",
            note=f"{overhead_runs} runs",
        ),
        Figure(
            section=SECTION,
            name="1-second job as a bare process, median wall time",
            value=bare,
            unit="s",
            note=f"{overhead_runs} runs",
        ),
        Figure(
            section=SECTION,
            name="container overhead on a 1-second job",
            value=container - bare,
            unit="s",
            note="median against median",
        ),
    )
    return SectionResult(
        title=SECTION,
        figures=figures,
        wall_seconds=time.perf_counter() - started,
        notes=(
            f"image {DEV_JOB_IMAGE} (local, never pulled); podman with the agent's hardened run command",
            "the container's start time is the engine's StartedAt; the start receipt time is the agent's clock "
            "when the receipt arrived",
        ),
    )
