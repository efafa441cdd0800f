"""Shared by the telemetry tests."""

from __future__ import annotations

import asyncio

from offchain.telemetry.models import GpuSample
from offchain.telemetry.nvml import NvmlSource
from offchain.telemetry.source import TelemetrySource, TelemetryUnavailable


def _real_nvml_problem() -> str | None:
    try:
        NvmlSource().close()
    except TelemetryUnavailable as exc:
        return str(exc)
    return None


REAL_NVML_PROBLEM = _real_nvml_problem()
"""Why this machine's NVML cannot be used, or None where it can (tests that need it skip on the reason)."""


def take(source: TelemetrySource, ticks: int) -> list[list[GpuSample]]:
    """The next `ticks` ticks of a source, sampled back to back."""

    async def collect() -> list[list[GpuSample]]:
        return [await source.sample() for _ in range(ticks)]

    return asyncio.run(collect())
