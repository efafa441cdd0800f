"""Pacing a source on a clock."""

from __future__ import annotations

import asyncio

import pytest

from offchain.telemetry.simulated import SimulatedSource
from offchain.telemetry.ticks import ticks


class FakeClock:
    """A clock that `sleep` advances; `work` is how long each sample takes."""

    def __init__(self, now: float, work: float = 0.0) -> None:
        self.now = now
        self.work = work
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class ClockedSource(SimulatedSource):
    """Stamps ticks with the fake clock, then spends `clock.work` seconds."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(gpu_count=1, clock=clock)
        self._fake_clock = clock

    async def sample(self):
        samples = await super().sample()
        self._fake_clock.now += self._fake_clock.work
        return samples


def _stamps(clock: FakeClock, count: int, interval: float = 1.0) -> list[float]:
    async def run():
        return [
            tick[0].timestamp
            async for tick in ticks(
                ClockedSource(clock), interval=interval, count=count, clock=clock, sleep=clock.sleep
            )
        ]

    return asyncio.run(run())


def test_ticks_fall_in_the_middle_of_each_second():
    assert _stamps(FakeClock(1_000.7, work=0.01), 4) == [1_001.5, 1_002.5, 1_003.5, 1_004.5]


def test_first_tick_waits_for_the_middle_of_the_current_second_when_it_is_still_ahead():
    clock = FakeClock(1_000.2)

    assert _stamps(clock, 2) == [1_000.5, 1_001.5]
    assert clock.sleeps == pytest.approx([0.3, 1.0])


def test_an_overrunning_tick_skips_missed_deadlines_instead_of_bursting():
    clock = FakeClock(1_000.5, work=2.2)

    assert _stamps(clock, 3) == [1_000.5, 1_003.5, 1_006.5]


def test_a_clock_that_steps_back_starts_again_from_its_current_slot():
    clock = FakeClock(1_000.5)

    async def run():
        stamps = []
        async for tick in ticks(ClockedSource(clock), count=3, clock=clock, sleep=clock.sleep):
            stamps.append(tick[0].timestamp)
            if len(stamps) == 1:
                clock.now -= 100.2  # the chain's time went back: no 100 s wait for the old schedule
        return stamps

    assert asyncio.run(run()) == [1_000.5, 900.5, 901.5]
    assert max(clock.sleeps) <= 1.0


def test_interval_sets_the_slot_length():
    assert _stamps(FakeClock(10.0), 3, interval=0.5) == [10.25, 10.75, 11.25]


def test_interval_must_be_positive():
    async def first():
        return await ticks(SimulatedSource(gpu_count=1), interval=0).__anext__()

    with pytest.raises(ValueError, match="positive"):
        asyncio.run(first())
