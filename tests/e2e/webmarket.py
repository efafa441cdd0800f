"""The devnet market the browser tests open pages on: two providers listing `OFFERS` as offers 1 to 4, the first
over the GPUs of a simulated source watched by a provider agent that runs in the test's process."""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import aiohttp
from eth_account import Account

from offchain.agent.containers import ContainerSettings
from offchain.agent.service import ProviderAgent
from offchain.agent.settings import ProviderAgentSettings
from offchain.chain.contracts import contract
from offchain.chain.rpc import connect
from offchain.chain.tx.oneshot import Wallet
from offchain.market.offers import pack_text
from offchain.ops import devnet
from offchain.ops.deploy import USDC
from offchain.protocol.messages import gpu_uuid_hash
from offchain.telemetry.simulated import SimulatedSource
from tests.e2e.browser import WAIT_SECONDS

MAX_UINT = 2**256 - 1
#: (provider role, GPUs, model, VRAM MiB, region, price per second in tUSD units).
OFFERS = [
    ("provider", 2, "H100-80GB", 81_559, "eu-west", 1_400),  # 5.04 tUSD/h
    ("provider", 1, "H100-80GB", 81_559, "eu-central", 700),  # 2.52 tUSD/h
    ("provider2", 4, "A100-80GB", 81_920, "us-east", 2_000),  # 7.20 tUSD/h
    ("provider2", 1, "L4", 23_034, "ap-south", 200),  # 0.72 tUSD/h
]
TABLE_TEXT = """
return Array.from(document.querySelectorAll("#" + arguments[0] + " tbody tr"),
                  (row) => Array.from(row.cells, (cell) => cell.innerText.trim()));
"""


@asynccontextmanager
async def market_devnet(tmp_path: Path, port: int, oracle_port: int) -> AsyncIterator[tuple[Any, Path, Any]]:
    """`async with market_devnet(...) as (state, state_dir, w3)`: a devnet as `gpuex devnet up` brings it up (its oracle
    serves the web page), with one-second epochs; down again afterwards."""
    state_dir = tmp_path / "devnet"
    state = await devnet.up(
        state_dir,
        port=port,
        oracle_port=oracle_port,
        epoch_seconds=1.0,
        checkpoint_interval_seconds=2,
        say=lambda _: None,
    )
    w3 = connect(state.rpc_url)
    try:
        yield state, state_dir, w3
    finally:
        await w3.provider.disconnect()
        devnet.down(state_dir, say=lambda _: None)


@asynccontextmanager
async def running(agent: ProviderAgent) -> AsyncIterator[asyncio.Task]:
    """The agent running in a task of this process; cancelled afterwards."""
    task = asyncio.create_task(agent.run(), name="agent")
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def key(state_dir: Path, role: str) -> str:
    """The devnet's private key of `role`."""
    return devnet.key_path(state_dir, role).read_text().strip()


def wallet(w3, state_dir: Path, role: str) -> Wallet:
    return Wallet(w3, Account.from_key(key(state_dir, role)))


async def list_offers(w3, state, state_dir: Path, source: SimulatedSource, agent_url: str | None = None) -> None:
    """Stakes both providers and lists OFFERS as offers 1 to 4, the first over the GPUs of `source`; the first
    provider sets the devnet's agent key and, when given, publishes `agent_url`."""
    record = state.deployment
    token = contract(w3, "TestStablecoin", record.payment_token)
    registry = contract(w3, "ProviderRegistry", record.registry)
    wallets = {role: wallet(w3, state_dir, role) for role in ("provider", "provider2")}
    uuids = {
        role: [f"GPU-web-test-{role}-{i}" for i in range(sum(c for r, c, *_ in OFFERS if r == role))]
        for role in ("provider", "provider2")
    }
    uuids["provider"][:2] = [gpu.uuid for gpu in source.gpus()]

    async def provider(role: str) -> None:
        sender = wallets[role]
        await sender.transact(token.functions.approve(record.registry, MAX_UINT))
        await sender.transact(registry.functions.stake(1_000 * USDC))
        if role == "provider":
            await sender.transact(registry.functions.setAgent(state.accounts["agent"]))
            if agent_url is not None:
                await sender.transact(registry.functions.setAgentUrl(agent_url))
        await sender.transact(registry.functions.registerGpus([gpu_uuid_hash(u) for u in uuids[role]]))

    await asyncio.gather(provider("provider"), provider("provider2"))
    for role, count, model, vram, region, price in OFFERS:  # one at a time, so that the ids are 1 to 4
        hashes = [gpu_uuid_hash(uuids[role].pop(0)) for _ in range(count)]
        terms = (pack_text(model, 32), vram, price, 60, 86_400, pack_text(region, 16), 10_000, False, hashes)
        await wallets[role].transact(registry.functions.createOffer(terms))


def provider_agent(
    state, state_dir: Path, agent_dir: Path, source: SimulatedSource, job_image: str, api_port: int = 0
) -> ProviderAgent:
    """The first provider's agent over `source`, reporting every second to the devnet's oracle."""
    return ProviderAgent(
        ProviderAgentSettings(
            chain=state.deployment.chain_settings(state.rpc_url),
            key=key(state_dir, "agent"),
            provider=state.accounts["provider"],
            oracles=[state.oracle_url],
            allow_simulated=True,
            state_dir=agent_dir,
            report_interval_seconds=1.0,
            chain_poll_seconds=0.5,
            start_block=state.deployment.start_block,
            retry_initial_seconds=0.2,
            retry_max_seconds=1.0,
            container=ContainerSettings(default_image=job_image),
            keep_jobs_on_exit=False,
            api_port=api_port,
        ),
        source,
    )


async def until_rental(url: str, done: Callable[[dict[str, Any]], bool], what: str, agent_task: asyncio.Task) -> None:
    """Waits until the page's API body of a rental at `url` satisfies `done`; fails at once if the agent stops."""
    deadline = time.monotonic() + 2 * WAIT_SECONDS
    async with aiohttp.ClientSession() as session:
        while True:
            if agent_task.done():
                agent_task.result()
                raise AssertionError("the agent stopped")
            async with session.get(url) as response:
                if response.status == 200 and done(await response.json()):
                    return
            assert time.monotonic() < deadline, f"no {what} within {2 * WAIT_SECONDS} s"
            await asyncio.sleep(0.5)


def rows(driver, table: str) -> list[list[str]]:
    """The cells' text of a table's body, read in one go (a live refresh may replace the rows at any time)."""
    return driver.execute_script(TABLE_TEXT, table)
