"""A whole exchange in this process, for the demo and the end-to-end tests: three real `OracleService`s
(2-of-3, each with the batcher, the keeper and a tx manager, taking turns at landing) and, if asked, one real
`ProviderAgent`, all on loopback against a local chain that some other party (Brownie, a test) started.

The oracles time their work by the wall clock, the agent by the chain's (measured from block timestamps), and anvil
stamps its blocks with the wall clock. Anvil mines a block only per transaction, though, and the keeper judges what
is due by the latest block's timestamp, which would otherwise stand still while nothing is sent: `running_exchange`
therefore also mines an empty block every `block_interval_seconds`, as a real chain would, and stops when it
returns (the chain's mining mode is never changed).
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Callable, Sequence

from pydantic import SecretStr
from web3 import AsyncWeb3

from offchain.agent.containers import ContainerSettings
from offchain.agent.service import ProviderAgent
from offchain.agent.settings import ProviderAgentSettings
from offchain.chain.rpc import connect
from offchain.config import ChainSettings, OracleSettings
from offchain.ops.cluster import free_port
from offchain.ops.devnet import DEV_JOB_IMAGE, build_job_image
from offchain.oracle.keeper import KeeperAction
from offchain.oracle.service import OracleService
from offchain.protocol.messages import TelemetrySubmission
from offchain.telemetry.source import TelemetrySource

SERVICE_START_SECONDS = 15
SERVICE_STOP_SECONDS = 20


class WaitTimedOut(AssertionError):
    """A bounded wait ran out; an AssertionError so that a test reads it as the failure it is."""


@dataclass(frozen=True)
class ExchangeTimers:
    """How often the services act: short, so that a rental plays out in seconds."""

    epoch_seconds: float = 1.0  # each oracle batches and co-signs the reports whose turn came this often
    report_interval_seconds: float = 1.0  # the agent closes a report period this often
    keeper_interval_seconds: float = 1.0
    block_interval_seconds: float = 1.0
    # The oracles land a running rental's latest report once its coverage has grown this much since the last one
    # landed (and always the final report, the one up to a termination and the one at the rental's end).
    checkpoint_interval_seconds: int = 3_600
    # Each oracle after the one whose turn it is waits this long for the one before it (`offchain.oracle.rotation`);
    # with three oracles and one-second epochs, 2 s keeps the last turn within half a 10 s reportGrace.
    handoff_seconds: int = 2


@dataclass(frozen=True)
class ProviderMachine:
    """A provider machine to run an agent on: the agent key the provider registered, the GPUs' telemetry and the
    machine's clock (the system clock unless a test gives one that is off)."""

    provider: str
    agent_key: bytes
    source: TelemetrySource
    clock: Callable[[], float] = time.time


def agent_spec_dir(state_root: Path) -> Path:
    """The agent's job spec directory: a renter hands its job spec to the provider off chain, into here."""
    return state_root / "agent" / "specs"


async def wait_until(condition: Callable[[], bool], seconds: float, what: str, poll: float = 0.1) -> None:
    """Waits until `condition()` holds, failing after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise WaitTimedOut(f"timed out after {seconds} s waiting for {what}")
        await asyncio.sleep(poll)


@dataclass
class LocalExchange:
    """The running in-process oracles (three, each landing reports and keeping in its turn; none when the oracles
    run elsewhere) and, unless none was asked for, one running agent."""

    oracles: list[OracleService]
    agent: ProviderAgent | None
    tasks: list[asyncio.Task] = field(default_factory=list)

    def reports(self, rental_id: int) -> list[TelemetrySubmission]:
        """The reports of the rental that oracle 0 accepted (every oracle the agent reaches holds the same)."""
        return self.oracles[0].store.reports(rental_id)

    def keeper_actions(self, rental_id: int) -> list[KeeperAction]:
        """The keeper calls any oracle submitted for the rental, in the oracles' order."""
        return [a for o in self.oracles if o.keeper is not None for a in o.keeper.actions() if a.rental_id == rental_id]

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
        """Like `until`, for a blocking condition (one that reads the chain through a synchronous client): it runs
        in a thread, so the services keep running meanwhile."""
        deadline = time.monotonic() + seconds
        while not await asyncio.to_thread(condition):
            self.check_alive()
            if time.monotonic() > deadline:
                raise WaitTimedOut(f"timed out after {seconds} s waiting for {what}")
            await asyncio.sleep(0.25)


def _oracle_settings(
    chain: ChainSettings, state_root: Path, index: int, key: bytes, allow_simulated: bool, **overrides
) -> OracleSettings:
    values = dict(
        chain=chain,
        key=SecretStr("0x" + key.hex()),
        state_dir=state_root / f"oracle{index}",
        host="127.0.0.1",
        port=0,
        allow_simulated=allow_simulated,
        max_clock_skew_seconds=30,
    )
    return OracleSettings(**{**values, **overrides})


def _agent_settings(
    chain: ChainSettings,
    state_root: Path,
    machine: ProviderMachine,
    oracles: list[str],
    start_block: int,
    timers: ExchangeTimers,
) -> ProviderAgentSettings:
    return ProviderAgentSettings(
        chain=chain,
        key="0x" + machine.agent_key.hex(),
        provider=machine.provider,
        oracles=oracles,
        allow_simulated=machine.source.simulated,
        state_dir=state_root / "agent",
        spec_dir=agent_spec_dir(state_root),
        report_interval_seconds=timers.report_interval_seconds,
        chain_poll_seconds=0.2,
        stop_grace_seconds=1.0,
        start_block=start_block,
        retry_initial_seconds=0.1,
        retry_max_seconds=0.5,
        tx_timeout_seconds=20,
        container=ContainerSettings(default_image=DEV_JOB_IMAGE),
        keep_jobs_on_exit=False,
        api_port=0,
    )


@asynccontextmanager
async def running_exchange(
    chain: ChainSettings,
    state_root: Path,
    oracle_keys: Sequence[bytes],
    machine: ProviderMachine | None,
    *,
    timers: ExchangeTimers = ExchangeTimers(),
    allow_simulated: bool = True,
) -> AsyncIterator[LocalExchange]:
    """Starts the three oracles, each co-signing with the other two and landing reports and keeping in its turn,
    then the block producer and, for `machine`, the agent reporting to all three, watching from the next block on,
    running jobs in containers of the busybox job image (`offchain.ops.devnet.DEV_JOB_IMAGE`, built if missing)
    unless a spec names another; stops everything on the way out (the agent first, so that it stops its jobs).

    `oracle_keys` are the three keys of the escrow's 2-of-3 oracle set; each service keeps its state under
    `state_root` (`oracle0/`..`oracle2/`, `agent/`). The oracles accept simulated telemetry only with
    `allow_simulated`.
    """
    if len(oracle_keys) != 3:
        raise ValueError("the in-process exchange runs a 2-of-3 oracle set: give three oracle keys")
    stop = asyncio.Event()
    w3 = connect(chain.rpc_url)
    exchange = LocalExchange(oracles=[], agent=None)
    try:
        ports = [free_port() for _ in oracle_keys]
        for i, key in enumerate(oracle_keys):
            settings = _oracle_settings(
                chain,
                state_root,
                i,
                key,
                allow_simulated,
                port=ports[i],
                peers=[f"http://127.0.0.1:{p}" for j, p in enumerate(ports) if j != i],
                epoch_seconds=timers.epoch_seconds,
                keeper_interval_seconds=timers.keeper_interval_seconds,
                checkpoint_interval_seconds=timers.checkpoint_interval_seconds,
                handoff_seconds=timers.handoff_seconds,
            )
            exchange.oracles.append(OracleService(settings))
            exchange.tasks.append(asyncio.create_task(exchange.oracles[i].run(stop), name=f"oracle {i}"))
        await exchange.until(
            lambda: all(o.port is not None and o.keeper is not None for o in exchange.oracles),
            SERVICE_START_SECONDS,
            "the oracles to listen and start their keepers",
        )
        await _start_agent_side(exchange, w3, chain, state_root, machine, timers, stop)
        yield exchange
    finally:
        await _stop_tasks(exchange, stop)
        for oracle in exchange.oracles:
            await oracle.w3.provider.disconnect()
        await w3.provider.disconnect()


async def _start_agent_side(
    exchange: LocalExchange,
    w3: AsyncWeb3,
    chain: ChainSettings,
    state_root: Path,
    machine: ProviderMachine | None,
    timers: ExchangeTimers,
    stop: asyncio.Event,
    oracle_urls: Sequence[str] | None = None,
) -> None:
    """Starts the block producer and, for `machine`, the agent reporting to `oracle_urls` (by default the exchange's
    in-process oracles), watching from the next block on."""
    exchange.tasks.append(
        asyncio.create_task(_produce_blocks(w3, stop, timers.block_interval_seconds), name="block producer")
    )
    if machine is None:
        return
    await asyncio.to_thread(build_job_image)
    urls = list(oracle_urls) if oracle_urls is not None else [f"http://127.0.0.1:{o.port}" for o in exchange.oracles]
    start_block = await w3.eth.block_number + 1
    exchange.agent = ProviderAgent(
        _agent_settings(chain, state_root, machine, urls, start_block, timers), machine.source, clock=machine.clock
    )
    exchange.tasks.append(asyncio.create_task(exchange.agent.run(), name="agent"))
    agent = exchange.agent
    await exchange.until(
        lambda: agent.api is None or agent.api.port is not None,
        SERVICE_START_SECONDS,
        "the agent's renter API to listen",
    )


async def _stop_tasks(exchange: LocalExchange, stop: asyncio.Event) -> None:
    """Stops the agent first (so that it stops its jobs), then everything else."""
    agent_tasks = [t for t in exchange.tasks if t.get_name() == "agent"]
    for task in agent_tasks:
        task.cancel()
    await asyncio.gather(*agent_tasks, return_exceptions=True)
    stop.set()
    other_tasks = [t for t in exchange.tasks if t.get_name() != "agent"]
    if other_tasks:
        _, pending = await asyncio.wait(other_tasks, timeout=SERVICE_STOP_SECONDS)
        for task in pending:
            task.cancel()
    await asyncio.gather(*other_tasks, return_exceptions=True)


@asynccontextmanager
async def running_agent(
    chain: ChainSettings,
    state_root: Path,
    machine: ProviderMachine,
    oracle_urls: Sequence[str],
    *,
    timers: ExchangeTimers = ExchangeTimers(),
) -> AsyncIterator[LocalExchange]:
    """The provider's agent and the block producer in this process, reporting to oracles that run elsewhere (for
    example as processes, `offchain.ops.cluster`); the returned exchange holds no in-process oracle."""
    stop = asyncio.Event()
    w3 = connect(chain.rpc_url)
    exchange = LocalExchange(oracles=[], agent=None)
    try:
        await _start_agent_side(exchange, w3, chain, state_root, machine, timers, stop, oracle_urls)
        yield exchange
    finally:
        await _stop_tasks(exchange, stop)
        await w3.provider.disconnect()


async def _produce_blocks(w3: AsyncWeb3, stop: asyncio.Event, interval: float) -> None:
    """Mines an empty block every `interval` seconds until `stop` is set (anvil has no block time here)."""
    while not stop.is_set():
        await w3.provider.make_request("evm_mine", [])
        try:
            await asyncio.wait_for(stop.wait(), interval)
        except TimeoutError:
            pass
