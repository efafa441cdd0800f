"""Paces a telemetry source on a clock: the wall clock, or the chain's as the provider agent keeps it."""

from __future__ import annotations

import asyncio
import math
import time
from typing import AsyncIterator, Awaitable, Callable

from offchain.telemetry.models import GpuSample
from offchain.telemetry.source import TelemetrySource


async def ticks(
    source: TelemetrySource,
    *,
    interval: float = 1.0,
    count: int | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> AsyncIterator[list[GpuSample]]:
    """Yields `source.sample()` at deadlines in the middle of each `interval`-long slot of the clock.

    Mid-slot deadlines keep scheduling jitter from moving a tick into a neighbouring second, where
    windowing would count one second twice and the next not at all. A tick that overruns skips the
    deadlines it missed instead of sampling in a burst to catch up; a clock that steps back (the chain's, measured
    afresh after its time went back) starts again from its current slot instead of waiting for the old deadline.
    Runs forever unless `count` is given.
    """
    if interval <= 0:
        raise ValueError("interval must be positive")
    deadline = (math.floor(clock() / interval) + 0.5) * interval
    taken = 0
    while count is None or taken < count:
        now = clock()
        if deadline - now > interval:
            deadline = (math.floor(now / interval) + 0.5) * interval
        if deadline < now:
            deadline += math.ceil((now - deadline) / interval) * interval
        await sleep(deadline - now)
        yield await source.sample()
        taken += 1
        deadline += interval
