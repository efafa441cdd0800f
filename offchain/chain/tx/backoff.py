"""Retry pacing of polling loops."""

from __future__ import annotations

import asyncio
from typing import Any, Sequence


class Backoff:
    """Exponential backoff of a polling loop: `interval` while healthy, `interval * 2**failures` (at most
    `max_delay`) after consecutive failures."""

    def __init__(self, interval: float, max_delay: float):
        self.interval = interval
        self.max_delay = max_delay
        self.failures = 0

    @property
    def delay(self) -> float:
        if self.failures == 0:
            return self.interval
        return min(self.interval * 2.0**self.failures, self.max_delay)

    def failed(self) -> None:
        self.failures += 1

    def succeeded(self) -> None:
        self.failures = 0


async def wait_any(awaitables: Sequence[Any], timeout: float) -> None:
    """Returns when the first of `awaitables` completes or after `timeout` seconds; cancels the rest."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
