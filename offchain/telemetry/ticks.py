"""Paces a telemetry source on the wall clock."""

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
    deadlines it missed instead of sampling in a burst to catch up. Runs forever unless `count` is given.
    """
    if interval <= 0:
        raise ValueError("interval must be positive")
    deadline = (math.floor(clock() / interval) + 0.5) * interval
    taken = 0
    while count is None or taken < count:
        now = clock()
        if deadline < now:
            deadline += math.ceil((now - deadline) / interval) * interval
        await sleep(deadline - now)
        yield await source.sample()
        taken += 1
        deadline += interval
