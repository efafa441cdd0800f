"""Fixtures of the end-to-end tests: one suite on Brownie's anvil with a 2-of-3 oracle set, the provider staked
with the AGENT key, and a harness that runs three real `OracleService`s (2-of-3, oracle 0 the leader with the
keeper) and one real `ProviderAgent` in-process on loopback.

The suite is deployed with a short start timeout and report grace so that every scenario runs on the wall clock:
the agent and the oracles time report periods by the wall clock and the chain stamps blocks with it, so no
scenario moves chain time (`chain.sleep`) and later scenarios are not thrown off by an earlier one. Anvil mines a
block only per transaction, so the harness also mines an empty block every second, as a real chain would: the
keeper judges what is due by the latest block's timestamp, which otherwise stands still while nothing is sent.

Constants (keys, price) and the role, token and chain-settings fixtures come from tests/offchain/conftest.py.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Callable

import pytest
from brownie import web3
from pydantic import SecretStr

from offchain.agent.service import ProviderAgent
from offchain.agent.settings import ProviderAgentSettings
from offchain.config import ChainSettings, OracleSettings
from offchain.messages import TelemetrySubmission, gpu_uuid_hash
from offchain.oracle.service import STORE_FILE, OracleService
from offchain.telemetry.source import TelemetrySource
from scripts.deploy import USDC, SuiteParams, deploy_suite
from tests.offchain.conftest import AGENT, AGENT_KEY, ORACLE_KEYS, ORACLES, PRICE
# Shared fixtures; their dependencies (e.g. `suite` for chain_settings) resolve to this directory's fixtures.
from tests.offchain.conftest import chain_settings, deployer, provider, renter, rpc_url, token  # noqa: F401

#: Short timers so that the keeper's calls come due on the wall clock within seconds.
START_TIMEOUT = 8
REPORT_GRACE = 10
PARAMS = SuiteParams(start_timeout=START_TIMEOUT, report_grace=REPORT_GRACE)
EPOCH_SECONDS = 1.0
REPORT_INTERVAL = 1.0
BLOCK_INTERVAL = 1.0
UTIL_FLOOR_BPS = 10_000  # earnings = price x delivered seconds, whatever the utilisation

_gpu_names = itertools.count()


class WaitTimedOut(AssertionError):
    pass


@pytest.fixture(scope="module")
def treasury(accounts):
    return accounts[1]


@pytest.fixture(scope="module")
def suite(deployer, treasury, token, provider, renter):
    """Registry + escrow with the 2-of-3 oracle set of ORACLE_KEYS; the provider staked with AGENT as its agent
    key, the renter funded; the agent and every oracle key hold ETH for gas."""
    suite = deploy_suite(deployer, token, token, treasury, [o.address for o in ORACLES], 2, PARAMS)
    for account in (provider, renter):
        token.mint(account, 1_000_000 * USDC, {"from": deployer})
        token.approve(suite.registry, 2**256 - 1, {"from": account})
        token.approve(suite.escrow, 2**256 - 1, {"from": account})
    suite.registry.stake(10_000 * USDC, {"from": provider})
    suite.registry.setAgent(AGENT.address, {"from": provider})
    for address in [AGENT.address, *(o.address for o in ORACLES)]:
        deployer.transfer(address, "10 ether")
    return suite


@pytest.fixture(scope="module")
def list_offer(suite, provider):
    """Lists an offer of the given GPU UUIDs (by default two made-up ones) and returns its id."""

    def _list(uuids: list[str] | None = None, min_duration: int = 1) -> int:
        uuids = uuids or [f"GPU-{uuid.UUID(int=next(_gpu_names) + 0xE2E0000, version=4)}" for _ in range(2)]
        hashes = [gpu_uuid_hash(u) for u in uuids]
        suite.registry.registerGpus(hashes, {"from": provider})
        terms = (b"H100-80GB".ljust(32, b"\0"), 81_559, PRICE, min_duration, 86_400, b"eu-west".ljust(16, b"\0"),
                 UTIL_FLOOR_BPS, hashes)
        return suite.registry.createOffer(terms, {"from": provider}).return_value

    return _list


# ---------------------------------------------------------------------------------------------- the harness


async def wait_until(condition: Callable[[], bool], seconds: float, what: str, poll: float = 0.1) -> None:
    """Waits until `condition()` holds, failing after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise WaitTimedOut(f"timed out after {seconds} s waiting for {what}")
        await asyncio.sleep(poll)


@dataclass
class Exchange:
    """Three running oracles (index 0 the leader) and, unless none was asked for, one running agent."""

    oracles: list[OracleService]
    agent: ProviderAgent | None
    tasks: list[asyncio.Task] = field(default_factory=list)

    @property
    def leader(self) -> OracleService:
        return self.oracles[0]

    def check_alive(self) -> None:
        """Raises the error of a service that stopped by itself."""
        for task in self.tasks:
            if task.done():
                task.result()
                raise AssertionError(f"{task.get_name()} stopped")

    async def until(self, condition: Callable[[], bool], seconds: float, what: str) -> None:
        """A bounded wait that fails early if a service died."""

        def check() -> bool:
            self.check_alive()
            return condition()

        await wait_until(check, seconds, what)

    async def until_chain(self, condition: Callable[[], bool], seconds: float, what: str) -> None:
        """Like `until`, for a condition that reads the chain through Brownie (run in a thread)."""
        deadline = time.monotonic() + seconds
        while not await asyncio.to_thread(condition):
            self.check_alive()
            if time.monotonic() > deadline:
                raise WaitTimedOut(f"timed out after {seconds} s waiting for {what}")
            await asyncio.sleep(0.25)


def oracle_settings(chain_settings: ChainSettings, state_root: Path, index: int, **overrides) -> OracleSettings:
    values = dict(chain=chain_settings, key=SecretStr("0x" + ORACLE_KEYS[index].hex()),
                  state_dir=state_root / f"oracle{index}", host="127.0.0.1", port=0, allow_simulated=True,
                  max_clock_skew_seconds=30, leader=False, keeper=False)
    values.update(overrides)
    return OracleSettings(**values)


def agent_settings(chain_settings: ChainSettings, state_root: Path, provider: str, oracles: list[str],
                   **overrides) -> ProviderAgentSettings:
    values = dict(chain=chain_settings, key="0x" + AGENT_KEY.hex(), provider=provider, oracles=oracles,
                  allow_simulated=True, state_dir=state_root / "agent", report_interval_seconds=REPORT_INTERVAL,
                  chain_poll_seconds=0.2, stop_grace_seconds=1.0, start_block=web3.eth.block_number + 1,
                  retry_initial_seconds=0.1, retry_max_seconds=0.5, tx_timeout_seconds=20)
    values.update(overrides)
    return ProviderAgentSettings(**values)


@asynccontextmanager
async def running_exchange(chain_settings: ChainSettings, state_root: Path, provider: str,
                           source: TelemetrySource | None) -> AsyncIterator[Exchange]:
    """Starts oracles 1 and 2, then the leader (oracle 0, with the keeper) co-signing with them, then the agent
    (if `source` is given) reporting to all three; stops everything on the way out."""
    stop = asyncio.Event()
    exchange = Exchange(oracles=[], agent=None)
    try:
        peers = [OracleService(oracle_settings(chain_settings, state_root, i)) for i in (1, 2)]
        for i, peer in zip((1, 2), peers):
            exchange.tasks.append(asyncio.create_task(peer.run(stop), name=f"oracle {i}"))
        await exchange.until(lambda: all(p.port for p in peers), 15, "the peer oracles to listen")
        leader = OracleService(oracle_settings(
            chain_settings, state_root, 0, leader=True, keeper=True, epoch_seconds=EPOCH_SECONDS,
            peers=[f"http://127.0.0.1:{p.port}" for p in peers]))
        exchange.tasks.insert(0, asyncio.create_task(leader.run(stop), name="oracle 0 (leader)"))
        exchange.oracles = [leader, *peers]
        await exchange.until(lambda: leader.port is not None and leader.keeper is not None, 15,
                             "the leader to listen and start its keeper")
        exchange.tasks.append(asyncio.create_task(_produce_blocks(stop), name="block producer"))
        if source is not None:
            urls = [f"http://127.0.0.1:{o.port}" for o in exchange.oracles]
            exchange.agent = ProviderAgent(agent_settings(chain_settings, state_root, provider, urls), source)
            exchange.tasks.append(asyncio.create_task(exchange.agent.run(), name="agent"))
        yield exchange
    finally:
        agent_tasks = [t for t in exchange.tasks if t.get_name() == "agent"]
        for task in agent_tasks:
            task.cancel()
        await asyncio.gather(*agent_tasks, return_exceptions=True)
        stop.set()
        oracle_tasks = [t for t in exchange.tasks if t.get_name() != "agent"]
        done, pending = await asyncio.wait(oracle_tasks, timeout=20) if oracle_tasks else (set(), set())
        for task in pending:
            task.cancel()
        await asyncio.gather(*oracle_tasks, return_exceptions=True)
        for oracle in exchange.oracles:
            await oracle.w3.provider.disconnect()


async def _produce_blocks(stop: asyncio.Event, interval: float = BLOCK_INTERVAL) -> None:
    """Mines an empty block every `interval` seconds until `stop` is set (anvil has no block time here)."""
    while not stop.is_set():
        await asyncio.to_thread(web3.provider.make_request, "evm_mine", [])
        try:
            await asyncio.wait_for(stop.wait(), interval)
        except TimeoutError:
            pass


def stored_reports(state_root: Path, index: int, rental_id: int) -> list[tuple[TelemetrySubmission, str | None]]:
    """The submissions oracle `index` accepted for the rental, in seq order, with the tx key that carried each."""
    db = sqlite3.connect(state_root / f"oracle{index}" / STORE_FILE)
    try:
        rows = db.execute("SELECT body, batched_tx_key FROM submissions WHERE rental_id = ? ORDER BY seq",
                          (str(rental_id),)).fetchall()
    finally:
        db.close()
    return [(TelemetrySubmission.model_validate_json(body), key) for body, key in rows]
