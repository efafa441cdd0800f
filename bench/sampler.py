"""CPU cost of telemetry sampling: `python bench/sampler.py [--seconds N] [--gpus 8] [--nvml]`.

Issue #3 asks for at most 1% of one core for 8 GPUs sampled at 1 Hz. Time is compressed: `sample()` is
called once per simulated second without sleeping, and the process CPU time (all threads, user and
system) per call is the share of one core a 1 Hz sampler uses. The simulated and the replay source are
measured by default; `--nvml` measures the real GPUs of this machine instead, scaled to `--gpus` GPUs
when it has another number.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from offchain.telemetry.nvml import NvmlSource
from offchain.telemetry.recorder import record
from offchain.telemetry.replay import ReplaySource
from offchain.telemetry.simulated import SimulatedSource
from offchain.telemetry.source import TelemetrySource, TelemetryUnavailable

TARGET_PCT_OF_CORE = 1.0


async def cpu_seconds_per_tick(source: TelemetrySource, ticks: int) -> float:
    """Process CPU seconds one `sample()` costs, averaged over `ticks` calls after one warm-up call."""
    await source.sample()
    start = time.process_time()
    for _ in range(ticks):
        await source.sample()
    return (time.process_time() - start) / ticks


def report(label: str, gpus_measured: int, gpus_wanted: int, per_tick_s: float) -> None:
    pct_of_core = per_tick_s * gpus_wanted / gpus_measured * 100  # one tick per second
    verdict = "OK" if pct_of_core <= TARGET_PCT_OF_CORE else "OVER TARGET"
    scaled = f" (measured on {gpus_measured}, scaled)" if gpus_measured != gpus_wanted else ""
    print(
        f"  {label:<9} {per_tick_s * 1e6:9.1f} us CPU per tick of {gpus_measured} GPUs -> "
        f"{pct_of_core:.4f}% of one core for {gpus_wanted} GPUs at 1 Hz{scaled}  [{verdict}]"
    )


async def bench_offline(seconds: int, gpus: int) -> None:
    async with SimulatedSource(gpu_count=gpus, seed=1, start=0.0) as simulated:
        report("simulated", gpus, gpus, await cpu_seconds_per_tick(simulated, seconds))
    with tempfile.TemporaryDirectory() as scratch:
        trace = Path(scratch) / "trace.jsonl"
        async with SimulatedSource(gpu_count=gpus, seed=2, start=0.0) as recorded:
            await record(recorded, trace, seconds + 1, paced=False)
        async with ReplaySource(trace, rebase=True) as replay:
            report("replay", gpus, gpus, await cpu_seconds_per_tick(replay, seconds))


async def bench_nvml(seconds: int, gpus: int) -> None:
    # With a job expected, every tenth tick also reads the process lists, as in production.
    async with NvmlSource(expected_pids={1}) as nvml:
        found = len(nvml.gpus())
        print(f"  NVML sees {found} GPU(s): {', '.join(sorted({g.name for g in nvml.gpus()}))}")
        report("nvml", found, gpus, await cpu_seconds_per_tick(nvml, seconds))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=3_600, help="simulated seconds (one tick each)")
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--nvml", action="store_true", help="measure this machine's GPUs through NVML")
    args = parser.parse_args()
    print(
        f"sampler CPU, {args.gpus} GPUs at 1 Hz over {args.seconds} compressed seconds "
        f"(target: <= {TARGET_PCT_OF_CORE:.2f}% of one core)"
    )
    try:
        asyncio.run((bench_nvml if args.nvml else bench_offline)(args.seconds, args.gpus))
    except TelemetryUnavailable as exc:
        print(f"no NVML here: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
