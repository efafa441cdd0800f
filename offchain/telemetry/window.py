"""Turns the samples of one report period into the figures a telemetry report carries, and adds them up into the
rental's cumulative totals."""

from __future__ import annotations

import math
from collections import defaultdict
from fractions import Fraction
from typing import Collection, Iterable, Sequence

from pydantic import BaseModel, ConfigDict, Field, model_validator

from offchain.protocol.gpustats import GpuPeriodStats
from offchain.telemetry.merkle import merkle_root, sorted_leaves
from offchain.telemetry.models import GpuSample


class WindowSummary(BaseModel):
    """What one report period [period_start, period_end) delivered on the offer's GPUs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    period_start: int = Field(ge=0)
    period_end: int = Field(ge=0)
    delivered_seconds: int = Field(
        ge=0, description="seconds in which every GPU of the offer sampled, and sampled healthy"
    )
    util_seconds: Fraction = Field(
        description="delivered seconds weighted by the GPUs' mean utilisation in each, exactly (not rounded)"
    )
    peak_mem_mib: int = Field(ge=0, description="most memory any one GPU used in a healthy sample")
    sample_count: int = Field(ge=0, description="samples of the offer's GPUs in the period, healthy or not")
    samples_root: bytes = Field(min_length=32, max_length=32, description="Merkle root over those samples")
    simulated: bool = Field(description="whether any of those samples is not a live NVML measurement")

    @model_validator(mode="after")
    def _period(self) -> WindowSummary:
        if self.period_end < self.period_start:
            raise ValueError("the period ends before it starts")
        if self.delivered_seconds > self.period_end - self.period_start:
            raise ValueError("more seconds delivered than the period holds")
        if not 0 <= self.util_seconds <= self.delivered_seconds:
            raise ValueError("utilisation-weighted seconds outside [0, delivered seconds]")
        return self

    @property
    def avg_util_bps(self) -> int:
        """Mean GPU utilisation over the delivered seconds and GPUs, rounded down (0 when nothing was delivered)."""
        return math.floor(self.util_seconds * 10_000 / self.delivered_seconds) if self.delivered_seconds else 0


class UsageTotals(BaseModel):
    """A rental's usage from its start, as its cumulative reports carry it. The utilisation-weighted seconds are
    kept exact and only the reported figure is rounded down, so totals added up over any number of periods equal
    the totals of all their samples at once: no rounding drift from one report to the next."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    delivered_seconds: int = Field(default=0, ge=0)
    util_seconds: Fraction = Fraction(0)

    def plus(self, summary: WindowSummary) -> UsageTotals:
        """These totals with one more period's summary added."""
        return UsageTotals(
            delivered_seconds=self.delivered_seconds + summary.delivered_seconds,
            util_seconds=self.util_seconds + summary.util_seconds,
        )

    @property
    def reported_util_seconds(self) -> int:
        """The utilisation-weighted seconds a report carries: the exact total, rounded down."""
        return math.floor(self.util_seconds)


def summarize(samples: Iterable[GpuSample], gpu_uuids: Collection[str], start: int, end: int) -> WindowSummary:
    """The summary of [start, end) over the GPUs `gpu_uuids`.

    A sample belongs to the second `floor(timestamp)`. A second is delivered when each GPU of the offer
    has at least one sample in it and all of that GPU's samples in it are healthy; a GPU missing for a
    second takes that second away. Samples of other GPUs and outside the period are ignored. Utilisation
    averages each GPU's samples within a second, then the GPUs; the delivered seconds' utilisations are summed
    in exact arithmetic, so every party that holds the same samples gets the same figures.
    """
    if not gpu_uuids:
        raise ValueError("an offer has at least one GPU")
    if end < start:
        raise ValueError("the period ends before it starts")
    expected = frozenset(gpu_uuids)
    in_period = [s for s in samples if s.uuid in expected and start <= s.timestamp < end]

    by_second: dict[int, dict[str, list[GpuSample]]] = defaultdict(lambda: defaultdict(list))
    for sample in in_period:
        by_second[math.floor(sample.timestamp)][sample.uuid].append(sample)

    delivered = 0
    util_pct_sum = Fraction(0)
    for per_gpu in by_second.values():
        if per_gpu.keys() != expected or not all(s.healthy for gpu in per_gpu.values() for s in gpu):
            continue
        delivered += 1
        # Healthy samples carry every reading (GpuSample.healthy), so `or 0` never stands in for one.
        gpu_means = (Fraction(sum(s.gpu_util_pct or 0 for s in gpu), len(gpu)) for gpu in per_gpu.values())
        util_pct_sum += sum(gpu_means, Fraction(0)) / len(expected)

    return WindowSummary(
        period_start=start,
        period_end=end,
        delivered_seconds=delivered,
        util_seconds=util_pct_sum / 100,
        peak_mem_mib=max((s.mem_used_mib or 0 for s in in_period if s.healthy), default=0),
        sample_count=len(in_period),
        samples_root=merkle_root(sorted_leaves(in_period)),
        simulated=any(s.source != "nvml" for s in in_period),
    )


def gpu_period_stats(
    samples: Iterable[GpuSample], gpu_uuids: Sequence[str], start: int, end: int
) -> tuple[GpuPeriodStats, ...]:
    """Each of `gpu_uuids`' figures over [start, end), in that order: how many samples it had, and from its healthy
    ones (`GpuSample.healthy`) the mean utilisation and power, the peak memory used, its memory and the highest
    temperature (None where no healthy sample carried the reading)."""
    by_gpu: dict[str, list[GpuSample]] = {uuid: [] for uuid in gpu_uuids}
    for sample in samples:
        if sample.uuid in by_gpu and start <= sample.timestamp < end:
            by_gpu[sample.uuid].append(sample)
    return tuple(_gpu_stats(uuid, gpu_samples) for uuid, gpu_samples in by_gpu.items())


def _gpu_stats(uuid: str, samples: list[GpuSample]) -> GpuPeriodStats:
    healthy = [s for s in samples if s.healthy]
    utils = [s.gpu_util_pct for s in healthy if s.gpu_util_pct is not None]
    powers = [s.power_w for s in healthy if s.power_w is not None]
    return GpuPeriodStats(
        uuid=uuid,
        samples=len(samples),
        util_bps=round(Fraction(sum(utils), len(utils)) * 100) if utils else None,
        mem_used_mib=max((s.mem_used_mib for s in healthy if s.mem_used_mib is not None), default=None),
        mem_total_mib=max((s.mem_total_mib for s in healthy if s.mem_total_mib is not None), default=None),
        power_mw=round(sum(powers) * 1000 / len(powers)) if powers else None,
        temp_c=max((s.temp_c for s in healthy if s.temp_c is not None), default=None),
    )
