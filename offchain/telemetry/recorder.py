"""Records what a telemetry source produces to a trace file, for replay tests."""

from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator

from offchain.telemetry.models import GpuSample
from offchain.telemetry.source import TelemetrySource
from offchain.telemetry.ticks import ticks
from offchain.telemetry.trace import write_samples


async def record(source: TelemetrySource, out: Path, seconds: int, *, paced: bool = True) -> int:
    """Writes `seconds` ticks of `source` to `out` (replacing it) and returns the number of samples.

    `paced` samples once a second on the wall clock, as a live sampler does; unpaced takes the ticks back
    to back, for sources that keep their own virtual time. Each tick is flushed, so a killed recorder
    leaves a readable trace.
    """
    if seconds < 1:
        raise ValueError("record at least one second")
    written = 0
    with out.open("w", encoding="utf-8") as trace:
        async for samples in ticks(source, count=seconds) if paced else _back_to_back(source, seconds):
            write_samples(trace, samples)
            trace.flush()
            written += len(samples)
    return written


async def _back_to_back(source: TelemetrySource, count: int) -> AsyncIterator[list[GpuSample]]:
    for _ in range(count):
        yield await source.sample()
