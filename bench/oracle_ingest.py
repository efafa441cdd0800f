"""Oracle ingest throughput and latency: `python bench/oracle_ingest.py --network dev8546 [--agents 1,10,100]`.

Issue #3 asks for at least 2,000 verified telemetry reports a second on one core, p99 under 50 ms. This deploys a
suite on the Brownie network's anvil (launched if it is not running; it must be a chain of your own, since its
clock is set back), lists one two-GPU offer per agent and starts a rental on each a few hours in the past, so
every rental has past periods to report. The oracle app (the real one: signature recovery, chain reads through
AsyncWeb3, SQLite) is served on 127.0.0.1 from this process, pinned to one core; a second process, pinned to
another core where there is one, plays N agents over keep-alive HTTP/1.1 connections, each posting its reports
one after another as an agent does. Reports are signed before the clock starts.

For each N: the first report of every agent (cold caches, timed apart), then reports back to back (throughput;
with N reports always in flight, latency there is N / throughput by Little's law), then reports at 2,000 a
second in all (latency under the target load). Every run is bounded in reports and in time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import multiprocessing
import os
import re
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from coincurve import PrivateKey
from eth_account import Account
from eth_utils import keccak
from pydantic import SecretStr

from offchain.config import ChainSettings, OracleSettings
from offchain.messages import TelemetryReport, TelemetrySubmission, gpu_uuid_hash
from offchain.oracle.app import TELEMETRY_PATH, create_app
from offchain.oracle.digest import TelemetryDomain

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TARGET_REPORTS_PER_SECOND = 2_000
TARGET_P99_MS = 50.0
HOST = "127.0.0.1"
AGENT_KEY = keccak(text="gpuex bench agent")
ORACLE_KEY = keccak(text="gpuex bench oracle")
BACKDATE_SECONDS = 8 * 3600  # each rental can report this many one-second periods
PERIOD_SECONDS = 1


class RentalPlan(NamedTuple):
    rental_id: int
    since: int
    gpu_uuids: tuple[str, ...]


class RunResult(NamedTuple):
    agents: int
    run: str  # "cold start", "saturated" or "paced"
    sent: int
    accepted: int
    wall_seconds: float
    latencies_ms: list[float]
    first_error: str


def deploy(agents: int) -> tuple[ChainSettings, list[RentalPlan]]:
    """One offer and one started rental per agent, started BACKDATE_SECONDS in the past."""
    from brownie import TestStablecoin, accounts, chain, web3

    from scripts.deploy import USDC, deploy_suite

    deployer, treasury, provider, renter = accounts[0], accounts[1], accounts[2], accounts[4]
    quiet = {"silent": True}
    token = TestStablecoin.deploy(deployer, {"from": deployer, **quiet})
    oracle = Account.from_key(ORACLE_KEY).address
    suite = deploy_suite(deployer, token, token, treasury, [oracle], 1)
    for account in (provider, renter):
        token.mint(account, 10**9 * USDC, {"from": deployer, **quiet})
        token.approve(suite.registry, 2**256 - 1, {"from": account, **quiet})
        token.approve(suite.escrow, 2**256 - 1, {"from": account, **quiet})
    suite.registry.stake(10**8 * USDC, {"from": provider, **quiet})
    suite.registry.setAgent(Account.from_key(AGENT_KEY).address, {"from": provider, **quiet})
    uuids = [(f"GPU-bench-{i:04d}-a", f"GPU-bench-{i:04d}-b") for i in range(agents)]
    suite.registry.registerGpus([gpu_uuid_hash(u) for pair in uuids for u in pair], {"from": provider, **quiet})

    web3.provider.make_request("evm_setTime", [int(time.time()) - BACKDATE_SECONDS])
    chain.mine()
    plans = []
    for pair in uuids:
        terms = (b"H100".ljust(32, b"\0"), 81_559, 1_000, 60, 30 * 86_400, b"bench".ljust(16, b"\0"), 10_000,
                 [gpu_uuid_hash(u) for u in pair])
        offer = suite.registry.createOffer(terms, {"from": provider, **quiet}).return_value
        rental = suite.escrow.openRental(offer, 86_400, 1_000, keccak(text="bench"), {"from": renter, **quiet})
        rental_id = rental.return_value
        suite.escrow.start(rental_id, {"from": provider, **quiet})
        plans.append(RentalPlan(rental_id, suite.escrow.getRental(rental_id)[4], pair))
    web3.provider.make_request("evm_setTime", [int(time.time())])
    chain.mine()
    settings = ChainSettings(rpc_url=web3.provider.endpoint_uri, chain_id=web3.eth.chain_id,
                             registry=suite.registry.address, escrow=suite.escrow.address)
    return settings, plans


# --- the agents' process -------------------------------------------------------------------------------------


def signed_requests(domain: TelemetryDomain, plan: RentalPlan, count: int, port: int) -> list[bytes]:
    """HTTP requests carrying the first `count` reports of a rental, signed with the agent key."""
    key = PrivateKey(AGENT_KEY)
    requests = []
    for seq in range(1, count + 1):
        start = plan.since + (seq - 1) * PERIOD_SECONDS
        report = TelemetryReport(
            rental_id=plan.rental_id, seq=seq, period_start=start, period_end=start + PERIOD_SECONDS,
            delivered_seconds=PERIOD_SECONDS, avg_util_bps=9_000, peak_mem_mib=40_000, sample_count=1,
            gpu_uuids=plan.gpu_uuids, telemetry_root=keccak(seq.to_bytes(32, "big")),
        )
        recoverable = key.sign_recoverable(domain.digest(report), hasher=None)
        signature = recoverable[:64] + bytes((recoverable[64] + 27,))
        body = TelemetrySubmission(report=report, signature=signature).model_dump_json().encode()
        requests.append(
            f"POST {TELEMETRY_PATH} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        )
    return requests


_CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length: *(\d+)")


async def play_agent(
    port: int, requests: list[bytes], deadline: float, latencies: list[float], interval: float | None, offset: float
) -> tuple[int, str]:
    """Posts `requests` in order on one connection until done or past `deadline`; (accepted, first refusal).

    Back to back when `interval` is None; otherwise the k-th request is due at start + offset + k * interval and
    its latency is counted from when it was due, so a late answer also delays the latencies after it (no
    coordinated omission)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    accepted, error = 0, ""
    first_due = time.perf_counter() + offset
    try:
        for k, request in enumerate(requests):
            if interval is None:
                started = time.perf_counter()
            else:
                started = first_due + k * interval
                if (wait := started - time.perf_counter()) > 0:
                    await asyncio.sleep(wait)
            if time.perf_counter() > deadline:
                break
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            payload = await reader.readexactly(int(_CONTENT_LENGTH.search(head).group(1)))
            latencies.append((time.perf_counter() - started) * 1000)
            if head[9:12] == b"202":
                accepted += 1
            elif not error:
                error = (head.split(b"\r\n", 1)[0] + b" " + payload).decode(errors="replace")
    finally:
        writer.close()
        await writer.wait_closed()
    return accepted, error


async def play(port: int, run: str, requests_by_agent: list[list[bytes]], max_seconds: float,
               rate: float | None = None) -> RunResult:
    """All agents at once, back to back or together at `rate` reports a second."""
    agents = len(requests_by_agent)
    interval = None if rate is None else agents / rate
    latencies: list[float] = []
    started = time.perf_counter()
    outcomes = await asyncio.gather(
        *(
            play_agent(port, requests, started + max_seconds, latencies, interval,
                       0.0 if interval is None else i * interval / agents)
            for i, requests in enumerate(requests_by_agent)
        )
    )
    wall = time.perf_counter() - started
    errors = [e for _, e in outcomes if e]
    return RunResult(agents, run, len(latencies), sum(a for a, _ in outcomes), wall, latencies,
                     errors[0] if errors else "")


def drive(port: int, chain_settings: ChainSettings, plans: list[RentalPlan], phases: list[int],
          reports_per_run: int, max_seconds: float, results: multiprocessing.Queue) -> None:
    """The agents' process. Each phase has rentals of its own (a run cut short by its time limit leaves no gap
    for the next phase) and three runs: every agent's first report (cold caches: the oracle reads each rental,
    offer and agent key from the chain), then `reports_per_run` reports back to back (throughput), then as many
    at the target rate (latency under the target load; skipped for a single agent, which cannot carry it)."""
    _pin(1)
    domain = TelemetryDomain(chain_settings.chain_id, chain_settings.registry)
    first_rental = 0
    for agents in phases:
        per_agent = max(1, reports_per_run // agents)
        signed = [signed_requests(domain, plan, 1 + 2 * per_agent, port)
                  for plan in plans[first_rental : first_rental + agents]]
        first_rental += agents
        runs = [("cold start", [r[:1] for r in signed], None),
                ("saturated", [r[1 : 1 + per_agent] for r in signed], None)]
        if agents > 1:
            runs.append((f"{TARGET_REPORTS_PER_SECOND}/s paced", [r[1 + per_agent :] for r in signed],
                         float(TARGET_REPORTS_PER_SECOND)))
        for run, requests, rate in runs:
            results.put(("start", run))
            results.put(("done", asyncio.run(play(port, run, requests, max_seconds, rate))))
    results.put(("finished", None))


# --- the oracle's process ------------------------------------------------------------------------------------


def _pin(index: int) -> None:
    """Pins this process to one core (the `index`-th this process may use, wrapping round)."""
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cores[index % len(cores)]})


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def serve_and_measure(chain_settings: ChainSettings, plans: list[RentalPlan], phases: list[int],
                            reports_per_run: int, max_seconds: float) -> list[tuple[RunResult, float]]:
    """Serves the oracle while the agents' process plays; each run's result with this process's CPU seconds."""
    from aiohttp import web

    with tempfile.TemporaryDirectory() as state_dir:
        settings = OracleSettings(chain=chain_settings, key=SecretStr("0x" + ORACLE_KEY.hex()), state_dir=state_dir)
        runner = web.AppRunner(create_app(settings), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, HOST, 0)
        await site.start()
        port = runner.addresses[0][1]
        context = multiprocessing.get_context("spawn")
        messages = context.Queue()
        agents = context.Process(
            target=drive, args=(port, chain_settings, plans, phases, reports_per_run, max_seconds, messages)
        )
        agents.start()
        measured = []
        loop = asyncio.get_running_loop()
        try:
            cpu_before = _cpu_seconds()
            while True:
                kind, payload = await loop.run_in_executor(None, messages.get, True, 600)
                if kind == "start":
                    cpu_before = _cpu_seconds()
                elif kind == "done":
                    measured.append((payload, _cpu_seconds() - cpu_before))
                else:
                    break
        finally:
            await loop.run_in_executor(None, agents.join, 30)
            if agents.is_alive():
                agents.terminate()
            await runner.cleanup()
    return measured


def verdict(result: RunResult) -> tuple[bool, str]:
    """Whether a run meets the targets that apply to it, and which those are."""
    rate = result.accepted / result.wall_seconds
    p99 = percentile(result.latencies_ms, 0.99)
    if result.accepted != result.sent:
        return False, "refusals"
    if result.run == "cold start":
        return True, "info"
    if result.run == "saturated" and result.agents > 1:
        # N agents back to back keep N reports in flight: latency is N / rate by Little's law, not a target.
        return rate >= TARGET_REPORTS_PER_SECOND, f">= {TARGET_REPORTS_PER_SECOND}/s"
    if result.run == "saturated":
        return p99 < TARGET_P99_MS, f"p99 < {TARGET_P99_MS:.0f} ms"
    kept_pace = rate >= 0.95 * TARGET_REPORTS_PER_SECOND
    return kept_pace and p99 < TARGET_P99_MS, f"pace kept, p99 < {TARGET_P99_MS:.0f} ms"


def print_results(measured: list[tuple[RunResult, float]]) -> bool:
    print(f"\noracle ingest on {HOST}, server pinned to one core (targets: >= {TARGET_REPORTS_PER_SECOND:,}"
          f" reports/s, p99 < {TARGET_P99_MS:.0f} ms)")
    print(f"  {'agents':>6}  {'run':<14} {'reports':>8} {'accepted':>8} {'reports/s':>10} {'p50 ms':>8} {'p99 ms':>8}"
          f" {'server CPU':>11}  verdict")
    all_ok = True
    for result, cpu in measured:
        rate = result.accepted / result.wall_seconds
        ok, target = verdict(result)
        all_ok &= ok
        p50, p99 = percentile(result.latencies_ms, 0.50), percentile(result.latencies_ms, 0.99)
        print(f"  {result.agents:>6}  {result.run:<14} {result.sent:>8} {result.accepted:>8} {rate:>10,.0f}"
              f" {p50:>8.2f} {p99:>8.2f} {cpu / max(result.sent, 1) * 1e6:>8.0f} us  "
              f"{'OK' if ok else 'MISSED'} ({target})")
        if result.first_error:
            print(f"          first refusal: {result.first_error[:200]}")
    return all_ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/oracle_ingest.py", description=__doc__.splitlines()[0])
    parser.add_argument("--network", required=True, help="Brownie network id of an anvil of your own (e.g. dev8546)")
    parser.add_argument("--agents", default="1,10,100", help="concurrent agents per phase, comma-separated")
    parser.add_argument("--reports", type=int, default=10_000, help="reports per run (split among its agents)")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="time limit per run")
    args = parser.parse_args(argv)
    phases = [int(n) for n in args.agents.split(",")]
    if 1 + 2 * (args.reports // min(phases)) > BACKDATE_SECONDS // PERIOD_SECONDS:
        parser.error("too many reports per agent for the backdated rentals")

    from brownie import network, project

    loaded = project.load(PROJECT_ROOT)
    loaded.load_config()
    loaded._add_to_main_namespace()
    network.connect(args.network)
    try:
        print(f"setting up {sum(phases)} offers and rentals ...", flush=True)
        with contextlib.redirect_stdout(io.StringIO()):
            chain_settings, plans = deploy(sum(phases))
        _pin(0)
        measured = asyncio.run(serve_and_measure(chain_settings, plans, phases, args.reports, args.max_seconds))
    finally:
        network.disconnect()
    return 0 if print_results(measured) else 1


if __name__ == "__main__":
    sys.exit(main())
