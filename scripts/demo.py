"""`make demo`: a whole exchange on a local anvil, a short market on it, and a ledger that must balance.

Brownie (`python -m scripts.run demo`) starts anvil and stops it when the script returns. `run_demo` deploys a
suite with short protocol timers and runs the real services in this process (`offchain.ops.inprocess`: three
oracles, 2-of-3, each landing reports and keeping in its turn, and provider A's agent), then plays a market:

1. provider A stakes, registers its GPUs (this machine's, measured through NVML; without NVML, SIMULATED ones,
   said loudly) and lists them as two offers; provider B stakes and lists an offer that no agent serves;
2. renter 1 rents A's first offer for a short training job, which the agent runs to completion (Completed);
   renter 2 rents A's second offer for a server job; once a checkpoint of its cumulative reports has landed,
   provider A claims what the rental has earned so far, and renter 2 terminates it (the unused time is
   refunded at once; the keeper finalises the rest after the report grace); renter 2 also rents B's offer, which
   is never started: the keeper claims the start timeout and B's collateral is slashed to renter 2;
3. everyone withdraws, and the providers unstake.

The ledger lists every party's token balance before and after, and the contracts' holdings; it must sum to zero,
and each party's change must be what the settlement events say. `out/demo.png` plots the reported GPU
utilisation of each rental and the amounts it settled. `main` raises (exit status 1) if any check fails.

On a machine with a single GPU both renters rent A's one offer, one after the other.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import sys
import time
import uuid
from contextlib import closing, redirect_stdout
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Callable

from brownie import TestStablecoin, accounts, chain, web3
from eth_account import Account
from eth_utils import keccak

# The object-oriented API renders to PNG without pyplot, so no GUI backend is ever chosen.
from matplotlib.figure import Figure
from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from offchain.agent.jobspec import JobSpec, JobSpecStore
from offchain.agent.rentals import Phase
from offchain.chain.contracts import PROJECT_ROOT
from offchain.chain.reads import Rental
from offchain.config import ChainSettings
from offchain.ops.devnet import DEV_JOB_IMAGE
from offchain.ops.inprocess import ExchangeTimers, LocalExchange, ProviderMachine, agent_spec_dir, running_exchange
from offchain.protocol.messages import gpu_uuid_hash
from offchain.protocol.status import RentalStatus
from offchain.telemetry.models import GpuInfo
from offchain.telemetry.nvml import NvmlSource
from offchain.telemetry.simulated import GPU_MODELS, SimulatedSource
from offchain.telemetry.source import TelemetrySource, TelemetryUnavailable
from scripts.deploy import USDC, Suite, SuiteParams, deploy_suite

ORACLE_KEYS = [keccak(text=f"gpuex demo oracle {i}") for i in range(3)]
AGENT_KEY = keccak(text="gpuex demo agent")
#: Short timers so that the whole market plays out in well under a minute of wall time.
PARAMS = SuiteParams(min_stake_per_gpu=10 * USDC, unbonding_period=2, start_timeout=15, report_grace=10)
#: Running rentals land a checkpoint every 5 s of coverage, so the demo shows checkpoints and a provider claiming
#: its earnings while the rental runs (a real deployment lands one an hour).
TIMERS = ExchangeTimers(checkpoint_interval_seconds=5)
BPS = 10_000
DURATION = 300  # seconds each renter pays for up front; every rental ends long before
PROVIDER_FUNDS = 1_000 * USDC
RENTER_FUNDS = 100 * USDC
#: Token units per GPU-second of provider A's two offers and provider B's (2.52, 2.16 and 1.80 tUSD per GPU-hour).
GPU_PRICES_A = (700, 600)
GPU_PRICE_B = 500
#: How long the training job runs, and how many one-second reports the server job gets before its renter terminates
#: it. The agent may miss a rental's first second (it samples once it has seen the start mined); over 20 s or more,
#: one second missed stays within the 95% SLA, so neither rental is slashed for it.
RUN_SECONDS = 22
SIMULATED_MODEL = "NVIDIA H100 80GB HBM3"
SIMULATED_GPUS = 4
PROVIDER_B_MODEL = GPU_MODELS["NVIDIA L4"]
#: Bounds of the waits, far above what each step takes, so a stuck service fails the demo instead of hanging it.
START_WAIT = 30
JOB_WAIT = 60
SETTLE_WAIT = PARAMS.report_grace + 30
TIMEOUT_WAIT = PARAMS.start_timeout + 30

#: The jobs run in the busybox job image (`offchain.ops.devnet.DEV_JOB_IMAGE`, the demo agent's default image), in a
#: hardened container: a "training" loop that logs a falling loss and leaves its result in its output folder (`out/`,
#: which its renter downloads with `gpuex rental results`), and a server that runs
#: until its renter ends the rental.
TRAINING_JOB = JobSpec(
    command=(
        "sh",
        "-c",
        (
            "loss=25000; step=1\n"
            f"while [ $step -le {RUN_SECONDS} ]; do\n"
            "  sleep 1; loss=$((loss * 9 / 10))\n"
            "  printf 'step %d: loss %d.%04d\\n' $step $((loss / 10000)) $((loss % 10000)); step=$((step + 1))\n"
            "done\n"
            "mkdir -p out\n"
            f'printf \'{{"steps": {RUN_SECONDS}, "loss": %d.%04d}}\\n\' $((loss / 10000)) $((loss % 10000)) '
            "> out/result.json\n"
        ),
    ),
    timeout_seconds=60,
)
SERVER_JOB = JobSpec(command=("sh", "-c", "while true; do sleep 1; done"), timeout_seconds=DURATION)


class Ending(StrEnum):
    """How a rental of the demo ends."""

    COMPLETES = "its job runs to completion"
    TERMINATED = "its renter terminates it early"
    NEVER_STARTS = "its provider never starts it"


@dataclass(frozen=True)
class Offer:
    offer_id: int
    provider: str  # party name
    gpus: tuple[GpuInfo, ...]
    price_per_second: int
    served: bool  # whether an agent serves it

    @property
    def collateral(self) -> int:
        """What a rental locks of the provider's stake: the minimum stake of each of the offer's GPUs."""
        return PARAMS.min_stake_per_gpu * len(self.gpus)


@dataclass(frozen=True)
class Plan:
    """One rental the demo plays; `after` names the rental of the same offer it must wait for."""

    label: str
    renter: str
    offer: Offer
    ending: Ending
    spec: JobSpec
    after: str | None = None


@dataclass
class DemoMarket:
    """Everything deployed and who is who."""

    suite: Suite
    token: object
    parties: dict[str, object]  # party name -> Brownie account
    offers: list[Offer]
    plans: list[Plan]
    from_block: int
    simulated: bool
    before: dict[str, int] = field(default_factory=dict)  # holder (party or contract) -> balance before the market
    rental_ids: dict[str, int] = field(default_factory=dict)  # plan label -> rental id
    compensation_owed: dict[str, int] = field(default_factory=dict)  # renter -> registry compensation, pre-withdrawal


@dataclass(frozen=True)
class UtilisationPoint:
    seconds: int  # since the rental started, where the landed report's coverage ends
    avg_util_pct: float  # since the previous landed report


@dataclass(frozen=True)
class Settlement:
    """One rental as the escrow's events tell it. (Not from `getRental`: a later rental of the same offer replaces
    the rental under its id.)"""

    label: str
    rental_id: int
    renter: str
    provider: str
    ending: Ending
    status: RentalStatus
    terminated: bool
    price_per_second: int
    deposit: int
    delivered_seconds: int
    provider_payout: int
    fee: int
    refund: int  # at termination and at settlement together
    slashed: int
    collateral: int
    utilisation: tuple[UtilisationPoint, ...]

    @property
    def outcome(self) -> str:
        return ("terminated, then " if self.terminated else "") + _status_name(self.status)


@dataclass(frozen=True)
class LedgerRow:
    """One holder of the demo's token: a party, or a contract. The flows say why a party's balance moved."""

    holder: str
    address: str
    before: int
    after: int
    is_contract: bool = False
    rentals: int = 0  # refunds less deposits
    payouts: int = 0
    fees: int = 0
    slashes: int = 0  # compensation received (+), stake slashed (-)

    @property
    def change(self) -> int:
        return self.after - self.before

    @property
    def explained(self) -> int:
        return self.rentals + self.payouts + self.fees + self.slashes


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool


@dataclass(frozen=True)
class DemoResult:
    """What `run_demo` played and settled; `failed` names the checks that did not hold."""

    simulated: bool
    suite: Suite
    token: object
    settlements: list[Settlement]
    ledger: list[LedgerRow]
    checks: list[Check]
    plot: Path
    seconds: float

    def settlement(self, ending: Ending) -> Settlement:
        return next(s for s in self.settlements if s.ending is ending)

    def row(self, holder: str) -> LedgerRow:
        return next(r for r in self.ledger if r.holder == holder)

    @property
    def failed(self) -> list[str]:
        return [c.name for c in self.checks if not c.ok]


def main():
    """`make demo`: writes to `out/` and fails unless every ledger check holds."""
    console = Console(width=None if sys.stdout.isatty() else 132)
    result = run_demo(PROJECT_ROOT / "out", console)
    if result.failed:
        raise RuntimeError(f"ledger check failed: {'; '.join(result.failed)}")


def run_demo(out_dir: Path, console: Console | None = None) -> DemoResult:
    """Plays the market on the connected Brownie network (a development chain) and returns what it settled.

    Services keep their state under `out_dir/demo-state` (wiped first); the plot goes to `out_dir/demo.png`.
    """
    console = console or Console()
    started = time.monotonic()
    state_root = out_dir / "demo-state"
    shutil.rmtree(state_root, ignore_errors=True)
    state_root.mkdir(parents=True)
    console.rule("[bold]gpuex demo: a local exchange")
    with closing(_telemetry_source(console)) as source:
        market = _set_up(console, source)
        console.print(_offers_table(market))
        for plan in market.plans:
            JobSpecStore(agent_spec_dir(state_root)).put(plan.spec)
        asyncio.run(_play(console, market, source, state_root))
    _withdraw_everything(console, market)
    settlements = [_settlement(market, plan) for plan in market.plans]
    ledger = _ledger(market, settlements)
    checks = _checks(market, settlements, ledger)
    plot = _plot(out_dir / "demo.png", settlements, market.simulated)
    console.print(_rentals_table(settlements))
    console.print(_ledger_table(ledger))
    for check in checks:
        console.print(f"[{'green]ok  ' if check.ok else 'bold red]FAIL'}[/] {check.name}")
    seconds = time.monotonic() - started
    console.print(f"plot: {plot}    state and job logs: {state_root}    {seconds:.0f} s")
    return DemoResult(market.simulated, market.suite, market.token, settlements, ledger, checks, plot, seconds)


# ------------------------------------------------------------------------------------------------ set-up


def _telemetry_source(console: Console) -> TelemetrySource:
    """This machine's GPUs through NVML, or SIMULATED GPUs (and a loud panel) where NVML sees none."""
    try:
        source: TelemetrySource = NvmlSource()
    except TelemetryUnavailable as exc:
        console.print(
            Panel(
                f"[bold]SIMULATED GPUs[/] — no NVML device found ({exc}).\n"
                f"Provider A's agent runs the renters' jobs for real, but its telemetry comes from {SIMULATED_GPUS} "
                f"made-up {SIMULATED_MODEL} GPUs: every report it signs says simulated=true, and the oracles accept "
                "them only because this is a demo.",
                title="SIMULATED telemetry",
                style="bold yellow",
            )
        )
        return SimulatedSource(SIMULATED_MODEL, SIMULATED_GPUS, seed=2024)
    gpus = source.gpus()
    console.print(
        Panel(f"{len(gpus)} GPU(s) measured through NVML: {gpus[0].name}", title="real telemetry", style="bold green")
    )
    return source


def _set_up(console: Console, source: TelemetrySource) -> DemoMarket:
    deployer, treasury, provider_a, provider_b, renter_1, renter_2 = accounts[:6]
    parties = {
        "treasury": treasury,
        "provider A": provider_a,
        "provider B": provider_b,
        "renter 1": renter_1,
        "renter 2": renter_2,
    }
    agent = Account.from_key(AGENT_KEY)
    oracles = [Account.from_key(k) for k in ORACLE_KEYS]
    gpus = source.gpus()
    groups = [gpus[: len(gpus) // 2], gpus[len(gpus) // 2 :]] if len(gpus) >= 2 else [gpus]
    gpus_b = [
        GpuInfo(
            index=i,
            uuid=f"GPU-{uuid.UUID(int=0xB0B0 + i, version=4)}",
            name=PROVIDER_B_MODEL.name,
            mem_total_mib=PROVIDER_B_MODEL.mem_total_mib,
        )
        for i in range(2)
    ]
    steps = 10 + len(groups)  # one per `step` below
    with _progress(console, "{task.completed}/{task.total}") as progress:
        task = progress.add_task("deploying", total=steps)

        def step(what: str, action: Callable[[], object]):
            progress.update(task, description=what)
            result = action()
            progress.advance(task)
            return result

        from_block = web3.eth.block_number + 1
        token = step(
            "deploying the test stablecoin", lambda: TestStablecoin.deploy(deployer, {"from": deployer}, silent=True)
        )
        suite = step(
            "deploying the registry and escrow, 2-of-3 oracles",
            lambda: _quietly(deploy_suite, deployer, token, token, treasury, [o.address for o in oracles], 2, PARAMS),
        )
        registry, escrow = suite.registry, suite.escrow
        step(
            "paying gas money to the agent and the oracles",
            lambda: [deployer.transfer(a.address, "1 ether", silent=True) for a in (agent, *oracles)],
        )

        def fund():
            for name, account in parties.items():
                if name != "treasury":
                    token.mint(
                        account,
                        PROVIDER_FUNDS if name.startswith("provider") else RENTER_FUNDS,
                        {"from": deployer},
                        silent=True,
                    )
                    token.approve(
                        registry if name.startswith("provider") else escrow, 2**256 - 1, {"from": account}, silent=True
                    )

        step("minting tUSD for providers and renters", fund)
        before = _token_balances(suite, token, {**parties, "escrow": escrow, "registry": registry})
        step(
            "provider A stakes",
            lambda: registry.stake(PARAMS.min_stake_per_gpu * len(gpus), {"from": provider_a}, silent=True),
        )
        step(
            "provider A sets its agent key", lambda: registry.setAgent(agent.address, {"from": provider_a}, silent=True)
        )
        step(
            f"provider A registers {len(gpus)} GPU(s)",
            lambda: registry.registerGpus([gpu_uuid_hash(g.uuid) for g in gpus], {"from": provider_a}, silent=True),
        )
        offers_a = [
            step(
                f"provider A lists offer {i + 1}",
                lambda group=group, price=price: _list_offer(
                    suite, provider_a, "provider A", group, price * len(group), "eu-west", served=True
                ),
            )
            for i, (group, price) in enumerate(zip(groups, GPU_PRICES_A))
        ]
        step(
            "provider B stakes",
            lambda: registry.stake(PARAMS.min_stake_per_gpu * len(gpus_b), {"from": provider_b}, silent=True),
        )
        step(
            "provider B registers 2 GPUs",
            lambda: registry.registerGpus([gpu_uuid_hash(g.uuid) for g in gpus_b], {"from": provider_b}, silent=True),
        )
        offer_b = step(
            "provider B lists an offer",
            lambda: _list_offer(
                suite, provider_b, "provider B", gpus_b, GPU_PRICE_B * len(gpus_b), "us-east", served=False
            ),
        )
    shared = len(offers_a) == 1
    if shared:
        console.print(
            "A single GPU here, so provider A lists a single offer: renter 2 rents it once rental 1 has settled."
        )
    plans = [
        Plan("rental 1", "renter 1", offers_a[0], Ending.COMPLETES, TRAINING_JOB),
        Plan("rental 2", "renter 2", offers_a[-1], Ending.TERMINATED, SERVER_JOB, after="rental 1" if shared else None),
        Plan("rental 3", "renter 2", offer_b, Ending.NEVER_STARTS, TRAINING_JOB),
    ]
    return DemoMarket(suite, token, parties, [*offers_a, offer_b], plans, from_block, source.simulated, before)


def _list_offer(suite, provider, name: str, gpus: list[GpuInfo], price: int, region: str, served: bool) -> Offer:
    hashes = [gpu_uuid_hash(g.uuid) for g in gpus]
    terms = (
        gpus[0].name.encode()[:32].ljust(32, b"\0"),
        gpus[0].mem_total_mib,
        price,
        1,
        86_400,
        region.encode().ljust(16, b"\0"),
        BPS,
        False,
        hashes,
    )
    tx = suite.registry.createOffer(terms, {"from": provider}, silent=True)
    return Offer(tx.events["OfferCreated"]["offerId"], name, tuple(gpus), price, served)


def _quietly(deploy: Callable, *args):
    """Calls a deployment routine that sends its transactions without `silent` (Brownie prints each one)."""
    with redirect_stdout(io.StringIO()):
        return deploy(*args)


def _progress(console: Console, right: str) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(bar_width=24),
        TextColumn(right),
        TimeElapsedColumn(),
        console=console,
    )


# ------------------------------------------------------------------------------------------------ the market


async def _play(console: Console, market: DemoMarket, source: TelemetrySource, state_root: Path) -> None:
    """Runs the services and the three rentals side by side until each is settled and the agent is done."""
    provider_a = market.parties["provider A"]
    suite = market.suite
    chain_settings = ChainSettings(
        rpc_url=web3.provider.endpoint_uri,
        chain_id=web3.eth.chain_id,
        registry=suite.registry.address,
        escrow=suite.escrow.address,
    )
    machine = ProviderMachine(provider_a.address, AGENT_KEY, source)
    console.print("starting three oracles (2-of-3; each lands reports and keeps in its turn) and provider A's agent")
    async with running_exchange(
        chain_settings, state_root, ORACLE_KEYS, machine, timers=TIMERS, allow_simulated=source.simulated
    ) as exchange:
        console.print(
            f"oracles on ports {', '.join(str(o.port) for o in exchange.oracles)}; agent "
            f"{exchange.agent.address}, running each job in a hardened podman container of {DEV_JOB_IMAGE} "
            "(non-root, read-only, no capabilities, no network, memory/CPU/pid limits)"
        )
        settled = {plan.label: asyncio.Event() for plan in market.plans}
        with _progress(console, "{task.fields[state]}") as progress:
            await asyncio.gather(*(_rent(exchange, market, plan, progress, settled) for plan in market.plans))


async def _rent(
    exchange: LocalExchange, market: DemoMarket, plan: Plan, progress: Progress, settled: dict[str, asyncio.Event]
) -> None:
    """Plays one rental from opening to settlement, advancing its progress bar at each milestone."""
    milestones = {Ending.COMPLETES: 3, Ending.TERMINATED: 5, Ending.NEVER_STARTS: 2}[plan.ending]  # `say`s below
    title = f"{plan.label}: {plan.renter} -> {plan.offer.provider}, offer {plan.offer.offer_id}"
    task = progress.add_task(title, total=milestones, state="waiting")
    escrow = market.suite.escrow
    renter = market.parties[plan.renter]

    def say(message: str) -> None:
        progress.advance(task)
        progress.console.print(f"{plan.label}: {message}")

    if plan.after is not None:
        progress.update(task, state=f"waiting for {plan.after} to free the offer")
        await settled[plan.after].wait()
    tx = await asyncio.to_thread(
        escrow.openRental,
        plan.offer.offer_id,
        DURATION,
        plan.offer.price_per_second,
        plan.spec.spec_hash(),
        {"from": renter},
        silent=True,
    )
    rental_id = market.rental_ids[plan.label] = tx.events["RentalOpened"]["rentalId"]
    say(
        f"{plan.renter} opened rental {rental_id:#x} for {DURATION} s ({_tusd(tx.events['RentalOpened']['deposit'])} "
        f"tUSD deposit); {plan.ending}"
    )

    async def follow(condition: Callable[[Rental], bool], seconds: float, what: str) -> Rental:
        def check() -> bool:
            state = _rental_state(market.suite, rental_id)
            progress.update(task, state=_describe(state))
            return condition(state)

        await exchange.until_chain(check, seconds, f"{plan.label} {what}")
        return await asyncio.to_thread(_rental_state, market.suite, rental_id)

    if plan.ending is Ending.NEVER_STARTS:
        state = await follow(lambda s: s.status.is_final, TIMEOUT_WAIT, "to time out")
        say(f"the keeper claimed the start timeout: {state.status.name}")
    else:
        await follow(lambda s: s.status is not RentalStatus.OPEN, START_WAIT, "to start")
        say("provider A's agent started it and runs the job")
        if plan.ending is Ending.TERMINATED:
            await exchange.until(
                lambda: len(exchange.reports(rental_id)) >= RUN_SECONDS,
                JOB_WAIT,
                f"{plan.label} to have {RUN_SECONDS} reports at the oracles",
            )
            state = await follow(lambda s: s.claimable > 0, JOB_WAIT, "to have a checkpoint on chain")
            say(f"{RUN_SECONDS} usage reports at the oracles; report {state.last_seq} landed as a checkpoint")
            provider = market.parties[plan.offer.provider]
            tx = await asyncio.to_thread(escrow.claimPayout, rental_id, {"from": provider}, silent=True)
            say(
                f"{plan.offer.provider} claimed {_tusd(tx.events['EarningsClaimed']['providerPayout'])} tUSD of its "
                "earnings while the rental runs"
            )
            tx = await asyncio.to_thread(escrow.terminate, rental_id, {"from": renter}, silent=True)
            say(f"{plan.renter} terminated it; {_tusd(tx.events['RentalTerminated']['refund'])} tUSD refunded now")
        state = await follow(
            lambda s: s.status.is_final, SETTLE_WAIT if plan.ending is Ending.TERMINATED else JOB_WAIT, "to settle"
        )
        say(f"settled: {state.status.name}, {state.delivered_seconds} s delivered")
        await exchange.until(
            lambda: exchange.agent.book.get(rental_id).phase is Phase.DONE,
            START_WAIT,
            f"the agent to be done with {plan.label}",
        )
    progress.update(task, state=_describe(state))
    settled[plan.label].set()


def _rental_state(suite: Suite, rental_id: int) -> Rental:
    return suite.read(lambda r: r.rental(rental_id))


def _token_balances(suite: Suite, token, holders: dict[str, object]) -> dict[str, int]:
    """The `token` balance of each holder (an account or a contract), by name."""
    balances = suite.read(
        lambda r: asyncio.gather(*(r.token_balance(token.address, h.address) for h in holders.values()))
    )
    return dict(zip(holders, balances))


def _describe(state: Rental) -> str:
    if state.status is RentalStatus.OPEN:
        return "open, not started"
    return (
        f"{_status_name(state.status)}: {state.last_seq} reports, {state.delivered_seconds} s, "
        f"{_tusd(state.earned)} tUSD"
    )


def _withdraw_everything(console: Console, market: DemoMarket) -> None:
    """Every party takes out what the contracts owe it; the providers unstake (a short unbonding period)."""
    suite = market.suite
    registry, escrow = suite.registry, suite.escrow
    parties = market.parties
    market.compensation_owed = {
        name: suite.read(lambda r, a=account: r.balances(a.address)).compensation
        for name, account in parties.items()
        if name.startswith("renter")
    }
    providers = [name for name in parties if name.startswith("provider")]
    with _progress(console, "{task.completed}/{task.total}") as progress:
        task = progress.add_task("withdrawing", total=len(parties) + 2 * len(providers))
        unbonding_ends = 0
        for name in providers:
            progress.update(task, description=f"{name} requests to unstake")
            stake = suite.read(lambda r, a=parties[name]: r.provider(a.address))
            free = stake.staked - stake.locked - stake.unbonding
            tx = registry.requestUnstake(free, {"from": parties[name]}, silent=True)
            unbonding_ends = max(unbonding_ends, tx.events["UnstakeRequested"]["endsAt"])
            progress.advance(task)
        for name, account in parties.items():
            progress.update(task, description=f"{name} withdraws")
            if suite.read(lambda r, a=account: r.balances(a.address)).escrow > 0:
                escrow.withdraw({"from": account}, silent=True)
            if market.compensation_owed.get(name):
                registry.withdrawCompensation({"from": account}, silent=True)
            progress.advance(task)
        progress.update(task, description=f"waiting out the {PARAMS.unbonding_period} s unbonding period")
        while chain[-1].timestamp <= unbonding_ends:
            time.sleep(0.5)
            chain.mine()
        for name in providers:
            progress.update(task, description=f"{name} withdraws its stake")
            registry.withdrawUnstaked({"from": parties[name]}, silent=True)
            progress.advance(task)


# ------------------------------------------------------------------------------------------------ the ledger


def _events(contract, name: str, from_block: int) -> list[dict]:
    handle = web3.eth.contract(address=contract.address, abi=contract.abi)
    return [dict(log["args"]) for log in getattr(handle.events, name)().get_logs(from_block=from_block)]


def _settlement(market: DemoMarket, plan: Plan) -> Settlement:
    escrow = market.suite.escrow
    rental_id = market.rental_ids[plan.label]

    def of_rental(name: str) -> list[dict]:
        return [e for e in _events(escrow, name, market.from_block) if e["rentalId"] == rental_id]

    (opened,), (final,) = of_rental("RentalOpened"), of_rental("RentalFinalized")
    terminated = of_rental("RentalTerminated")
    started = [e["startedAt"] for e in of_rental("RentalStarted")]
    applied = sorted(of_rental("ReportApplied"), key=lambda e: e["seq"])
    utilisation = _utilisation(applied, started[0]) if started else ()
    return Settlement(
        label=plan.label,
        rental_id=rental_id,
        renter=plan.renter,
        provider=plan.offer.provider,
        ending=plan.ending,
        status=RentalStatus(final["status"]),
        terminated=bool(terminated),
        price_per_second=opened["pricePerSecond"],
        deposit=opened["deposit"],
        delivered_seconds=final["deliveredSeconds"],
        provider_payout=final["providerPayout"],
        fee=final["fee"],
        refund=final["refund"] + sum(e["refund"] for e in terminated),
        slashed=final["slashed"],
        collateral=plan.offer.collateral,
        utilisation=utilisation,
    )


def _utilisation(applied: list[dict], started_at: int) -> tuple[UtilisationPoint, ...]:
    """The average utilisation between each landed report and the one before it, from their cumulative totals."""
    points = []
    delivered = util = 0
    for e in applied:
        more = e["deliveredSeconds"] - delivered
        if more:
            points.append(UtilisationPoint(e["coveredUntil"] - started_at, 100 * (e["utilSeconds"] - util) / more))
        delivered, util = e["deliveredSeconds"], e["utilSeconds"]
    return tuple(points)


def _ledger(market: DemoMarket, settlements: list[Settlement]) -> list[LedgerRow]:
    """A row per party (its balance before the market and now, and the flows the settlements explain) and a row
    per contract."""
    flows = {name: dict(rentals=0, payouts=0, fees=0, slashes=0) for name in market.parties}
    for s in settlements:
        flows[s.renter]["rentals"] += s.refund - s.deposit
        flows[s.renter]["slashes"] += s.slashed
        flows[s.provider]["payouts"] += s.provider_payout
        flows[s.provider]["slashes"] -= s.slashed
        flows["treasury"]["fees"] += s.fee
    contracts = {"escrow": market.suite.escrow, "registry": market.suite.registry}
    after = _token_balances(market.suite, market.token, {**market.parties, **contracts})
    rows = [
        LedgerRow(name, account.address, market.before[name], after[name], **flows[name])
        for name, account in market.parties.items()
    ]
    rows += [
        LedgerRow(name, contract.address, market.before[name], after[name], is_contract=True)
        for name, contract in contracts.items()
    ]
    return rows


def _checks(market: DemoMarket, settlements: list[Settlement], ledger: list[LedgerRow]) -> list[Check]:
    """The ledger's balances against the settlement events, and both against the protocol's arithmetic."""
    by_ending = {s.ending: s for s in settlements}
    completed, terminated, timed_out = (by_ending[e] for e in Ending)
    rows = {r.holder: r for r in ledger}
    started = [s for s in settlements if s.ending is not Ending.NEVER_STARTS]

    def paid_right(s: Settlement) -> bool:
        earned = s.price_per_second * s.delivered_seconds
        fee = earned * PARAMS.fee_bps // BPS
        return s.fee == fee and s.provider_payout == earned - fee

    start_slash = timed_out.collateral * PARAMS.start_slash_bps // BPS
    slashed_to = {name: sum(s.slashed for s in settlements if s.renter == name) for name in market.compensation_owed}
    return [
        Check("the ledger sums to zero", sum(r.change for r in ledger) == 0),
        Check(
            "the contracts hold nothing once everyone has withdrawn", all(r.after == 0 for r in ledger if r.is_contract)
        ),
        Check(
            "every party's change is what the settlement events say",
            all(r.change == r.explained for r in ledger if not r.is_contract),
        ),
        Check(
            f"{completed.label} ran its job to completion: Completed",
            completed.status is RentalStatus.COMPLETED and completed.delivered_seconds > 0,
        ),
        Check(
            f"{terminated.label} was terminated, then settled with the unused time refunded",
            terminated.terminated and terminated.status is RentalStatus.EXPIRED and terminated.refund > 0,
        ),
        Check(
            f"{timed_out.label} timed out: nothing delivered or paid, the deposit refunded",
            timed_out.status is RentalStatus.TIMED_OUT
            and timed_out.delivered_seconds == 0
            and timed_out.provider_payout == 0
            and timed_out.refund == timed_out.deposit,
        ),
        Check("providers were paid price x delivered seconds less the fee", all(paid_right(s) for s in started)),
        Check(
            "renters got back the deposit less price x delivered seconds",
            all(s.refund == s.deposit - s.price_per_second * s.delivered_seconds for s in settlements),
        ),
        Check("the treasury got exactly the fees", rows["treasury"].change == sum(s.fee for s in settlements) > 0),
        Check(
            f"{timed_out.provider} lost {PARAMS.start_slash_bps / 100:g}% of the offer's collateral "
            f"({_tusd(start_slash)} tUSD) to {timed_out.renter} as compensation",
            timed_out.slashed == start_slash > 0
            and rows[timed_out.provider].change == -start_slash
            and market.compensation_owed == slashed_to,
        ),
    ]


# ------------------------------------------------------------------------------------------------ output


def _status_name(status: RentalStatus) -> str:
    return status.name.lower().replace("_", " ")


def _tusd(units: int) -> str:
    return f"{Decimal(units).scaleb(-6):,.6f}"


def _signed(units: int) -> str:
    if units == 0:
        return "0"
    return ("+" if units > 0 else "") + _tusd(units)


def _offers_table(market: DemoMarket) -> Table:
    table = Table(title="Offers", title_justify="left")
    for column in ("offer", "provider", "GPUs", "price tUSD/h", "collateral tUSD", "served by"):
        table.add_column(column, justify="right" if "tUSD" in column else "left")
    agent = "agent, SIMULATED telemetry" if market.simulated else "agent, NVML telemetry"
    for offer in market.offers:
        table.add_row(
            str(offer.offer_id),
            offer.provider,
            f"{len(offer.gpus)} x {offer.gpus[0].name}",
            _tusd(offer.price_per_second * 3600),
            _tusd(offer.collateral),
            agent if offer.served else "[red]nobody[/]",
        )
    return table


def _rentals_table(settlements: list[Settlement]) -> Table:
    table = Table(title="Rentals, as settled (tUSD; what is slashed goes to the renter)", title_justify="left")
    for column in (
        "rental",
        "renter",
        "provider",
        "outcome",
        "delivered s",
        "deposit",
        "to provider",
        "fee",
        "refund",
        "slashed",
    ):
        table.add_column(
            column,
            justify="left" if column in ("rental", "renter", "provider", "outcome") else "right",
            no_wrap=column == "outcome",
        )
    for s in settlements:
        table.add_row(
            s.label,
            s.renter,
            s.provider,
            s.outcome,
            str(s.delivered_seconds),
            _tusd(s.deposit),
            _tusd(s.provider_payout),
            _tusd(s.fee),
            _tusd(s.refund),
            _tusd(s.slashed),
        )
    return table


def _ledger_table(ledger: list[LedgerRow]) -> Table:
    table = Table(title="Ledger (tUSD): balances before the market and after every withdrawal", title_justify="left")
    table.add_column("holder")
    for column in ("before", "after", "change", "rentals", "payouts", "fees", "slashes"):
        table.add_column(column, justify="right")
    for row in ledger:
        table.add_row(
            row.holder,
            _tusd(row.before),
            _tusd(row.after),
            _signed(row.change),
            *(
                ("", "", "", "")
                if row.is_contract
                else (_signed(row.rentals), _signed(row.payouts), _signed(row.fees), _signed(row.slashes))
            ),
            style="dim" if row.is_contract else None,
            end_section=row is ledger[-1],
        )
    total = sum(r.change for r in ledger)
    table.add_row(
        "total",
        _tusd(sum(r.before for r in ledger)),
        _tusd(sum(r.after for r in ledger)),
        f"[{'green' if total == 0 else 'bold red'}]{_signed(total)}[/]",
        *(_signed(sum(getattr(r, f) for r in ledger)) for f in ("rentals", "payouts", "fees", "slashes")),
        style="bold",
    )
    return table


def _plot(path: Path, settlements: list[Settlement], simulated: bool) -> Path:
    """Reported GPU utilisation of each rental over its time, and what each rental's settlement paid to whom."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = Figure(figsize=(13, 5), layout="tight")
    util_axes, money_axes = figure.subplots(1, 2)
    for s in settlements:
        if s.utilisation:
            seconds = [0] + [p.seconds for p in s.utilisation]
            utils = [p.avg_util_pct for p in s.utilisation]
            util_axes.step(seconds, utils + utils[-1:], where="post", label=f"{s.label} ({s.outcome})")
        else:
            util_axes.plot([], [], " ", label=f"{s.label} ({s.outcome}): no reports")
    util_axes.set(
        xlabel="seconds since the rental started",
        ylabel="average GPU utilisation between landed reports (%)",
        ylim=(0, 105),
        title="Reported utilisation" + (" (SIMULATED telemetry)" if simulated else ""),
    )
    util_axes.legend(loc="lower right")
    parts = (("to provider", "provider_payout"), ("fee", "fee"), ("refund", "refund"), ("slashed to renter", "slashed"))
    width = 0.8 / len(parts)
    for i, (name, attribute) in enumerate(parts):
        values = [float(Decimal(getattr(s, attribute)).scaleb(-6)) for s in settlements]
        bars = money_axes.bar(
            [x + (i - (len(parts) - 1) / 2) * width for x in range(len(settlements))], values, width, label=name
        )
        money_axes.bar_label(bars, labels=[f"{v:.6f}" if v else "" for v in values], fontsize=7, rotation=90, padding=2)
    money_axes.set_xticks(range(len(settlements)), [f"{s.label}\n{s.outcome}" for s in settlements])
    money_axes.set_yscale("log")
    # Headroom above the tallest bar for its label and the legend.
    money_axes.set_ylim(top=money_axes.get_ylim()[1] * 30)
    money_axes.set(ylabel="tUSD (log scale)", title="Settled amounts per rental")
    money_axes.legend(loc="upper left", ncols=2)
    figure.savefig(path, dpi=120)
    return path
