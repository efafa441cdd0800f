"""Scale simulation: thousands of provider agents reporting once a (simulated) minute through one oracle to anvil.

`bench.fleet` opens one running one-GPU rental per agent, started long enough ago that every agent has
`minutes` past one-minute periods to report. One real `OracleService` (the leader of a k=1 oracle set: ingest,
batcher and tx manager on one core; the keeper is off, since no rental comes due) serves them. A second process,
on another core, plays the agents: agent i's report for minute m is due at `start + (m - 1 + i / agents) *
minute_seconds`; each agent keeps its own schedule (a slow answer delays that agent only) and posts on a fresh
connection, as an agent whose keep-alive lapsed in the minute since its last report would. In the same process
an observer follows the escrow's `ReportApplied` events to time each report from when it was due to when it was
first seen on chain. The batcher's epoch is compressed with the minute (its default is 30 s a real minute).

Afterwards the chain is the judge: every accepted report must appear exactly once among the ReportApplied
events, every rental's `getRental` seq must equal the number of reports its agent sent, and a report that is not
on chain must still be held by the oracle (late, not lost). Batches and their gas are read from the receipts of
the transactions that carried the events, and grouped by the epoch of their block.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import multiprocessing
import sqlite3
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from pydantic import SecretStr

from bench.agents import Connection, ReportSigner, core_plan, cpu_seconds, percentile, pinned
from bench.fleet import (
    REPORT_APPLIED,
    BatchTransaction,
    Fleet,
    FleetRental,
    applied_reports,
    batch_transactions,
    deploy_fleet,
    last_seqs,
)
from bench.records import Figure, SectionResult, Target
from offchain.config import ChainSettings, OracleSettings
from offchain.oracle.service import STORE_FILE, OracleService

SECTION = "Scale simulation"
ISSUE_2, ISSUE_5, OURS = "issue #2", "issue #5", "ours"
PERIOD_SECONDS = 60
REAL_EPOCH_SECONDS = 30.0  # the oracle's default epoch, against a 60 s report interval
AGENTS_PER_PROVIDER = 100
GPUS_PER_OFFER = 1
MAX_CONNECTIONS = 500  # agents' connections open at once (the rest wait, as a full listen backlog would make them)
OBSERVER_POLL_SECONDS = 0.25
REPORT_GAS_BUDGET = 15_000  # issue #2: per report in a batch of 50
MAX_BATCH = OracleSettings.model_fields["max_batch_reports"].default
DEFAULT_DRAIN_SECONDS = 300.0
STALL_SECONDS = 60.0  # nothing landing this long, with reports outstanding, means nothing will


@dataclass
class AgentsOutcome:
    """What the agents' process saw. Times are seconds after the first report was due."""

    sent: int = 0
    accepted: int = 0
    refused: Counter = field(default_factory=Counter)
    answer_ms: list[float] = field(default_factory=list)  # from opening the connection to the oracle's answer
    latency_seconds: list[float] = field(default_factory=list)  # from due to seen on chain, per landed report
    landed_at: list[float] = field(default_factory=list)
    accepted_keys: set[tuple[int, int]] = field(default_factory=set)
    last_sent_at: float = 0.0  # when the last agent had its answer


# --- the agents' process -------------------------------------------------------------------------------------


async def _agents(
    port: int,
    chain: ChainSettings,
    agent_keys: tuple[bytes, ...],
    rentals: tuple[FleetRental, ...],
    minutes: int,
    minute_seconds: float,
    from_block: int,
    drain_seconds: float,
) -> AgentsOutcome:
    signer = ReportSigner(chain.chain_id, chain.registry, agent_keys, port)
    outcome = AgentsOutcome()
    due_at: dict[tuple[int, int], float] = {}
    landed: dict[tuple[int, int], float] = {}
    connections = asyncio.Semaphore(MAX_CONNECTIONS)
    start = time.perf_counter() + 1.0
    count = len(rentals)

    async def agent(i: int) -> None:
        rental = rentals[i]
        for seq in range(1, minutes + 1):
            due = start + (seq - 1 + i / count) * minute_seconds
            if (wait := due - time.perf_counter()) > 0:
                await asyncio.sleep(wait)
            request = signer.request(rental, seq, PERIOD_SECONDS)
            async with connections:
                opened = time.perf_counter()
                connection = await Connection.open(port)
                try:
                    status, body = await connection.post(request)
                finally:
                    await connection.close()
                outcome.answer_ms.append((time.perf_counter() - opened) * 1000)
            outcome.sent += 1
            if status == 202:
                outcome.accepted += 1
                due_at[(rental.rental_id, seq)] = due
            else:
                outcome.refused[f"{status} {json.loads(body).get('error', '?')}"] += 1

    async def observe(done_sending: asyncio.Event) -> None:
        """Follows ReportApplied events until every accepted report landed, the drain time is over, or nothing has
        landed for `STALL_SECONDS` after the last report was sent; the time a report is first seen on chain is when
        it landed."""
        next_block = from_block
        deadline = math.inf
        async with aiohttp.ClientSession() as session:
            while True:
                if done_sending.is_set():
                    now = time.perf_counter()
                    deadline = min(deadline, now + drain_seconds)
                    last_landing = max(landed.values(), default=start)
                    stalled = now - max(last_landing, start + outcome.last_sent_at) > STALL_SECONDS
                    if len(landed) >= len(due_at) or now > deadline or stalled:
                        return
                await asyncio.sleep(OBSERVER_POLL_SECONDS)
                head = int((await _rpc(session, chain.rpc_url, "eth_blockNumber", []))["result"], 16)
                if head < next_block:
                    continue
                answer = await _rpc(
                    session,
                    chain.rpc_url,
                    "eth_getLogs",
                    [
                        {
                            "address": chain.escrow,
                            "topics": ["0x" + REPORT_APPLIED.hex()],
                            "fromBlock": hex(next_block),
                            "toBlock": hex(head),
                        }
                    ],
                )
                seen = time.perf_counter()
                for log in answer["result"]:
                    landed.setdefault((int(log["topics"][1], 16), int(log["topics"][2], 16)), seen)
                next_block = head + 1

    done_sending = asyncio.Event()
    observer = asyncio.create_task(observe(done_sending))
    await asyncio.gather(*(agent(i) for i in range(count)))
    outcome.last_sent_at = time.perf_counter() - start
    done_sending.set()
    await observer
    outcome.accepted_keys = set(due_at)
    outcome.latency_seconds = [landed[key] - due for key, due in due_at.items() if key in landed]
    outcome.landed_at = sorted(t - start for t in landed.values())
    return outcome


async def _rpc(session: aiohttp.ClientSession, url: str, method: str, params: list) -> dict:
    async with session.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params}) as response:
        return await response.json()


def _drive(
    port: int,
    chain: ChainSettings,
    agent_keys: tuple[bytes, ...],
    rentals: tuple[FleetRental, ...],
    minutes: int,
    minute_seconds: float,
    from_block: int,
    drain_seconds: float,
    core: int,
    results: multiprocessing.Queue,
) -> None:
    with pinned(core):
        results.put(
            asyncio.run(_agents(port, chain, agent_keys, rentals, minutes, minute_seconds, from_block, drain_seconds))
        )


# --- the oracle's process ------------------------------------------------------------------------------------


class _Warnings(logging.Handler):
    """Counts the oracle's warnings and errors, to name what went wrong."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: Counter = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            message += f": {type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        self.messages[f"{record.name}: {message[:300]}"] += 1


@dataclass
class OracleOutcome:
    started_at: float  # Unix time the agents' process was started
    cpu_seconds: float
    wall_seconds: float
    held: set[tuple[int, int]]  # reports in the oracle's store, batched or not, when it stopped
    dropped: set[tuple[int, int]]  # of those, the ones the batcher dropped as no longer taken by the chain
    warnings: Counter


async def _run_oracle(
    fleet: Fleet,
    state_dir: Path,
    minutes: int,
    minute_seconds: float,
    epoch_seconds: float,
    drain_seconds: float,
    load_core: int,
) -> tuple[AgentsOutcome, OracleOutcome]:
    settings = OracleSettings(
        chain=fleet.chain,
        key=SecretStr("0x" + fleet.oracle_key.hex()),
        state_dir=state_dir,
        host="127.0.0.1",
        port=0,
        leader=True,
        keeper=False,
        epoch_seconds=epoch_seconds,
        allow_simulated=True,
    )
    service = OracleService(settings)
    stop = asyncio.Event()
    warnings = _Warnings()
    logging.getLogger().addHandler(warnings)
    oracle = asyncio.create_task(service.run(stop), name="oracle")
    try:
        while service.port is None or service.txmgr is None:
            if oracle.done():
                oracle.result()
            await asyncio.sleep(0.05)
        started_at, cpu_before = time.time(), cpu_seconds()
        context = multiprocessing.get_context("spawn")
        messages = context.Queue()
        agents = context.Process(
            target=_drive,
            args=(
                service.port,
                fleet.chain,
                fleet.agent_keys,
                fleet.rentals,
                minutes,
                minute_seconds,
                fleet.ready_block,
                drain_seconds,
                load_core,
                messages,
            ),
        )
        agents.start()
        loop = asyncio.get_running_loop()
        try:
            seen = await loop.run_in_executor(None, messages.get, True, minutes * minute_seconds + drain_seconds + 300)
        finally:
            await loop.run_in_executor(None, agents.join, 30)
            if agents.is_alive():
                agents.terminate()
        wall, cpu = time.time() - started_at, cpu_seconds() - cpu_before
    finally:
        stop.set()
        await oracle
        logging.getLogger().removeHandler(warnings)
    held, dropped = _held(state_dir / STORE_FILE)
    return seen, OracleOutcome(started_at, cpu, wall, held, dropped, warnings.messages)


def _held(store: Path) -> tuple[set[tuple[int, int]], set[tuple[int, int]]]:
    """(every report in the oracle's store, those the batcher dropped), read after it stopped."""
    db = sqlite3.connect(store)
    try:
        rows = db.execute("SELECT rental_id, seq, batched_tx_key FROM submissions").fetchall()
    finally:
        db.close()
    held = {(int(rental), seq) for rental, seq, _ in rows}
    dropped = {(int(rental), seq) for rental, seq, key in rows if key and key.startswith("dropped:")}
    return held, dropped


def measure(
    agents: int = 10_000, minutes: int = 2, minute_seconds: float = 30.0, drain_seconds: float = DEFAULT_DRAIN_SECONDS
) -> SectionResult:
    """Runs the simulation on the connected Brownie network (a fresh deployment on a chain of the benchmark's own)."""
    started = time.perf_counter()
    providers = max(1, agents // AGENTS_PER_PROVIDER)
    fleet = deploy_fleet(agents, providers, GPUS_PER_OFFER, minutes * PERIOD_SECONDS + 3_600)
    setup_seconds = time.perf_counter() - started
    epoch_seconds = REAL_EPOCH_SECONDS * minute_seconds / PERIOD_SECONDS
    oracle_core, load_core = core_plan()
    with tempfile.TemporaryDirectory() as state_dir, pinned(oracle_core):
        seen, oracle = asyncio.run(
            _run_oracle(fleet, Path(state_dir), minutes, minute_seconds, epoch_seconds, drain_seconds, load_core)
        )
    events = applied_reports(fleet.chain.rpc_url, fleet.chain.escrow, fleet.ready_block)
    batches = batch_transactions(fleet.chain.rpc_url, sorted({e.tx_hash for e in events}))
    seqs = last_seqs(fleet.chain, [r.rental_id for r in fleet.rentals])
    setting = (
        f"{agents:,} agents ({providers} providers, {GPUS_PER_OFFER}-GPU offers, set up in "
        f"{setup_seconds:,.0f} s), one report each simulated minute for {minutes} minutes; a simulated minute "
        f"lasts {minute_seconds:g} s ({PERIOD_SECONDS / minute_seconds:.1f}× real time), the batcher's epoch "
        f"{epoch_seconds:g} s; one oracle (k=1, leader, batches of up to {MAX_BATCH}) on core {oracle_core}, "
        f"the agents and the observer on core {load_core}; anvil mines a block per transaction."
    )
    return _result(
        agents,
        minutes,
        minute_seconds,
        epoch_seconds,
        seen,
        oracle,
        events,
        batches,
        seqs,
        setting,
        time.perf_counter() - started,
    )


# --- figures -------------------------------------------------------------------------------------------------


def sustained_rate(landed_at: list[float]) -> float | None:
    """Reports landed a second between the 10th and the 90th percentile of landing times: the rate the chain took
    them at, without the first epoch's wait and the last report's tail."""
    if len(landed_at) < 10:
        return None
    first, last = landed_at[len(landed_at) // 10], landed_at[len(landed_at) * 9 // 10]
    return 0.8 * len(landed_at) / (last - first) if last > first else None


def _rate_note(agents: int, rate: float | None, offered: float) -> str:
    needed = agents / PERIOD_SECONDS
    text = f"{agents:,} agents once a minute need {needed:,.0f}/s; {offered:,.0f}/s were offered"
    if rate is None:
        return text + "; too few landed to tell"
    if rate < 0.9 * offered:
        return text + f": the oracle's limit, enough for {rate * PERIOD_SECONDS:,.0f} agents once a minute"
    return text + " and taken as fast"


def _result(
    agents: int,
    minutes: int,
    minute_seconds: float,
    epoch_seconds: float,
    seen: AgentsOutcome,
    oracle: OracleOutcome,
    events: list,
    batches: list[BatchTransaction],
    seqs: dict[int, int],
    setting: str,
    wall: float,
) -> SectionResult:
    planned = agents * minutes
    on_chain = Counter((e.rental_id, e.seq) for e in events)
    duplicated = sum(n - 1 for n in on_chain.values() if n > 1) + sum(
        1 for key in on_chain if key not in seen.accepted_keys
    )
    not_landed = seen.accepted_keys - set(on_chain)
    lost = {k for k in not_landed if k not in oracle.held or k in oracle.dropped}
    late = len(not_landed) - len(lost)
    rentals_right = sum(1 for seq in seqs.values() if seq == minutes)
    reports_in = Counter(e.tx_hash for e in events)

    epochs, epoch_gas = Counter(), Counter()
    for tx in batches:
        epoch = int((tx.timestamp - oracle.started_at) // epoch_seconds)
        epochs[epoch] += 1
        epoch_gas[epoch] += tx.gas_used
    active = sorted(epochs)
    reports_per_epoch = agents * epoch_seconds / minute_seconds
    gas_total = sum(tx.gas_used for tx in batches)
    rate = sustained_rate(seen.landed_at)
    needed, offered = agents / PERIOD_SECONDS, agents / minute_seconds
    latency = seen.latency_seconds

    def fig(name: str, value: float | None, unit: str, target: Target, note: str = "") -> Figure:
        return Figure(section=SECTION, name=name, value=value, unit=unit, target=target, note=note)

    def mean(values: list[float]) -> float | None:
        return sum(values) / len(values) if values else None

    figures = [
        fig(
            "reports sent by the agents",
            seen.sent,
            "reports",
            Target(op="==", threshold=planned, source=OURS),
            f"{agents:,} agents × {minutes} simulated minutes",
        ),
        fig(
            "reports accepted by the oracle",
            seen.accepted,
            "reports",
            Target(op="==", threshold=planned, source=OURS),
            "; ".join(f"{n:,} × {reason}" for reason, n in seen.refused.most_common(3)),
        ),
        fig(
            "accepted reports on chain by the end",
            len(seen.accepted_keys) - len(not_landed),
            "reports",
            Target(op="==", threshold=seen.accepted, source=OURS),
            f"{late:,} still held by the oracle, not yet landed" if late else "every one landed",
        ),
        fig(
            "reports lost",
            len(lost),
            "reports",
            Target(op="==", threshold=0, source=ISSUE_5),
            "accepted, yet neither on chain nor held by the oracle (or dropped by its batcher)",
        ),
        fig(
            "reports duplicated on chain",
            duplicated,
            "reports",
            Target(op="==", threshold=0, source=ISSUE_5),
            "a (rental, seq) among the ReportApplied events twice, or one never accepted",
        ),
        fig(
            "rentals whose on-chain seq equals the reports sent",
            rentals_right,
            "agents",
            Target(op="==", threshold=agents, source=ISSUE_5),
            "getRental(id).lastSeq, read after the run",
        ),
        fig(
            "reports landed on chain a second, sustained",
            rate,
            "reports/s",
            Target(op=">=", threshold=needed, source=ISSUE_5),
            _rate_note(agents, rate, offered),
        ),
        fig(
            "end to end, report due to on chain: p50",
            percentile(latency, 0.5) if latency else None,
            "s",
            Target(op="<=", threshold=epoch_seconds + 2, source=OURS),
            "one batcher epoch (the batch closing) plus 2 s for the transaction",
        ),
        fig(
            "end to end, report due to on chain: p99",
            percentile(latency, 0.99) if latency else None,
            "s",
            Target(op="<=", threshold=minute_seconds, source=OURS),
            "on chain before the agent's next report is due (one report interval)",
        ),
        fig(
            "batches per epoch (mean over epochs with a batch)",
            mean([epochs[e] for e in active]),
            "batches",
            Target(op="<=", threshold=math.ceil(reports_per_epoch / MAX_BATCH) + 1, source=OURS),
            f"an epoch's {reports_per_epoch:,.0f} reports in full batches of {MAX_BATCH}, plus one part-full",
        ),
        fig(
            "gas per epoch (mean over epochs with a batch)",
            mean([epoch_gas[e] for e in active]),
            "gas",
            Target(op="<=", threshold=reports_per_epoch * REPORT_GAS_BUDGET, source=OURS),
            f"an epoch's reports at issue #2's {REPORT_GAS_BUDGET:,} gas a report",
        ),
        fig(
            "gas per report on chain",
            gas_total / len(events) if events else None,
            "gas",
            Target(op="<=", threshold=REPORT_GAS_BUDGET, source=ISSUE_2),
            "issue #2's budget in a batch of 50",
        ),
    ]
    warnings = "; ".join(f"{n:,} × {message}" for message, n in oracle.warnings.most_common(3))
    per_epoch = ", ".join(f"{epochs[e]} ({epoch_gas[e] / 1e6:,.1f} Mgas)" for e in active) or "none"
    notes = (
        setting,
        f"The last report was sent {seen.last_sent_at:,.0f} s after the first was due ({minutes * minute_seconds:g} s "
        "planned); " + (f"the last landed at {seen.landed_at[-1]:,.0f} s." if seen.landed_at else "none landed."),
        f"{len(batches):,} batch transactions, {max(reports_in.values(), default=0)} reports in the largest. Batches "
        f"(gas) per epoch: {per_epoch}.",
        f"Oracle CPU {oracle.cpu_seconds:,.0f} s in {oracle.wall_seconds:,.0f} s "
        f"({100 * oracle.cpu_seconds / oracle.wall_seconds:.0f}% of its core), "
        f"{1000 * oracle.cpu_seconds / max(seen.accepted, 1):.1f} ms a report; its answers to the agents, from "
        f"connecting to the answer, took p50 {percentile(seen.answer_ms, 0.5):,.1f} ms, p99 "
        f"{percentile(seen.answer_ms, 0.99):,.1f} ms (at most {MAX_CONNECTIONS} agents connected at once; the rest "
        "waited for a connection, and that wait counts in the end-to-end latency).",
    ) + ((f"Oracle warnings: {warnings}.",) if warnings else ())
    return SectionResult(title=SECTION, figures=tuple(figures), notes=notes, wall_seconds=wall)
