"""The renter API as a renter feels it: how soon a line the job prints reaches `gpuex rental logs --follow`, how
fast results download, how quickly a keystroke in `gpuex rental shell` comes back.

Issue #11's targets: a printed line reaches a following client with p99 <= 1 s; results download at >= 100 MB/s
on loopback; a shell keystroke's round trip p99 <= 50 ms. A real exchange runs in this process
(`offchain.ops.inprocess`, the provider's agent serving its renter API on loopback), the renter's client
(`offchain.market.renterclient`, as the CLI uses it) in this process too; every request is signed as the CLI signs it.

- Log latency: a job prints a line every 50 ms (400 lines); the client follows the log and takes, for every line,
  its arrival time less the engine's timestamp of the line (both this machine's clock).
- Results: a job leaves a 256 MiB output folder; a client in another process (the renter's machine) downloads
  the tar three times (checking its keccak256 as it reads, as the CLI does); megabytes of tar a second of the
  median download.
- Shell: in a shell of a running job, 300 single keystrokes, each timed from sending to its echo's return.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from pathlib import Path

import aiohttp

from bench.agents import percentile
from bench.containers import DURATION, PRICE, RENTER_KEY, deploy_market
from bench.records import Figure, SectionResult, Target
from offchain.agent.jobspec import JobSpec
from offchain.market.renterclient import RenterClient
from offchain.ops.devnet import build_job_image
from offchain.ops.inprocess import LocalExchange, ProviderMachine, running_exchange
from offchain.protocol.renterapi import LogEntry

SECTION = "Renter API"
ISSUE_11 = "issue #11"
LOG_LINES = 400
RESULT_MIB = 256
KEYSTROKES = 300
LOG_JOB = JobSpec(
    command=("sh", "-c", f"i=0; while [ $i -lt {LOG_LINES} ]; do echo line $i; i=$((i+1)); usleep 50000; done")
)
RESULT_JOB = JobSpec(
    command=("sh", "-c", f"mkdir -p out && head -c {RESULT_MIB * 1024 * 1024} /dev/zero > out/weights.bin")
)
SHELL_JOB = JobSpec(command=("sleep", "600"))


def _engine_time(text: str) -> float:
    """Unix time of a k8s-file timestamp (RFC 3339 with nanoseconds and an offset)."""
    head, _, rest = text.partition(".")
    fraction, zone = rest[:9], rest[9:]
    return datetime.fromisoformat(head + zone).timestamp() + float("0." + fraction)


async def _open(exchange: LocalExchange, market, offer: int, spec: JobSpec, client: RenterClient) -> int:
    tx = await asyncio.to_thread(
        market.suite.escrow.openRental, offer, DURATION, PRICE, spec.spec_hash(), {"from": market.renter}
    )
    rental = tx.return_value
    agent = exchange.agent
    await exchange.until(lambda: agent.book.get(rental) is not None, 30, "the agent to see the rental")
    await client.upload_spec(rental, spec)
    deadline = time.monotonic() + 30
    while (status := await client.status(rental)).container is None or status.container.state == "created":
        if time.monotonic() > deadline:
            raise TimeoutError(f"rental {rental}'s container never started")
        await asyncio.sleep(0.1)
    return rental


async def _log_latencies(exchange: LocalExchange, market, client: RenterClient) -> list[float]:
    rental = await _open(exchange, market, market.offers[0], LOG_JOB, client)
    latencies = []
    async for item in client.logs(rental, follow=True):
        if isinstance(item, LogEntry):
            latencies.append(time.time() - _engine_time(item.time))
    return latencies


def _download(url: str, chain_id: int, escrow: str, rental_id: int, destination: Path) -> float:
    """In a process of its own (a renter's machine): downloads the results, checking their digest; seconds."""

    async def main() -> float:
        async with RenterClient(url, chain_id, escrow, RENTER_KEY) as client:
            started = time.perf_counter()
            await client.download_results(rental_id, destination)
            return time.perf_counter() - started

    return asyncio.run(main())


async def _results_rate(exchange: LocalExchange, market, client: RenterClient, scratch: Path) -> float:
    """Megabytes a second of the median of three downloads, each by a client in another process."""
    rental = await _open(exchange, market, market.offers[1], RESULT_JOB, client)
    agent = exchange.agent
    await exchange.until(lambda: agent.book.get(rental).result_digest is not None, 120, "the job's results")
    destination = scratch / "results.tar"
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as renter_machine:
        seconds = [
            await loop.run_in_executor(
                renter_machine,
                _download,
                client.base_url,
                market.chain.chain_id,
                market.chain.escrow,
                rental,
                destination,
            )
            for _ in range(3)
        ]
    return destination.stat().st_size / 1e6 / statistics.median(seconds)


async def _keystroke_round_trips(exchange: LocalExchange, market, client: RenterClient) -> list[float]:
    rental = await _open(exchange, market, market.offers[2], SHELL_JOB, client)
    ws = await client.shell(rental, 24, 200)
    try:
        await ws.send_bytes(b"echo ready\n")
        seen = b""
        while b"ready\r\n" not in seen:
            seen += (await asyncio.wait_for(ws.receive(), 20)).data
        await asyncio.sleep(0.5)
        round_trips = []
        for i in range(KEYSTROKES):
            key = b"abcdefghij"[i % 10 : i % 10 + 1]
            started = time.perf_counter()
            await ws.send_bytes(key)
            echoed = b""
            while key not in echoed:
                message = await asyncio.wait_for(ws.receive(), 10)
                if message.type != aiohttp.WSMsgType.BINARY:
                    raise RuntimeError(f"the shell closed: {message}")
                echoed += message.data
            round_trips.append(time.perf_counter() - started)
            if i % 50 == 49:
                await ws.send_bytes(b"\x15")  # ^U: clear the line it typed
                await asyncio.sleep(0.05)
        return round_trips
    finally:
        await ws.close()


async def _measure() -> tuple[list[float], float, list[float]]:
    market = deploy_market(3)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        machine = ProviderMachine(market.provider.address, market.agent_key, market.source)
        async with running_exchange(market.chain, root / "exchange", market.oracle_keys, machine) as exchange:
            port = exchange.agent.api.port
            async with RenterClient(
                f"http://127.0.0.1:{port}", market.chain.chain_id, market.chain.escrow, RENTER_KEY
            ) as client:
                latencies = await _log_latencies(exchange, market, client)
                rate = await _results_rate(exchange, market, client, root)
                round_trips = await _keystroke_round_trips(exchange, market, client)
    return latencies, rate, round_trips


def measure() -> SectionResult:
    started = time.perf_counter()
    build_job_image()
    latencies, rate, round_trips = asyncio.run(_measure())
    ms = [1000 * s for s in latencies]
    rtt = [1000 * s for s in round_trips]
    figures = (
        Figure(
            section=SECTION,
            name=f"job's line -> `rental logs --follow`, p99 of {len(ms)}",
            value=percentile(ms, 0.99) / 1000,
            unit="s",
            target=Target(op="<=", threshold=1.0, source=ISSUE_11),
            note=f"p50 {percentile(ms, 0.5):.0f} ms, max {max(ms):.0f} ms",
        ),
        Figure(
            section=SECTION,
            name=f"results download, {RESULT_MIB} MiB output folder",
            value=rate,
            unit="MB/s",
            target=Target(op=">=", threshold=100, source=ISSUE_11),
            note="loopback, a client in another process, digest checked while reading; median of 3",
        ),
        Figure(
            section=SECTION,
            name=f"shell keystroke round trip, p99 of {len(rtt)}",
            value=percentile(rtt, 0.99),
            unit="ms",
            target=Target(op="<=", threshold=50, source=ISSUE_11),
            note=f"p50 {percentile(rtt, 0.5):.1f} ms, max {max(rtt):.1f} ms",
        ),
    )
    return SectionResult(
        title=SECTION,
        figures=figures,
        wall_seconds=time.perf_counter() - started,
        notes=(
            "the agent and the client in one process on loopback; requests signed as the CLI signs them",
            "log latency: arrival at the client less the engine's timestamp of the line; the agent reads new log "
            "entries every 50 ms",
        ),
    )
