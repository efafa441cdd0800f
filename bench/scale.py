"""Scale simulation: 100,000 provider agents reporting cumulative telemetry once a simulated minute through one
oracle's verification, and what landing their reports under issue #13's landing policy costs on chain.

A second process, on its own core, plays the agents: agent i's report for minute m is due at `start + (m - 1 + i /
agents) * minute_seconds` (all signed before the clock starts) and is handed to this process a little before it
is due. This process, pinned to the other core, verifies each report when it is due, as an oracle's ingest does
before storing it: the body parsed into its model, the agent signature recovered (`offchain.protocol.digest`)
and compared with the agent key of the rental's provider, and the report placed after the rental's previous one
(seq increasing, its period starting where the previous coverage ended, totals not going back, `prev_root` the
previous telemetry root). Latency is from due to verified, so a report that waits behind others counts its wait.

The first `chain_rentals` agents report rentals that `bench.fleet` opened on the chain; the others report rentals
the verifier knows from the agents' keys alone (100,000 rentals would take a quarter of an hour to open). After
the run the latest report of every on-chain rental lands, as the landing policy lands it at a checkpoint, in
batches of the oracle's maximum size under a k=1 oracle set, and the chain is the judge: each rental's latest
report exactly once among the ReportApplied events, no earlier one, and `getRental` seq equal to the latest seq
its agent sent. The gas per simulated hour follows from the policy: in steady state every rental's latest report
lands once a checkpoint interval.

The oracle service's own ingest (HTTP, store) and batcher are not in this path: it measures the verification and
the landing as their public pieces define them.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, NamedTuple

from coincurve import PrivateKey
from eth_utils import keccak

from bench.agents import ReportSigner, core_plan, cpu_seconds, percentile, pinned
from bench.fleet import Call, FleetRental, JsonRpc, applied_reports, batch_transactions, deploy_fleet, last_seqs
from bench.gas import report_budget
from bench.records import Figure, SectionResult, Target
from offchain.config import ChainSettings, OracleSettings
from offchain.protocol.digest import InvalidSignature, TelemetryDomain, recover_address
from offchain.protocol.messages import ZERO_ROOT, TelemetryReport, TelemetrySubmission
from offchain.protocol.reports import EscrowDomain, sign_batch, submit_args

SECTION = "Scale simulation"
ISSUE_13, OURS = "issue #13", "ours"
PERIOD_SECONDS = 60
CHECKPOINT_SECONDS = OracleSettings.model_fields["checkpoint_interval_seconds"].default
AGENTS_PER_PROVIDER = 100
LANDING_BATCH = OracleSettings.model_fields["max_batch_reports"].default
INGEST_P99_TARGET_MS = 100.0
LEAD_SECONDS = 0.5  # how long before it is due the agents' process hands a report over
HANDOVER_SECONDS = 0.1  # how often it hands over
SUBMIT_REPORTS = Call("RentalEscrow", "submitReports")


@dataclass
class Verified:
    """What the verifier saw. Latencies are from due to verified."""

    received: int = 0
    verified: int = 0
    refused: Counter = field(default_factory=Counter)
    latency_ms: list[float] = field(default_factory=list)
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0


# --- the agents' process -------------------------------------------------------------------------------------


def _agents(
    chain: ChainSettings,
    agent_keys: tuple[bytes, ...],
    rentals: tuple[FleetRental, ...],
    minutes: int,
    minute_seconds: float,
    core: int,
    out: Connection,
) -> None:
    """Signs every report, then hands each over `LEAD_SECONDS` before it is due, as (due, body) lists."""
    with pinned(core):
        signer = ReportSigner(chain.chain_id, chain.registry, agent_keys)
        count = len(rentals)
        offsets = [(seq - 1 + i / count) * minute_seconds for seq in range(1, minutes + 1) for i in range(count)]
        bodies = [signer.body(rental, seq, PERIOD_SECONDS) for seq in range(1, minutes + 1) for rental in rentals]
        start = time.perf_counter() + 1.0
        sent = 0
        while sent < len(bodies):
            horizon = time.perf_counter() + LEAD_SECONDS - start
            last = sent
            while last < len(bodies) and offsets[last] < horizon:
                last += 1
            if last > sent:
                out.send([(start + offsets[k], bodies[k]) for k in range(sent, last)])
                sent = last
            time.sleep(HANDOVER_SECONDS)
        out.send(None)
        out.close()


# --- the verifier ---------------------------------------------------------------------------------------------


class _Head(NamedTuple):
    """What a rental's latest verified report fixes for the next one, in plain values as a store row holds them
    (rather than 100,000 models in memory)."""

    seq: int
    covered_until: int
    delivered_seconds: int
    util_seconds: int
    telemetry_root: bytes

    @classmethod
    def of(cls, report: TelemetryReport) -> "_Head":
        return cls(
            report.seq, report.covered_until, report.delivered_seconds, report.util_seconds, report.telemetry_root
        )


def _follows(previous: _Head | None, report: TelemetryReport) -> bool:
    """Whether `report` continues the rental's chain of cumulative reports after `previous` (TelemetryReport's
    contract); the first report of a rental has no previous root."""
    if previous is None:
        return report.prev_root == ZERO_ROOT
    return (
        report.seq > previous.seq
        and report.period_start == previous.covered_until
        and report.prev_root == previous.telemetry_root
        and report.delivered_seconds >= previous.delivered_seconds
        and report.util_seconds >= previous.util_seconds
    )


class _Verifier:
    """An oracle's checks of a report before it stores it, with what it holds: each rental's latest report (whole
    for the rentals `landing` names, which land after the run)."""

    def __init__(self, domain: TelemetryDomain, agent_of: dict[int, bytes], landing: set[int]) -> None:
        self._domain = domain
        self._agent_of = agent_of
        self._landing = landing
        self._heads: dict[int, _Head] = {}
        self.to_land: dict[int, TelemetryReport] = {}  # by rental id
        self.verified = Counter()  # by rental id

    def refusal(self, body: bytes) -> str:
        """Why a report is refused, or "" when it is verified (and becomes its rental's latest)."""
        submission = TelemetrySubmission.model_validate_json(body)
        report = submission.report
        try:
            signer = recover_address(self._domain.digest(report), submission.signature)
        except InvalidSignature:
            return "bad signature"
        rental = report.rental_id
        if self._agent_of.get(rental) != signer:
            return "not the agent of the rental's provider"
        if not _follows(self._heads.get(rental), report):
            return "does not follow the rental's previous report"
        self._heads[rental] = _Head.of(report)
        if rental in self._landing:
            self.to_land[rental] = report
        self.verified[rental] += 1
        return ""


def _verify_stream(source: Connection, verifier: _Verifier) -> Verified:
    """Verifies each report when it is due, until the agents' process says it is done; the clocks start with the
    first report handed over."""
    seen = Verified()
    cpu_before = started = None
    while (handed := source.recv()) is not None:
        if started is None:
            cpu_before, started = cpu_seconds(), time.perf_counter()
        for due, body in handed:
            if (wait := due - time.perf_counter()) > 0:
                time.sleep(wait)
            seen.received += 1
            reason = verifier.refusal(body)
            seen.latency_ms.append((time.perf_counter() - due) * 1000)
            if reason:
                seen.refused[reason] += 1
    if started is not None:
        seen.cpu_seconds, seen.wall_seconds = cpu_seconds() - cpu_before, time.perf_counter() - started
    seen.verified = seen.received - sum(seen.refused.values())
    return seen


# --- the run ---------------------------------------------------------------------------------------------------


def measure(
    agents: int = 100_000, minutes: int = 2, minute_seconds: float = 60.0, chain_rentals: int = 1_000
) -> SectionResult:
    """Runs the simulation on the connected Brownie network (a fresh deployment on a chain of the benchmark's own)."""
    started = time.perf_counter()
    chain_rentals = min(chain_rentals, agents)
    fleet = deploy_fleet(chain_rentals, max(1, chain_rentals // AGENTS_PER_PROVIDER), 1, minutes * PERIOD_SECONDS + 600)
    setup_seconds = time.perf_counter() - started
    rentals, agent_keys = _simulated(fleet.rentals, fleet.agent_keys, agents)
    addresses = [keccak(PrivateKey(k).public_key.format(compressed=False)[1:])[12:] for k in agent_keys]
    agent_of = {r.rental_id: addresses[r.agent] for r in rentals}
    on_chain = {r.rental_id for r in fleet.rentals}

    oracle_core, load_core = core_plan()
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    player = context.Process(
        target=_agents, args=(fleet.chain, agent_keys, rentals, minutes, minute_seconds, load_core, sender)
    )
    player.start()
    sender.close()
    try:
        verifier = _Verifier(TelemetryDomain(fleet.chain.chain_id, fleet.chain.registry), agent_of, on_chain)
        with pinned(oracle_core):
            seen = _verify_stream(receiver, verifier)
    finally:
        player.join(30)
        if player.is_alive():
            player.terminate()

    latest = verifier.to_land
    landing_block = _land(fleet.chain, fleet.oracle_key, list(latest.values()))
    events = applied_reports(fleet.chain.rpc_url, fleet.chain.escrow, landing_block)
    batches = batch_transactions(fleet.chain.rpc_url, sorted({e.tx_hash for e in events}))
    seqs = last_seqs(fleet.chain, sorted(on_chain))
    setting = (
        f"{agents:,} agents ({len(agent_keys):,} providers' agent keys, one one-GPU rental each), one report each "
        f"simulated minute for {minutes} minutes; a simulated minute lasts {minute_seconds:g} s "
        f"({PERIOD_SECONDS / minute_seconds:.1f}× real time), {agents / minute_seconds:,.0f} reports a second. "
        f"The verifier on core {oracle_core}, the agents on core {load_core}. {chain_rentals:,} of the rentals on "
        f"chain (set up in {setup_seconds:,.0f} s); their latest reports landed in batches of {LANDING_BATCH} "
        "(k=1), the checkpoint the landing policy lands."
    )
    incomplete = sum(1 for r in rentals if verifier.verified[r.rental_id] != minutes)
    return _result(
        agents,
        minutes,
        minute_seconds,
        seen,
        incomplete,
        latest,
        events,
        batches,
        seqs,
        setting,
        time.perf_counter() - started,
    )


def _simulated(
    fleet_rentals: tuple[FleetRental, ...], fleet_keys: tuple[bytes, ...], agents: int
) -> tuple[tuple[FleetRental, ...], tuple[bytes, ...]]:
    """The fleet's rentals followed by rentals that exist for the verifier alone, up to `agents` in all, each
    `AGENTS_PER_PROVIDER` of those under one more provider's agent key; and every agent key."""
    extra = agents - len(fleet_rentals)
    providers = -(-extra // AGENTS_PER_PROVIDER)
    keys = fleet_keys + tuple(keccak(text=f"gpuex bench agent {len(fleet_keys) + p}") for p in range(providers))
    first_offer = max(r.rental_id >> 32 for r in fleet_rentals) + 1
    since = fleet_rentals[0].since
    simulated = tuple(
        FleetRental(
            rental_id=(first_offer + k) << 32 | 1,
            since=since,
            gpu_uuids=(f"GPU-simulated-{k:06d}",),
            agent=len(fleet_keys) + k // AGENTS_PER_PROVIDER,
        )
        for k in range(extra)
    )
    return fleet_rentals + simulated, keys


def _land(chain: ChainSettings, oracle_key: bytes, reports: list[TelemetryReport]) -> int:
    """Lands `reports` in batches of `LANDING_BATCH` co-signed by the k=1 oracle, relayed by one of anvil's
    accounts over JSON-RPC; the first block they may be in."""
    rpc = JsonRpc(chain.rpc_url)
    try:
        relayer = rpc.call("eth_accounts")[6]
        domain = EscrowDomain(chain_id=chain.chain_id, escrow=chain.escrow, oracle_set_version=1)
        first_block = rpc.block_number() + 1
        ordered = sorted((r.to_chain_report() for r in reports), key=lambda r: r.rental_id)
        for first in range(0, len(ordered), LANDING_BATCH):
            batch = ordered[first : first + LANDING_BATCH]
            data = SUBMIT_REPORTS(*submit_args(batch, [sign_batch(batch, domain, oracle_key)], 1))
            tx_hash = rpc.call("eth_sendTransaction", {"from": relayer, "to": chain.escrow, "data": data})
            if _receipt(rpc, tx_hash)["status"] != "0x1":
                raise RuntimeError(f"landing failed: submitReports reverted in {tx_hash}")
        return first_block
    finally:
        rpc.close()


def _receipt(rpc: JsonRpc, tx_hash: str, timeout: float = 30.0) -> dict:
    """The transaction's receipt once it is mined (anvil mines a moment after it answers)."""
    deadline = time.perf_counter() + timeout
    while (receipt := rpc.call("eth_getTransactionReceipt", tx_hash)) is None:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"landing failed: {tx_hash} not mined in {timeout:g} s")
        time.sleep(0.05)
    return receipt


# --- figures -------------------------------------------------------------------------------------------------


def _result(
    agents: int,
    minutes: int,
    minute_seconds: float,
    seen: Verified,
    incomplete: int,
    latest: dict[int, TelemetryReport],
    events: list,
    batches: list,
    seqs: dict[int, int],
    setting: str,
    wall: float,
) -> SectionResult:
    planned = agents * minutes
    expected = {(rental, report.seq) for rental, report in latest.items()}
    on_chain = Counter((e.rental_id, e.seq) for e in events)
    lost = expected - set(on_chain)
    duplicated = sum(n - 1 for n in on_chain.values()) + sum(1 for key in on_chain if key not in expected)
    rentals_right = sum(1 for rental, seq in seqs.items() if rental in latest and seq == latest[rental].seq)
    cpu_us = 1e6 * seen.cpu_seconds / max(seen.received, 1)
    per_report_gas = sum(tx.gas_used for tx in batches) / len(events) if events else None
    landings_per_hour = agents * 3_600 / CHECKPOINT_SECONDS
    hourly_gas = landings_per_hour * per_report_gas if per_report_gas else None
    budget_per_report = round(report_budget(LANDING_BATCH))

    def fig(name: str, value: Any, unit: str, target: Target, note: str = "") -> Figure:
        return Figure(section=SECTION, name=name, value=value, unit=unit, target=target, note=note)

    figures = [
        fig(
            "reports sent by the agents",
            seen.received,
            "reports",
            Target(op="==", threshold=planned, source=OURS),
            f"{agents:,} agents × {minutes} simulated minutes",
        ),
        fig(
            "reports verified",
            seen.verified,
            "reports",
            Target(op="==", threshold=planned, source=ISSUE_13),
            "; ".join(f"{n:,} × {reason}" for reason, n in seen.refused.most_common(3))
            or "parsed, agent signature recovered and matched, placed after the rental's previous report",
        ),
        fig(
            "rentals without all their reports verified",
            incomplete,
            "agents",
            Target(op="==", threshold=0, source=ISSUE_13),
            "a rental with fewer or more verified reports than minutes",
        ),
        fig(
            "ingest latency, due to verified: p50",
            percentile(seen.latency_ms, 0.5),
            "ms",
            Target(op="<=", threshold=INGEST_P99_TARGET_MS / 5, source=OURS),
            "a fifth of issue #13's p99 target",
        ),
        fig(
            "ingest latency, due to verified: p99",
            percentile(seen.latency_ms, 0.99),
            "ms",
            Target(op="<", threshold=INGEST_P99_TARGET_MS, source=ISSUE_13),
            f"at {agents / minute_seconds:,.0f} reports a second",
        ),
        fig(
            "oracle CPU per report",
            cpu_us,
            "µs",
            Target(op="<=", threshold=1e6 * minute_seconds / agents, source=OURS),
            f"what one core has per report at this rate: {100 * seen.cpu_seconds / seen.wall_seconds:.0f}% of the "
            f"core over {seen.wall_seconds:,.0f} s",
        ),
        fig(
            "latest reports landed on chain",
            len(expected) - len(lost),
            "reports",
            Target(op="==", threshold=len(expected), source=ISSUE_13),
            "one per on-chain rental: its latest verified report",
        ),
        fig(
            "reports lost",
            len(lost),
            "reports",
            Target(op="==", threshold=0, source=ISSUE_13),
            "a rental's latest verified report not among the ReportApplied events",
        ),
        fig(
            "reports duplicated on chain",
            duplicated,
            "reports",
            Target(op="==", threshold=0, source=ISSUE_13),
            "a (rental, seq) among the ReportApplied events twice, or one that is not its rental's latest",
        ),
        fig(
            "rentals whose on-chain seq is the latest sent",
            rentals_right,
            "agents",
            Target(op="==", threshold=len(seqs), source=ISSUE_13),
            "getRental(id).lastSeq, read after the landing",
        ),
        fig(
            f"gas per landed report (batches of {LANDING_BATCH})",
            per_report_gas,
            "gas",
            Target(op="<=", threshold=budget_per_report, source=OURS),
            "on the line through issue #13's 1-report and 50-report budgets",
        ),
        fig(
            f"chain gas per simulated hour, {agents:,} agents",
            hourly_gas,
            "gas",
            Target(op="<=", threshold=landings_per_hour * budget_per_report, source=OURS),
            f"each rental's latest report landed once a checkpoint interval ({CHECKPOINT_SECONDS:,} s): "
            f"{landings_per_hour:,.0f} reports an hour at the measured gas"
            + (f"; every minute's report landed would cost {60 * hourly_gas:,.0f}" if hourly_gas else ""),
        ),
    ]
    notes = (
        setting,
        f"{seen.received:,} reports verified in {seen.wall_seconds:,.0f} s; oracle CPU {seen.cpu_seconds:,.1f} s, "
        f"{cpu_us:,.0f} µs a report (parse, signature recovery, continuity; no HTTP or store); latency p50 "
        f"{percentile(seen.latency_ms, 0.5):.2f} ms, p99 {percentile(seen.latency_ms, 0.99):.2f} ms, max "
        f"{max(seen.latency_ms, default=0):,.1f} ms.",
        f"{len(batches):,} landing transactions, {len(events):,} reports applied.",
        f"Load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; the latency tail follows "
        "what else the machine runs.",
    )
    return SectionResult(title=SECTION, figures=tuple(figures), notes=notes, wall_seconds=wall)
