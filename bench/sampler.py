"""CPU cost of telemetry sampling for 8 GPUs at 1 Hz, and on this machine's real GPUs where NVML finds any.

Issue #3 asks for at most 1% of one core for 8 GPUs sampled at 1 Hz. Time is compressed: `sample()` is called
once per simulated second without sleeping, and the process CPU time (all threads, user and system) per call is
the share of one core a 1 Hz sampler uses. The simulated and the replay source are measured with 8 GPUs; the
NVML source on whatever GPUs the machine has, scaled to 8 when it has another number.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from bench.records import Figure, SectionResult, Target
from offchain.telemetry.nvml import NvmlSource
from offchain.telemetry.recorder import record
from offchain.telemetry.replay import ReplaySource
from offchain.telemetry.simulated import SimulatedSource
from offchain.telemetry.source import TelemetrySource, TelemetryUnavailable

SECTION = "Sampler"
TARGET = Target(op="<=", threshold=1.0, source="issue #3")
UNIT = "% of one core"


async def cpu_seconds_per_tick(source: TelemetrySource, ticks: int) -> float:
    """Process CPU seconds one `sample()` costs, averaged over `ticks` calls after one warm-up call."""
    await source.sample()
    start = time.process_time()
    for _ in range(ticks):
        await source.sample()
    return (time.process_time() - start) / ticks


def share_of_core(per_tick_seconds: float, gpus_measured: int, gpus_wanted: int) -> float:
    """Percent of one core at one tick a second, scaled from the GPUs measured to the GPUs wanted."""
    return per_tick_seconds * gpus_wanted / gpus_measured * 100


async def _offline(seconds: int, gpus: int) -> list[Figure]:
    async with SimulatedSource(gpu_count=gpus, seed=1, start=0.0) as simulated:
        simulated_tick = await cpu_seconds_per_tick(simulated, seconds)
    with tempfile.TemporaryDirectory() as scratch:
        trace = Path(scratch) / "trace.jsonl"
        async with SimulatedSource(gpu_count=gpus, seed=2, start=0.0) as recorded:
            await record(recorded, trace, seconds + 1, paced=False)
        async with ReplaySource(trace, rebase=True) as replay:
            replay_tick = await cpu_seconds_per_tick(replay, seconds)
    return [
        Figure(
            section=SECTION,
            name=f"{source} source, {gpus} GPUs at 1 Hz",
            value=share_of_core(tick, gpus, gpus),
            unit=UNIT,
            target=TARGET,
            note=f"{tick * 1e6:,.1f} µs CPU a tick",
        )
        for source, tick in (("simulated", simulated_tick), ("replay", replay_tick))
    ]


async def _nvml(seconds: int, gpus: int) -> Figure:
    name = f"NVML on this machine's GPUs, scaled to {gpus} at 1 Hz"
    try:
        # With a job expected, every tenth tick also reads the process lists, as in production.
        async with NvmlSource(expected_pids={1}) as nvml:
            found = nvml.gpus()
            per_tick = await cpu_seconds_per_tick(nvml, seconds)
    except TelemetryUnavailable as exc:
        return Figure(section=SECTION, name=name, value=None, unit=UNIT, target=TARGET, note=f"no GPU here ({exc})")
    models = ", ".join(sorted({g.name for g in found}))
    return Figure(
        section=SECTION,
        name=name,
        value=share_of_core(per_tick, len(found), gpus),
        unit=UNIT,
        target=TARGET,
        note=f"measured on {len(found)} × {models}: {per_tick * 1e6:,.1f} µs CPU a tick",
    )


def measure(seconds: int = 3_600, gpus: int = 8, nvml_seconds: int = 300) -> SectionResult:
    """`seconds` compressed ticks of each offline source; `nvml_seconds` of NVML, whose calls take real time."""
    started = time.perf_counter()

    async def both() -> list[Figure]:
        return [*await _offline(seconds, gpus), await _nvml(nvml_seconds, gpus)]

    figures = asyncio.run(both())
    return SectionResult(
        title=SECTION,
        figures=tuple(figures),
        notes=(
            f"{seconds:,} ticks of the offline sources and up to {nvml_seconds} of NVML, called back to back; "
            "CPU time of the whole process per tick = share of one core at 1 Hz.",
        ),
        wall_seconds=time.perf_counter() - started,
    )
