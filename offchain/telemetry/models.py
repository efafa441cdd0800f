"""What telemetry sources produce: one `GpuSample` per GPU per tick, and its canonical bytes for hashing."""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SampleSource = Literal["nvml", "replay", "simulated"]

# Bounds past which a reading is a broken sensor or driver, not a GPU at work. Generous on purpose: the
# hungriest current parts draw about 1.2 kW and throttle near 90 °C.
MAX_SANE_POWER_W = 2_000.0
MAX_SANE_TEMP_C = 120


class GpuInfo(BaseModel):
    """A GPU a source can see."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    index: int = Field(ge=0)
    uuid: str = Field(min_length=1)
    name: str
    mem_total_mib: int = Field(ge=0)


class GpuSample(BaseModel):
    """The readings of one GPU at one tick.

    The model holds what the driver said, sane or not; `healthy` judges it. A metric the device does not
    support (NVML `NotSupported`) is None; any other NVML failure on this GPU sets `error` and leaves the
    metrics it could not read None.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    timestamp: float = Field(ge=0, description="unix seconds of the tick; all GPUs of one tick share it")
    gpu_index: int = Field(ge=0)
    uuid: str = Field(min_length=1)
    name: str
    gpu_util_pct: int | None = None
    mem_util_pct: int | None = None
    mem_used_mib: int | None = None
    mem_total_mib: int | None = None
    power_w: float | None = None
    temp_c: int | None = None
    job_on_gpu: bool | None = Field(
        default=None,
        description="whether an expected job process holds this GPU; None when not checked this tick",
    )
    error: str | None = Field(default=None, description="why NVML could not read this GPU at this tick")
    source: SampleSource

    @property
    def healthy(self) -> bool:
        """Whether the GPU was reachable and every reading is physically plausible.

        `job_on_gpu` does not count: a job may not have opened its CUDA context yet, and process lists are
        only read every few ticks.
        """
        if self.error is not None:
            return False
        if self.gpu_util_pct is None or self.mem_util_pct is None:
            return False
        if self.mem_used_mib is None or self.mem_total_mib is None:
            return False
        if not (0 <= self.gpu_util_pct <= 100 and 0 <= self.mem_util_pct <= 100):
            return False
        if not (self.mem_total_mib > 0 and 0 <= self.mem_used_mib <= self.mem_total_mib):
            return False
        if self.power_w is not None and not 0 <= self.power_w <= MAX_SANE_POWER_W:
            return False
        return self.temp_c is None or 0 <= self.temp_c <= MAX_SANE_TEMP_C

    def canonical_bytes(self) -> bytes:
        """The bytes a Merkle leaf hashes: compact JSON with sorted keys, ASCII only, integers only.

        Floats are fixed to integers (timestamp in milliseconds, power in milliwatts, rounded half to even)
        so that any language reproduces the bytes exactly: Python's
        `json.dumps(obj, sort_keys=True, separators=(",", ":"))`, non-ASCII escaped as `\\uXXXX`, `null`
        for absent readings. `source` is included, so a simulated sample never hashes like a measured one.
        """
        fields = {
            "error": self.error,
            "gpu_index": self.gpu_index,
            "gpu_util_pct": self.gpu_util_pct,
            "job_on_gpu": self.job_on_gpu,
            "mem_total_mib": self.mem_total_mib,
            "mem_used_mib": self.mem_used_mib,
            "mem_util_pct": self.mem_util_pct,
            "name": self.name,
            "power_mw": None if self.power_w is None else round(self.power_w * 1000),
            "source": self.source,
            "temp_c": self.temp_c,
            "timestamp_ms": round(self.timestamp * 1000),
            "uuid": self.uuid,
        }
        return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")
