"""The chain's clock, as the agent keeps it: this machine's clock plus an offset measured from block timestamps.

A rental runs on chain time: its start (`since`) and end are block timestamps, and the escrow bills the seconds
[since, coveredUntil). An agent that stamped its samples and report periods with its own clock would, with a clock
20 s fast, have no sample for the rental's first 20 s and end its completion report 20 s after its job did: the
oracles take such reports (their tolerance is 30 s) and the escrow slashes the provider for the seconds missed.
So the agent stamps everything a report carries with `ChainClock.now()`, and converts what its telemetry source
stamped (`to_chain`) and what the container engine stamped (`from_system_time`).

How the offset is measured. Every `measure()` reads the latest block and the pending one. A block seen at local
time `t` carries a timestamp no later than the chain's time at `t` (a block is stamped when it is made, before
anyone sees it), so `timestamp - t` is a lower bound of the offset; it is tight for a block just made and loose for
an old one, and timestamps are whole seconds, which adds up to one second of slack. The estimate is the largest of
these bounds over the last `window_seconds`: never ahead of the chain, within the polling interval plus a second
of it on a live chain, and unaffected by a chain that sits idle (an old latest block only gives a loose bound that
the max ignores). Staying behind rather than ahead is the safe side: the agent samples from before it sends the
rental's start, so a clock behind by a fraction of a second still has a sample in the first billed second, while
one ahead would stamp that sample after it; and a report never covers a second the chain has not reached.

What the two blocks give, by node:

- anvil (tests and development) mines a block per transaction or at an interval, and moves its time with
  `evm_increaseTime`; its pending block is stamped with the time a block mined now would get, so it measures the
  offset at once even on an idle chain, and its latest block catches a jump of the chain's time when it is mined.
  A snapshot revert or `evm_setTime` can take the chain's time back: a latest block lower in number or
  time than one seen before starts the measurement afresh.
- A live chain (a block every 2 to 12 s) gives a fresh latest block every few polls; its pending block is built on
  the node's clock or is the latest block again, a lower bound either way; a node that has none is read for the
  latest block only.

The window lets the estimate fall when this machine's clock is stepped forward; a bound leaves it only when a newer
one comes, so a node that answers nothing keeps the estimate where it was. The offset is judged against
`max_skew_seconds`: beyond it (`skewed`) the machine's clock or its chain node is badly wrong and the agent cannot
tell which, so it logs an ERROR (again every `SKEW_LOG_INTERVAL_SECONDS` while it lasts), shows it in its status,
and declines new rentals; rentals it already runs keep reporting on the measured chain time, which is the best
measure it has.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

from web3 import AsyncWeb3
from web3.exceptions import BlockNotFound, Web3RPCError

from offchain.chain.rpc import reach
from offchain.protocol.renterapi import ClockStatus

log = logging.getLogger(__name__)

#: How long a lower bound of the offset counts towards the estimate.
DEFAULT_WINDOW_SECONDS = 120.0
#: How often the ERROR about a skew beyond the bound is repeated while it lasts.
SKEW_LOG_INTERVAL_SECONDS = 60.0


@dataclass(frozen=True)
class _Bound:
    offset: float  # block timestamp - local time the block was seen: at most the true offset
    seen_at: float  # monotonic time it was seen


class ChainClock:
    """Chain time for an agent whose machine reads `clock` (the system clock unless a test gives another)."""

    def __init__(
        self,
        w3: AsyncWeb3,
        *,
        max_skew_seconds: float,
        clock: Callable[[], float] = time.time,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_skew_seconds <= 0 or window_seconds <= 0:
            raise ValueError("max_skew_seconds and window_seconds must be positive")
        self._w3 = w3
        self._clock = clock
        self._monotonic = monotonic
        self.max_skew_seconds = max_skew_seconds
        self._window = window_seconds
        self._bounds: deque[_Bound] = deque()
        self._latest: tuple[int, int] | None = None  # (number, timestamp) of the newest latest block seen
        self._skew_logged_at: float | None = None

    @property
    def synchronised(self) -> bool:
        return bool(self._bounds)

    @property
    def offset(self) -> float:
        """Chain time minus this machine's clock, as measured; 0 until a block has been seen."""
        return max((bound.offset for bound in self._bounds), default=0.0)

    @property
    def skewed(self) -> bool:
        return self.synchronised and abs(self.offset) > self.max_skew_seconds

    def now(self) -> float:
        """The chain's time now: what a block made now would be stamped, to within the measurement."""
        return self._clock() + self.offset

    def to_chain(self, local_time: float) -> float:
        """The chain time of an instant this machine's clock read as `local_time` (a telemetry sample's stamp)."""
        return local_time + self.offset

    def from_system_time(self, system_time: float, system_clock: Callable[[], float] = time.time) -> float:
        """The chain time of an instant the operating system's clock stamped (the container engine's start and
        finish times), by how long ago it was: the same as `to_chain` when the agent runs on the system clock."""
        return self.now() - max(0.0, system_clock() - system_time)

    def status(self) -> ClockStatus:
        return ClockStatus(
            synchronised=self.synchronised,
            offset_seconds=round(self.offset, 3),
            max_skew_seconds=self.max_skew_seconds,
            skewed=self.skewed,
        )

    async def measure(self) -> None:
        """Reads the latest and the pending block and takes the bounds they give; raises what the node raised
        when it gave neither. Logs a skew beyond the bound (see the module docstring)."""
        latest, pending = await asyncio.gather(
            reach(self._w3.eth.get_block("latest")), self._pending(), return_exceptions=True
        )
        if isinstance(latest, BaseException) and (isinstance(pending, BaseException) or pending is None):
            raise latest
        seen_at = self._clock()
        if not isinstance(latest, BaseException):
            self.observe_latest(int(latest["number"]), int(latest["timestamp"]), seen_at)
        if isinstance(pending, int) and (self._latest is None or pending > self._latest[1]):
            self.observe(pending, seen_at)  # a pending block stamped as the latest one tells nothing more
        self._report_skew()

    async def _pending(self) -> int | None:
        """The pending block's timestamp, or None where the node keeps no pending block."""
        try:
            block = await reach(self._w3.eth.get_block("pending"))
        except (BlockNotFound, Web3RPCError):
            return None
        return int(block["timestamp"])

    def observe_latest(self, number: int, timestamp: int, seen_at: float) -> None:
        """Takes the chain's latest block, seen at local time `seen_at`; one lower in number or time than the newest
        seen before means the chain's time went back (a revert on a development chain, a reorg), and the bounds
        measured before it no longer hold."""
        if self._latest is not None and (number < self._latest[0] or timestamp < self._latest[1]):
            log.warning(
                "chain clock: block %d at %d follows block %d at %d: measuring the offset afresh",
                number,
                timestamp,
                *self._latest,
            )
            self._bounds.clear()
        elif self._latest is not None and number == self._latest[0]:
            return  # the same block seen later: a looser bound than the one it gave when new
        self._latest = (number, timestamp)
        self.observe(timestamp, seen_at)

    def observe(self, timestamp: int, seen_at: float) -> None:
        """Takes a block stamped `timestamp` that was seen at local time `seen_at`."""
        now = self._monotonic()
        self._bounds.append(_Bound(timestamp - seen_at, now))
        while len(self._bounds) > 1 and self._bounds[0].seen_at < now - self._window:
            self._bounds.popleft()

    def _report_skew(self) -> None:
        if not self.skewed:
            if self._skew_logged_at is not None:
                log.warning(
                    "chain clock: this machine's clock is within %.0f s of the chain's again (offset %+.1f s)",
                    self.max_skew_seconds,
                    self.offset,
                )
                self._skew_logged_at = None
            return
        now = self._monotonic()
        if self._skew_logged_at is None or now - self._skew_logged_at >= SKEW_LOG_INTERVAL_SECONDS:
            self._skew_logged_at = now
            log.error(
                "chain clock: this machine's clock is %.1f s %s the chain's, beyond the %.0f s allowed: new rentals "
                "are declined until it is fixed (check the machine's time synchronisation and that the chain node "
                "is in sync)",
                abs(self.offset),
                "behind" if self.offset > 0 else "ahead of",
                self.max_skew_seconds,
            )
