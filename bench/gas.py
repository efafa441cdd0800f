"""Gas of a fixed scenario, one figure per call, against the budgets of the protocol v2 issue (#13) and, where
that issue sets none, of the contracts issue (#2).

Whole-transaction gas (including the 21,000 intrinsic gas) on the Brownie network's chain, with a k=1 oracle
set unless the row says otherwise; deterministic for a given compiler and contract but for a few gas of
timestamps in calldata. Where the first call of a kind writes storage for the first time, both the first and
the steady-state call are measured and named. `submitReports` is measured per report for batch sizes 1 to 100 on
one-GPU rentals whose first report has already landed (the steady state of a running rental), which gives the
curve of the chart; the same report is measured once more under a 3-of-3 oracle set of a second deployment.

Issue #13's budgets replace issue #2's for the rows both name (`openRental`, `finalize`, `withdraw`, the
1-report and 50-report `submitReports` rows) and add `start`, the k=3 report, a rental's whole life and the gas
per GPU-hour. The others are ours, each derived from one of the issues' figures (the derivation is the target's
note): for batch sizes other than 1 and 50, the per-report budget lies on the straight line through issue #13's
two report budgets, a fixed `BATCH_FIXED_BUDGET` per transaction plus `REPORT_BUDGET` per report. The budgets we
derived from issue #2's openRental, finalize and withdraw figures keep those figures as their base: issue #13
changed nothing in what those calls do.

The protocol rows follow issue #13's landing policy: the oracles land only a rental's latest report, at least
once every checkpoint interval (the oracle's `checkpoint_interval_seconds`) and when it is final. `gas per
GPU-hour` rents one 8-GPU offer for 24 hours and lands one report an hour in a batch of 50 (its own report and 49
of other rentals), each landed report counted at its share of its batch's gas: the transaction's gas over 50, and
for the final report, which settles the rental, the batch's gas less 49 running reports' shares. `rental, N agent
reports` is a 1-hour one-GPU rental's whole life in whole transactions: its agent signed N reports, of which only
the latest (the Completed one) lands, in a batch of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from dataclasses import dataclass, field
from typing import Any

from brownie._config import CONFIG
from eth_account import Account
from eth_utils import keccak

from bench.records import Figure, Point, SectionResult, Series, Target
from offchain.config import OracleSettings
from offchain.protocol.reports import EscrowDomain, Report, ReportStatus, sign_batch, submit_args

SECTION = "Gas"
ORACLE_KEY = keccak(text="gpuex gas oracle")
#: The 3-of-3 oracle set of the second deployment, which measures what each signer beyond the first costs.
ORACLE_KEYS_K3 = tuple(keccak(text=f"gpuex gas oracle {i} of 3") for i in range(3))
PRICE = 1_000
AGENT_URL = "https://agent.example.net:8443"  # 30 bytes
BATCH_SIZES = (1, 2, 5, 10, 20, 50, 100)
TABLE_BATCH_SIZES = (1, 10, 50, 100)
LANDING_BATCH = 50  # the batch size landed reports are counted in
CHECKPOINT_SECONDS = OracleSettings.model_fields["checkpoint_interval_seconds"].default
GPU_HOUR_GPUS, GPU_HOUR_HOURS = 8, 24
GPU_HOURS = GPU_HOUR_GPUS * GPU_HOUR_HOURS
LIFE_REPORTS = (1, 60)  # agent reports of the 1-hour rental whose whole life is measured

ISSUE_2, ISSUE_13, OURS = "issue #2", "issue #13", "ours"
FRESH_SLOT = 22_100  # SSTORE of a zero slot, cold (EIP-2929)
# Issue #2's budgets for the calls issue #13 re-budgeted: the base of the budgets we derived from them.
ISSUE_2_OPEN, ISSUE_2_FINALIZE, ISSUE_2_WITHDRAW = 90_000, 75_000, 45_000
# Issue #13's budgets.
OPEN_BUDGET, START_BUDGET, FINALIZE_BUDGET, WITHDRAW_BUDGET = 82_292, 40_411, 74_600, 43_799
ONE_REPORT_BUDGET, BATCH_OF_50_BUDGET = 40_000, 12_000
K3_BUDGET, EXTRA_SIGNER_BUDGET = 54_000, 7_000
GPU_HOUR_BUDGET = 3_000
LIFE_SPREAD_BUDGET_PERCENT = 1.0
# The line through issue #13's budgets for one report (40,000) and for 50 reports (12,000 each):
# fixed + per_report = 40,000 and fixed + 50 * per_report = 600,000.
REPORT_BUDGET = (50 * BATCH_OF_50_BUDGET - ONE_REPORT_BUDGET) / 49
BATCH_FIXED_BUDGET = ONE_REPORT_BUDGET - REPORT_BUDGET

ROW_K3 = "submitReports (1 report, k=3)"
ROW_EXTRA_SIGNER = "submitReports (1 report), each signer beyond the first"
ROW_GPU_HOUR = "gas per GPU-hour (24 h, 8 GPUs, a report a minute)"
ROW_LIFE_SPREAD = "rental, 60 agent reports against 1 agent report"


def report_budget(batch_size: int) -> float:
    """Per-report gas budget of a batch: issue #13's own figure at 1 and 50, the line through them elsewhere."""
    return {1: float(ONE_REPORT_BUDGET), 50: float(BATCH_OF_50_BUDGET)}.get(
        batch_size, BATCH_FIXED_BUDGET / batch_size + REPORT_BUDGET
    )


def life_row(reports: int) -> str:
    return f"rental, {reports} agent report" + ("s" if reports > 1 else "")


BUDGETS: dict[str, tuple[Target | None, str]] = {
    "stake (first)": (
        Target(op="<=", threshold=ISSUE_2_OPEN, source=OURS),
        "issue #2's openRental budget: a call that writes fresh slots",
    ),
    "stake": (
        Target(op="<=", threshold=ISSUE_2_WITHDRAW + 5_000, source=OURS),
        "issue #2's 45k withdraw budget plus the pull of the tokens",
    ),
    "registerGpus (2 GPUs)": (
        Target(op="<=", threshold=21_000 + 2 * FRESH_SLOT + 10_000, source=OURS),
        "the intrinsic 21k, a fresh slot per GPU, 10k for the event, calldata and loop",
    ),
    "setAgentUrl (30-byte URL)": (
        Target(op="<=", threshold=21_000 + FRESH_SLOT + 10_000, source=OURS),
        "the intrinsic 21k, one fresh slot (a URL of up to 31 bytes fits one), 10k for the event and calldata",
    ),
    "createOffer (2 GPUs)": (
        Target(op="<=", threshold=250_000, source=OURS),
        "a one-off per listing: about ten fresh slots",
    ),
    "openRental (first rental of an offer)": (
        Target(op="<=", threshold=ISSUE_2_OPEN + 3 * FRESH_SLOT, source=OURS),
        "issue #2's 90k openRental budget plus the three fresh slots later rentals reuse",
    ),
    "openRental": (Target(op="<=", threshold=OPEN_BUDGET, source=ISSUE_13), "no worse than before protocol v2"),
    "start": (Target(op="<=", threshold=START_BUDGET, source=ISSUE_13), "no worse than before protocol v2"),
    "finalize": (Target(op="<=", threshold=FINALIZE_BUDGET, source=ISSUE_13), "no worse than before protocol v2"),
    "finalize (SLA slash)": (
        Target(op="<=", threshold=ISSUE_2_FINALIZE + 15_000, source=OURS),
        "issue #2's 75k finalize budget plus a slash of the collateral",
    ),
    "claimStartTimeout": (
        Target(op="<=", threshold=ISSUE_2_FINALIZE + 15_000, source=OURS),
        "issue #2's 75k finalize budget plus a slash of the collateral",
    ),
    "decline": (
        Target(op="<=", threshold=ISSUE_2_FINALIZE, source=OURS),
        "issue #2's finalize budget: a settlement, nothing slashed",
    ),
    "terminate (running)": (
        Target(op="<=", threshold=ISSUE_2_FINALIZE, source=OURS),
        "issue #2's finalize budget: a settlement",
    ),
    "withdraw": (Target(op="<=", threshold=WITHDRAW_BUDGET, source=ISSUE_13), "no worse than before protocol v2"),
    "withdrawCompensation": (
        Target(op="<=", threshold=ISSUE_2_WITHDRAW, source=OURS),
        "issue #2's withdraw budget",
    ),
    "claimPayout": (
        None,
        "measured, as issue #13 asks of pay as you go: a provider claim mid-rental, its balance already held; the "
        "rental's two words read and its terms rewritten, the provider read from the registry (a cold account and "
        "word, 4,700), the provider's and the treasury's balances credited (5,000 each). A claim is the provider's "
        "choice, once in a while per rental, never per report",
    ),
}


def batch_row(size: int) -> str:
    return f"submitReports/{size} per report" if size > 1 else "submitReports (1 report, k=1)"


def batch_budget(size: int) -> tuple[Target, str]:
    if size in (1, 50):
        return Target(op="<=", threshold=report_budget(size), source=ISSUE_13), ""
    return (
        Target(op="<=", threshold=round(report_budget(size)), source=OURS),
        "on the line through issue #13's 1-report and 50-report budgets",
    )


@dataclass
class RentalLife:
    """The whole-transaction gas of each step of one rental's life, in order."""

    steps: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.steps.values())

    def describe(self) -> str:
        return " + ".join(f"{name} {used:,}" for name, used in self.steps.items())


@dataclass
class GpuHours:
    """One 8-GPU offer rented 24 hours: the calls, and each landed report's share of its batch of 50."""

    calls: dict[str, int]  # openRental, start, the provider's and the renter's withdrawals
    running_shares: list[int]  # the hourly Running reports
    final_share: int  # the Completed report that settles the rental

    @property
    def running_share(self) -> float:
        return sum(self.running_shares) / len(self.running_shares)

    @property
    def total(self) -> int:
        return sum(self.calls.values()) + sum(self.running_shares) + self.final_share

    def total_if_every_minute_landed(self) -> float:
        """The same rental with every one of its 1,440 minute reports landed, the last one settling it."""
        return sum(self.calls.values()) + (GPU_HOUR_HOURS * 60 - 1) * self.running_share + self.final_share


@dataclass
class Measured:
    gas: dict[str, int]  # per named call
    per_report: dict[int, int]  # per report, by batch size
    k3: int  # one report under a 3-of-3 oracle set
    lives: dict[int, RentalLife]  # by the agent reports the rental had
    gpu_hours: GpuHours


def measure() -> SectionResult:
    """Runs the scenario on the connected Brownie network (a fresh deployment)."""
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        measured = _scenario()
    per_report = measured.per_report
    figures = []

    def add(name: str, value: float, target: Target | None, note: str = "", unit: str = "gas") -> None:
        figures.append(Figure(section=SECTION, name=name, value=value, unit=unit, target=target, note=note))

    for name, used in measured.gas.items():
        add(name, used, *BUDGETS[name])
        if name == "openRental":
            for size in TABLE_BATCH_SIZES:
                add(batch_row(size), per_report[size], *batch_budget(size))
            add(ROW_K3, measured.k3, Target(op="<=", threshold=K3_BUDGET, source=ISSUE_13), "a 3-of-3 oracle set")
            add(
                ROW_EXTRA_SIGNER,
                (measured.k3 - per_report[1]) / 2,
                Target(op="<=", threshold=EXTRA_SIGNER_BUDGET, source=ISSUE_13),
                "half the difference between the k=3 and k=1 rows: its compact 64-byte signature in calldata, "
                "its recovery and its signer's slot",
            )
    hours = measured.gpu_hours
    add(
        ROW_GPU_HOUR,
        hours.total / GPU_HOURS,
        Target(op="<=", threshold=GPU_HOUR_BUDGET, source=ISSUE_13),
        f"{hours.total:,} gas over {GPU_HOURS} GPU-hours: "
        + ", ".join(f"{name} {used:,}" for name, used in hours.calls.items())
        + f", {len(hours.running_shares)} hourly reports at {hours.running_share:,.0f} each (a 50th of their "
        f"batch), the final Completed report {hours.final_share:,} (settlement included)",
    )
    one, sixty = (measured.lives[n] for n in LIFE_REPORTS)
    for reports, life in measured.lives.items():
        figures.append(
            Figure(section=SECTION, name=life_row(reports), value=life.total, unit="gas", note=life.describe())
        )
    add(
        ROW_LIFE_SPREAD,
        100 * abs(sixty.total - one.total) / one.total,
        Target(op="<=", threshold=LIFE_SPREAD_BUDGET_PERCENT, source=ISSUE_13),
        f"the two rows within 1 % of each other: {sixty.total - one.total:+,} gas",
        unit="%",
    )
    series = (
        Series(
            panel="gas", label="measured, per report", points=tuple(Point(x=n, y=per_report[n]) for n in BATCH_SIZES)
        ),
        Series(
            panel="gas",
            label="budget: issue #13's at 1 and 50, the line through them between",
            style="target",
            points=tuple(Point(x=n, y=report_budget(n)) for n in BATCH_SIZES),
        ),
        Series(
            panel="gas",
            label=f"{BATCH_OF_50_BUDGET:,}: issue #13's budget per report in a batch of 50",
            style="target",
            points=(Point(x=min(BATCH_SIZES), y=BATCH_OF_50_BUDGET), Point(x=max(BATCH_SIZES), y=BATCH_OF_50_BUDGET)),
        ),
    )
    optimizer = CONFIG.settings["compiler"]["solc"]["optimizer"]
    every_minute = hours.total_if_every_minute_landed()
    return SectionResult(
        title=SECTION,
        figures=tuple(figures),
        series=series,
        notes=(
            "Whole-transaction gas including the 21,000 intrinsic gas; k=1 oracle set unless the row says "
            f"otherwise; solc {CONFIG.settings['compiler']['solc']['version']} via-IR, {optimizer['runs']:,} "
            "optimizer runs. The same on every machine, give or take a few gas: timestamps in calldata cost "
            "4 gas a zero byte and 16 a non-zero one.",
            "submitReports per report: the transaction's gas divided by its reports, one-GPU rentals in their "
            "steady state (first report already applied). Curve over batch sizes "
            + ", ".join(map(str, BATCH_SIZES))
            + ": "
            + ", ".join(f"{per_report[n]:,}" for n in BATCH_SIZES)
            + ".",
            f"Gas per GPU-hour lands a report every {CHECKPOINT_SECONDS:,} s (issue #13's landing policy: the "
            "latest report, at least once a checkpoint interval, and the final one), each in a batch of "
            f"{LANDING_BATCH} with 49 other rentals' reports; it counts open, start (which issue #13's list leaves "
            "out: the agent starts the rental), the landed reports, the settlement by the final Completed report "
            "and the provider's and the renter's withdrawals; the offer was rented once before (steady-state "
            "storage). Were every one of the 1,440 minute reports landed at the same share, the rental would cost "
            f"{every_minute:,.0f} gas, {every_minute / GPU_HOURS:,.0f} gas per GPU-hour.",
            "rental, N agent reports: a 1-hour one-GPU rental's whole life (open, start, the one report that lands "
            "under the landing policy, in a batch of its own, settling the rental as Completed, and both "
            "withdrawals); with 60 agent reports only the 60th lands, so the two differ only in its seq.",
        ),
        wall_seconds=time.perf_counter() - started,
    )


def _scenario() -> Measured:
    """Every measurement, on one chain: the k=1 deployment first, then the k=3 one."""
    from brownie import TestStablecoin, accounts

    from scripts.deploy import USDC, deploy_suite

    deployer, treasury, provider, provider_b, renter, renter_b, relayer = accounts[:7]
    token = TestStablecoin.deploy(deployer, {"from": deployer})
    market = _Market(deploy_suite(deployer, token, token, treasury, [_address(ORACLE_KEY)], 1), (ORACLE_KEY,), relayer)
    registry, escrow = market.suite.registry, market.suite.escrow
    for account in (provider, provider_b, renter, renter_b):
        token.mint(account, 1_000_000 * USDC, {"from": deployer})
        market.approve(token, account)
    gas: dict[str, int] = {}
    start_timeout, report_grace = market.suite.read(lambda r: asyncio.gather(r.start_timeout(), r.report_grace()))

    # Provider onboarding.
    gas["stake (first)"] = registry.stake(10_000 * USDC, {"from": provider}).gas_used
    gas["stake"] = registry.stake(10_000 * USDC, {"from": provider}).gas_used
    gpus = [keccak(text=f"GPU-gas-{i}") for i in range(4)]
    gas["registerGpus (2 GPUs)"] = registry.registerGpus(gpus[:2], {"from": provider}).gas_used
    registry.registerGpus(gpus[2:], {"from": provider})
    tx = registry.createOffer(_offer_terms(gpus[:2]), {"from": provider})
    gas["createOffer (2 GPUs)"], offer_a = tx.gas_used, tx.return_value
    offer_b = registry.createOffer(_offer_terms(gpus[2:]), {"from": provider}).return_value
    registry.setAgent(provider_b, {"from": provider})
    gas["setAgentUrl (30-byte URL)"] = registry.setAgentUrl(AGENT_URL, {"from": provider}).gas_used

    # First rental of an offer: its storage is written for the first time.
    tx = escrow.openRental(offer_a, 3_600, PRICE, b"\x11" * 32, {"from": renter})
    gas["openRental (first rental of an offer)"], rid = tx.gas_used, tx.return_value
    gas["start"] = escrow.start(rid, {"from": provider_b}).gas_used
    _wait(60)
    since = market.since(rid)
    market.submit([Report(rental_id=rid, seq=1, covered_until=since + 60, delivered_seconds=60, util_seconds=54)])
    _wait(60)
    market.submit(
        [
            Report(
                rental_id=rid,
                seq=2,
                covered_until=since + 120,
                delivered_seconds=120,
                util_seconds=108,
                status=ReportStatus.COMPLETED,
            )
        ]
    )

    # Steady state: the offer is rented again; parties already hold balances.
    tx = escrow.openRental(offer_a, 600, PRICE, b"\x12" * 32, {"from": renter})
    gas["openRental"], rid = tx.gas_used, tx.return_value
    # Started explicitly, as agents do: a rental started by its first report must get it within the start timeout.
    escrow.start(rid, {"from": provider})
    _wait(600)
    since = market.since(rid)
    market.submit([Report(rental_id=rid, seq=1, covered_until=since + 600, delivered_seconds=600, util_seconds=600)])
    _wait(report_grace)
    gas["finalize"] = escrow.finalize(rid, {"from": relayer}).gas_used
    gas["withdraw"] = escrow.withdraw({"from": renter}).gas_used

    # Half of the rental is never reported: the SLA slash pays the renter from the collateral.
    rid = escrow.openRental(offer_a, 600, PRICE, b"\x12" * 32, {"from": renter}).return_value
    escrow.start(rid, {"from": provider})
    _wait(300)
    since = market.since(rid)
    market.submit([Report(rental_id=rid, seq=1, covered_until=since + 300, delivered_seconds=300, util_seconds=300)])
    _wait(300 + report_grace)
    gas["finalize (SLA slash)"] = escrow.finalize(rid, {"from": relayer}).gas_used

    rid = escrow.openRental(offer_b, 600, PRICE, b"\x13" * 32, {"from": renter}).return_value
    _wait(start_timeout + 1)
    gas["claimStartTimeout"] = escrow.claimStartTimeout(rid, {"from": relayer}).gas_used

    # The provider's agent key declines a job it cannot run: the whole deposit back, the collateral unslashed.
    rid = escrow.openRental(offer_b, 600, PRICE, b"\x16" * 32, {"from": renter}).return_value
    gas["decline"] = escrow.decline(rid, 0, {"from": provider_b}).gas_used

    rid = escrow.openRental(offer_a, 600, PRICE, b"\x14" * 32, {"from": renter}).return_value
    escrow.start(rid, {"from": provider})
    _wait(60)
    gas["terminate (running)"] = escrow.terminate(rid, {"from": renter}).gas_used
    gas["withdrawCompensation"] = registry.withdrawCompensation({"from": renter}).gas_used

    lives = {n: _rental_life(market, offer_b, provider, provider_b, renter, n) for n in LIFE_REPORTS}

    # Batches of reports for up to max(BATCH_SIZES) rentals on as many one-GPU offers, each rental already
    # started by its first report. They run for two days: the 24-hour rental's batches carry their reports too.
    rentals = market.one_gpu_rentals(provider_b, renter_b, max(BATCH_SIZES), 2 * 86_400, "batch")
    _wait(60)
    latest = {r: market.next_report(r, None) for r in rentals}
    market.submit(list(latest.values()))
    per_report = {}
    for size in BATCH_SIZES:
        _wait(60)
        batch = [market.next_report(r, latest[r]) for r in rentals[:size]]
        per_report[size] = market.submit(batch).gas_used // size
        latest.update((r.rental_id, r) for r in batch)

    # A provider claims mid-rental; its first claim gives it the balance every later claim rewrites.
    escrow.claimPayout(rentals[0], {"from": provider_b})
    gas["claimPayout"] = escrow.claimPayout(rentals[1], {"from": provider_b}).gas_used

    gpu_hours = _gpu_hours(market, provider, provider_b, renter, latest, rentals[2 : 2 + LANDING_BATCH - 1])

    # The same report as the k=1 row's (the second of a one-GPU rental, alone in its batch) under 3 of 3 oracles.
    k3 = _Market(
        deploy_suite(deployer, token, token, treasury, [_address(k) for k in ORACLE_KEYS_K3], len(ORACLE_KEYS_K3)),
        ORACLE_KEYS_K3,
        relayer,
    )
    k3.approve(token, provider_b)
    k3.approve(token, renter_b)
    (rid,) = k3.one_gpu_rentals(provider_b, renter_b, 1, 2 * 86_400, "k3")
    _wait(60)
    first = k3.next_report(rid, None)
    k3.submit([first])
    _wait(60)
    k3_gas = k3.submit([k3.next_report(rid, first)]).gas_used
    return Measured(gas, per_report, k3_gas, lives, gpu_hours)


class _Market:
    """One deployment, the oracle keys that co-sign its batches and the account that relays them."""

    def __init__(self, suite: Any, oracle_keys: tuple[bytes, ...], relayer: Any) -> None:
        from brownie import chain

        self.suite = suite
        self.oracle_keys = oracle_keys
        self.relayer = relayer
        self.domain = EscrowDomain(chain_id=chain.id, escrow=suite.escrow.address, oracle_set_version=1)
        self._gpus = 0

    def approve(self, token: Any, account: Any) -> None:
        token.approve(self.suite.registry, 2**256 - 1, {"from": account})
        token.approve(self.suite.escrow, 2**256 - 1, {"from": account})

    def submit(self, reports: list[Report]) -> Any:
        signatures = [sign_batch(reports, self.domain, key) for key in self.oracle_keys]
        return self.suite.escrow.submitReports(*submit_args(reports, signatures, 1), {"from": self.relayer})

    def since(self, rental_id: int) -> int:
        return self.suite.read(lambda r: r.rental(rental_id)).since

    def gpus(self, count: int, tag: str) -> list[bytes]:
        """`count` GPU UUID hashes never registered before on this deployment."""
        first, self._gpus = self._gpus, self._gpus + count
        return [keccak(text=f"GPU-{tag}-{i}") for i in range(first, first + count)]

    def one_gpu_rentals(self, provider: Any, renter: Any, count: int, duration: int, tag: str) -> list[int]:
        """`count` rentals of `duration` seconds, opened by `renter` on as many new one-GPU offers of `provider`,
        not started (their first report starts them)."""
        from scripts.deploy import USDC

        registry, escrow = self.suite.registry, self.suite.escrow
        registry.stake(count * 100 * USDC, {"from": provider})
        hashes = self.gpus(count, tag)
        registry.registerGpus(hashes, {"from": provider})
        rentals = []
        for gpu in hashes:
            offer = registry.createOffer(_offer_terms([gpu], max_duration=30 * 86_400), {"from": provider})
            rentals.append(
                escrow.openRental(offer.return_value, duration, PRICE, b"\x15" * 32, {"from": renter}).return_value
            )
        return rentals

    def next_report(self, rental_id: int, previous: Report | None) -> Report:
        """A Running report a minute after `previous` (or the rental's first, a minute after its start)."""
        if previous is None:
            return Report(
                rental_id=rental_id,
                seq=1,
                covered_until=self.since(rental_id) + 60,
                delivered_seconds=55,
                util_seconds=44,
            )
        return Report(
            rental_id=rental_id,
            seq=previous.seq + 1,
            covered_until=previous.covered_until + 60,
            delivered_seconds=previous.delivered_seconds + 60,
            util_seconds=previous.util_seconds + 45,
        )


def _rental_life(market: _Market, offer: int, provider: Any, agent: Any, renter: Any, reports: int) -> RentalLife:
    """A 1-hour rental of `offer` from its opening to both withdrawals; its agent reports `reports` times in the
    hour, and only the latest report, which completes the job, lands."""
    escrow = market.suite.escrow
    life = RentalLife()
    tx = escrow.openRental(offer, 3_600, PRICE, b"\x17" * 32, {"from": renter})
    life.steps["openRental"], rid = tx.gas_used, tx.return_value
    life.steps["start"] = escrow.start(rid, {"from": agent}).gas_used
    _wait(3_600)
    since = market.since(rid)
    # The same hour however often the agent reports it, since the totals are cumulative: 99 % of it delivered (the
    # renter has the rest refunded, and withdraws it), at 90 % utilisation.
    delivered = 3_600 * 99 // 100
    report = Report(
        rental_id=rid,
        seq=reports,
        covered_until=since + 3_600,
        delivered_seconds=delivered,
        util_seconds=delivered * 9 // 10,
        status=ReportStatus.COMPLETED,
    )
    life.steps["submitReports (the latest report, settling)"] = market.submit([report]).gas_used
    life.steps["withdraw (provider)"] = escrow.withdraw({"from": provider}).gas_used
    life.steps["withdraw (renter)"] = escrow.withdraw({"from": renter}).gas_used
    return life


def _gpu_hours(
    market: _Market, provider: Any, agent: Any, renter: Any, latest: dict[int, Report], others: list[int]
) -> GpuHours:
    """One 8-GPU offer rented 24 hours, its latest report landed every checkpoint hour in a batch with one report
    of each rental of `others` (whose latest reports are in `latest`, updated here), the last one Completed."""
    registry, escrow = market.suite.registry, market.suite.escrow
    hashes = market.gpus(GPU_HOUR_GPUS, "hours")
    registry.registerGpus(hashes, {"from": provider})
    offer = registry.createOffer(_offer_terms(hashes), {"from": provider}).return_value
    # A cancelled rental first, so that the measured one reuses the offer's storage as every later rental does.
    cancelled = escrow.openRental(offer, GPU_HOUR_HOURS * 3_600, PRICE, b"\x18" * 32, {"from": renter}).return_value
    escrow.terminate(cancelled, {"from": renter})

    calls = {}
    tx = escrow.openRental(offer, GPU_HOUR_HOURS * 3_600, PRICE, b"\x18" * 32, {"from": renter})
    calls["openRental"], rid = tx.gas_used, tx.return_value
    calls["start"] = escrow.start(rid, {"from": agent}).gas_used
    since = market.since(rid)
    shares, final_share = [], 0
    for hour in range(1, GPU_HOUR_HOURS + 1):
        _wait(CHECKPOINT_SECONDS)
        final = hour == GPU_HOUR_HOURS
        covered = hour * CHECKPOINT_SECONDS
        ours = Report(
            rental_id=rid,
            seq=hour * 60,
            covered_until=since + covered,
            delivered_seconds=covered * 99 // 100,
            util_seconds=covered * 99 // 100 * 9 // 10,
            status=ReportStatus.COMPLETED if final else ReportStatus.RUNNING,
        )
        theirs = [_checkpoint(market, latest[r]) for r in others]
        latest.update((r.rental_id, r) for r in theirs)
        used = market.submit([ours, *theirs]).gas_used
        if final:
            running = sum(shares) / len(shares)
            final_share = round(used - len(theirs) * running)
        else:
            shares.append(used // LANDING_BATCH)
    calls["withdraw (provider)"] = escrow.withdraw({"from": provider}).gas_used
    calls["withdraw (renter)"] = escrow.withdraw({"from": renter}).gas_used
    return GpuHours(calls, shares, final_share)


def _checkpoint(market: _Market, previous: Report) -> Report:
    """The next report of a rental whose latest landed report is `previous`, covering it up to the last block."""
    from brownie import chain

    covered_until = chain[-1].timestamp
    elapsed = covered_until - previous.covered_until
    return Report(
        rental_id=previous.rental_id,
        seq=previous.seq + max(1, elapsed // 60),
        covered_until=covered_until,
        delivered_seconds=previous.delivered_seconds + elapsed,
        util_seconds=previous.util_seconds + elapsed * 3 // 4,
    )


def _offer_terms(hashes: list[bytes], max_duration: int = 86_400) -> tuple:
    return (
        b"H100-80GB".ljust(32, b"\0"),
        81_559,
        PRICE,
        60,
        max_duration,
        b"eu-west".ljust(16, b"\0"),
        10_000,
        False,
        hashes,
    )


def _wait(seconds: int) -> None:
    from brownie import chain

    chain.sleep(seconds)
    chain.mine()


def _address(key: bytes) -> str:
    return Account.from_key(key).address
