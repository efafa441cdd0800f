"""Plays a recorded trace back as a telemetry source, for tests and demos."""

from __future__ import annotations

import time
from itertools import groupby
from pathlib import Path
from typing import Callable

from offchain.telemetry.models import GpuInfo, GpuSample
from offchain.telemetry.source import TelemetrySource, TraceExhausted
from offchain.telemetry.trace import TraceFormatError, read_trace


class ReplaySource(TelemetrySource):
    """One recorded tick per call of `sample`, in file order; a tick is a run of lines with one timestamp.

    Samples come back with `source="replay"`. With `rebase`, every timestamp is shifted by one constant
    so that the first tick lands on `clock()` at the first call: the trace's own spacing, gaps included,
    is kept, so playing it at its recorded cadence stays in step with the clock.

    `simulated` is True: a replay is a recording, not a measurement of the GPUs under rent.
    """

    def __init__(self, path: Path, *, rebase: bool = False, clock: Callable[[], float] = time.time) -> None:
        samples = read_trace(path)
        if not samples:
            raise TraceFormatError(f"{path}: the trace is empty")
        self._ticks = [
            [sample.model_copy(update={"source": "replay"}) for sample in tick]
            for _, tick in groupby(samples, key=lambda sample: sample.timestamp)
        ]
        self._gpus = _gpus_of(samples)
        self._rebase = rebase
        self._clock = clock
        self._offset: float | None = None
        self._next_tick = 0

    @property
    def simulated(self) -> bool:
        return True

    def gpus(self) -> list[GpuInfo]:
        return list(self._gpus)

    async def sample(self) -> list[GpuSample]:
        if self._next_tick == len(self._ticks):
            raise TraceExhausted(f"all {len(self._ticks)} ticks of the trace were played")
        tick = self._ticks[self._next_tick]
        self._next_tick += 1
        if not self._rebase:
            return list(tick)
        if self._offset is None:
            self._offset = self._clock() - tick[0].timestamp
        return [sample.model_copy(update={"timestamp": sample.timestamp + self._offset}) for sample in tick]

    def close(self) -> None:
        """Nothing to release: the trace is read whole when the source is made."""


def _gpus_of(samples: list[GpuSample]) -> list[GpuInfo]:
    """Each GPU of a trace once, in index order, with the largest memory total it reported (0 if none)."""
    first_seen: dict[str, GpuSample] = {}
    mem_total: dict[str, int] = {}
    for sample in samples:
        first_seen.setdefault(sample.uuid, sample)
        mem_total[sample.uuid] = max(mem_total.get(sample.uuid, 0), sample.mem_total_mib or 0)
    return sorted(
        (
            GpuInfo(index=s.gpu_index, uuid=uuid, name=s.name, mem_total_mib=mem_total[uuid])
            for uuid, s in first_seen.items()
        ),
        key=lambda info: info.index,
    )
