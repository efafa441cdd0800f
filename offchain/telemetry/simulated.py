"""SIMULATED telemetry: made-up GPUs for development, demos and tests on machines without NVML.

Every sample says `source="simulated"` and the source says `simulated=True`; agents refuse it unless
explicitly allowed. Nothing here measures anything.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Sequence

from pydantic import BaseModel, ConfigDict, Field, model_validator

from offchain.telemetry.models import GpuInfo, GpuSample
from offchain.telemetry.source import TelemetrySource

log = logging.getLogger(__name__)

OUTAGE_ERROR = "simulated outage"


@dataclass(frozen=True)
class SimulatedGpuModel:
    """What the simulator needs of a GPU model; `name` is what NVML reports for it."""

    name: str
    mem_total_mib: int
    idle_power_w: float
    max_power_w: float


GPU_MODELS: dict[str, SimulatedGpuModel] = {
    model.name: model
    for model in (
        SimulatedGpuModel("NVIDIA H100 80GB HBM3", 81_559, 70.0, 700.0),
        SimulatedGpuModel("NVIDIA A100-SXM4-80GB", 81_920, 55.0, 400.0),
        SimulatedGpuModel("NVIDIA L4", 23_034, 16.0, 72.0),
        SimulatedGpuModel("NVIDIA GeForce RTX 4090", 24_564, 25.0, 450.0),
    )
}


class Outage(BaseModel):
    """A GPU sampling unhealthy from `start_s` up to (not including) `end_s`, counted from the first tick."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpu_index: int = Field(ge=0)
    start_s: float = Field(ge=0)
    end_s: float

    @model_validator(mode="after")
    def _ordered(self) -> Outage:
        if self.end_s <= self.start_s:
            raise ValueError("an outage must end after it starts")
        return self


class _SimulatedGpu:
    """One GPU running a training-like job: a warm-up ramp, then a noisy plateau with periodic dips."""

    def __init__(self, index: int, model: SimulatedGpuModel, rng: random.Random) -> None:
        self.info = GpuInfo(
            index=index,
            uuid=f"GPU-{uuid.UUID(int=rng.getrandbits(128), version=4)}",
            name=model.name,
            mem_total_mib=model.mem_total_mib,
        )
        self._model = model
        self._rng = random.Random(rng.getrandbits(64))
        self._target_util = self._rng.uniform(85, 98)
        self._warmup_s = self._rng.uniform(5, 15)
        self._dip_period_s = self._rng.uniform(45, 75)
        self._dip_length_s = self._rng.uniform(3, 6)
        self._dip_phase_s = self._rng.uniform(0, self._dip_period_s)
        self._working_set_mib = model.mem_total_mib * self._rng.uniform(0.55, 0.9)
        self._mem_util_ratio = self._rng.uniform(0.35, 0.7)
        self._temp_c = self._rng.uniform(28, 34)

    def sample(self, timestamp: float, elapsed_s: float) -> GpuSample:
        rng, model = self._rng, self._model
        ramp = min(1.0, elapsed_s / self._warmup_s)
        if (elapsed_s + self._dip_phase_s) % self._dip_period_s < self._dip_length_s:
            util = rng.uniform(5, 30)
        else:
            util = self._target_util * ramp + rng.gauss(0, 3)
        util = min(100.0, max(0.0, util))
        mem_used = 500 + (self._working_set_mib - 500) * ramp + rng.gauss(0, model.mem_total_mib * 0.002)
        power = model.idle_power_w + (model.max_power_w - model.idle_power_w) * (util / 100) ** 0.9
        power = min(model.max_power_w, max(model.idle_power_w * 0.8, power + rng.gauss(0, model.max_power_w * 0.02)))
        # The die heats towards a power-dependent level with a lag of a few seconds.
        self._temp_c += 0.15 * (30 + 50 * power / model.max_power_w - self._temp_c)
        return GpuSample(
            timestamp=timestamp,
            gpu_index=self.info.index,
            uuid=self.info.uuid,
            name=model.name,
            gpu_util_pct=round(util),
            mem_util_pct=round(min(100.0, max(0.0, util * self._mem_util_ratio + rng.gauss(0, 2)))),
            mem_used_mib=min(model.mem_total_mib, max(0, round(mem_used))),
            mem_total_mib=model.mem_total_mib,
            power_w=round(power, 3),
            temp_c=round(self._temp_c),
            source="simulated",
        )

    def outage_sample(self, timestamp: float) -> GpuSample:
        return GpuSample(
            timestamp=timestamp,
            gpu_index=self.info.index,
            uuid=self.info.uuid,
            name=self._model.name,
            error=OUTAGE_ERROR,
            source="simulated",
        )


class SimulatedSource(TelemetrySource):
    """SIMULATED: `gpu_count` GPUs of model `model` (a key of `GPU_MODELS`), seeded by `seed`.

    With `start`, time is virtual: tick k is stamped `start + k * interval` and the whole sequence is a
    function of the arguments alone. Without it, ticks are stamped with `clock()` and outages count from
    the first tick. The process list is never simulated: `job_on_gpu` is always None.
    """

    def __init__(
        self,
        model: str = "NVIDIA H100 80GB HBM3",
        gpu_count: int = 8,
        *,
        seed: int = 0,
        start: float | None = None,
        interval: float = 1.0,
        outages: Sequence[Outage] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        if model not in GPU_MODELS:
            raise ValueError(f"unknown GPU model {model!r}; simulated models: {', '.join(GPU_MODELS)}")
        if gpu_count < 1:
            raise ValueError("gpu_count must be at least 1")
        if interval <= 0:
            raise ValueError("interval must be positive")
        if any(outage.gpu_index >= gpu_count for outage in outages):
            raise ValueError(f"an outage names a GPU index beyond {gpu_count - 1}")
        rng = random.Random(seed)
        self._gpus = [_SimulatedGpu(i, GPU_MODELS[model], rng) for i in range(gpu_count)]
        self._start = start
        self._interval = interval
        self._outages = tuple(outages)
        self._clock = clock
        self._tick = 0
        self._first_timestamp: float | None = None
        log.warning("SIMULATED telemetry: %d x %s (seed %d); no GPU is measured", gpu_count, model, seed)

    @property
    def simulated(self) -> bool:
        return True

    def gpus(self) -> list[GpuInfo]:
        return [gpu.info for gpu in self._gpus]

    async def sample(self) -> list[GpuSample]:
        timestamp = self._clock() if self._start is None else self._start + self._tick * self._interval
        self._tick += 1
        if self._first_timestamp is None:
            self._first_timestamp = timestamp
        elapsed_s = timestamp - self._first_timestamp
        return [
            gpu.outage_sample(timestamp)
            if self._in_outage(gpu.info.index, elapsed_s)
            else gpu.sample(timestamp, elapsed_s)
            for gpu in self._gpus
        ]

    def close(self) -> None:
        """Nothing to release."""

    def _in_outage(self, gpu_index: int, elapsed_s: float) -> bool:
        return any(o.gpu_index == gpu_index and o.start_s <= elapsed_s < o.end_s for o in self._outages)
