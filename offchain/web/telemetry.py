"""The JSON of `GET /web/api/rentals/{id}/telemetry`: the per-GPU figures of a rental's report periods that the
oracle serving the page holds (`offchain.protocol.gpustats`), live between the on-chain checkpoints, in the
page's units: utilisation in percent, power in watts, memory in MiB, temperature in degrees Celsius.

The figures are the provider's own agent's word, signed by its key: an oracle checked the signature, nothing
checked the figures (SECURITY.md).
"""

from __future__ import annotations

from typing import Callable

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from offchain.protocol.gpustats import GpuPeriod, GpuPeriodStats

#: Points one answer holds at most (an oracle keeps as many per rental).
MAX_POINTS = 500

#: What the page reads the figures from: (rental id, seq after which to start, at most how many) -> the rental's
#: highest seq with figures (None when none) and its periods above that seq, oldest first.
GpuPeriodReader = Callable[[int, int, int], tuple[int | None, list[GpuPeriod]]]
GPU_PERIODS: web.AppKey[GpuPeriodReader] = web.AppKey("gpu_periods")


class _View(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GpuView(_View):
    uuid: str
    util_pct: float | None  # mean over the period
    mem_used_mib: int | None  # peak over the period
    mem_total_mib: int | None
    power_w: float | None  # mean over the period
    temp_c: int | None  # highest over the period
    samples: int

    @classmethod
    def of(cls, gpu: GpuPeriodStats) -> GpuView:
        return cls(
            uuid=gpu.uuid,
            util_pct=None if gpu.util_bps is None else gpu.util_bps / 100,
            mem_used_mib=gpu.mem_used_mib,
            mem_total_mib=gpu.mem_total_mib,
            power_w=None if gpu.power_mw is None else gpu.power_mw / 1000,
            temp_c=gpu.temp_c,
            samples=gpu.samples,
        )


class TelemetryPoint(_View):
    """One report period [period_start, covered_until) of the rental."""

    seq: int
    period_start: int
    covered_until: int
    gpus: list[GpuView]


class TelemetryPage(_View):
    """The body of the endpoint: points oldest first; `latest_seq` is the highest seq with figures, whatever
    `since` was (None when there are none)."""

    rental_id: str  # decimal: rental ids exceed what a JavaScript number holds exactly
    latest_seq: int | None
    points: list[TelemetryPoint]

    @classmethod
    def of(cls, rental_id: int, latest_seq: int | None, periods: list[GpuPeriod]) -> TelemetryPage:
        return cls(
            rental_id=str(rental_id),
            latest_seq=latest_seq,
            points=[
                TelemetryPoint(
                    seq=p.seq,
                    period_start=p.period_start,
                    covered_until=p.covered_until,
                    gpus=[GpuView.of(g) for g in p.gpus],
                )
                for p in periods
            ],
        )
