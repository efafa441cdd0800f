"""Live telemetry of this machine's NVIDIA GPUs through NVML (`nvidia-ml-py`); never through nvidia-smi."""

from __future__ import annotations

import asyncio
import importlib
import os
import time
from typing import Any, Callable, Iterable

from offchain.telemetry.models import GpuInfo, GpuSample
from offchain.telemetry.source import TelemetryError, TelemetrySource, TelemetryUnavailable

MIB = 1024 * 1024
DEFAULT_PROCESS_CHECK_EVERY = 10


def _load_pynvml() -> Any:
    try:
        return importlib.import_module("pynvml")
    except ImportError as exc:
        raise TelemetryUnavailable("nvidia-ml-py is not installed (no `pynvml` module)") from exc


class NvmlSource(TelemetrySource):
    """Utilisation, memory, power and temperature of every GPU NVML sees, at each call of `sample`.

    Process lists are slow to read, so whether an expected job process is on a GPU is checked only every
    `process_check_every` ticks (and on the first tick after `expected_pids` changes); other ticks carry
    `job_on_gpu=None`. NVML lists host PIDs: an agent in a container needs the host PID namespace for
    its job's PIDs to match. Memory is reported in MiB, rounded down. GPUs in MIG mode report no utilisation
    and therefore never sample healthy.

    `nvml` is the `pynvml` module, or any object with the same functions and error classes.
    """

    def __init__(
        self,
        *,
        expected_pids: Iterable[int] = (),
        process_check_every: int = DEFAULT_PROCESS_CHECK_EVERY,
        nvml: Any = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if process_check_every < 1:
            raise ValueError("process_check_every must be at least 1")
        self._nvml = nvml if nvml is not None else _load_pynvml()
        self._process_check_every = process_check_every
        self._clock = clock
        try:
            self._nvml.nvmlInit()
        except self._nvml.NVMLError as exc:
            raise TelemetryUnavailable(f"NVML did not start: {exc}") from exc
        try:
            self._handles = [self._nvml.nvmlDeviceGetHandleByIndex(i) for i in range(self._nvml.nvmlDeviceGetCount())]
            self._gpus = [
                GpuInfo(
                    index=i,
                    uuid=self._nvml.nvmlDeviceGetUUID(handle),
                    name=self._nvml.nvmlDeviceGetName(handle),
                    mem_total_mib=self._nvml.nvmlDeviceGetMemoryInfo(handle).total // MIB,
                )
                for i, handle in enumerate(self._handles)
            ]
        except self._nvml.NVMLError as exc:
            self._nvml.nvmlShutdown()
            raise TelemetryUnavailable(f"NVML could not list the GPUs: {exc}") from exc
        if not self._gpus:
            self._nvml.nvmlShutdown()
            raise TelemetryUnavailable("NVML sees no GPU")
        self._open = True
        self.expected_pids = frozenset(expected_pids)

    @property
    def simulated(self) -> bool:
        return False

    @property
    def expected_pids(self) -> frozenset[int]:
        """Processes of the job: a GPU whose compute process list holds any of them has the job on it."""
        return self._expected_pids

    @expected_pids.setter
    def expected_pids(self, pids: Iterable[int]) -> None:
        self._expected_pids = frozenset(pids)
        self._tick = 0

    def gpus(self) -> list[GpuInfo]:
        return list(self._gpus)

    async def sample(self) -> list[GpuSample]:
        if not self._open:
            raise TelemetryError("NvmlSource is closed")
        pids = self._expected_pids if self._tick % self._process_check_every == 0 else None
        self._tick += 1
        # A GPU that is falling off the bus can hold an NVML call for seconds: keep it off the event loop.
        return await asyncio.to_thread(self._read_all, self._clock(), pids)

    def close(self) -> None:
        if self._open:
            self._open = False
            self._nvml.nvmlShutdown()

    def _read_all(self, timestamp: float, pids: frozenset[int] | None) -> list[GpuSample]:
        """`pids` is None on ticks that skip the process check; an empty set means no job is expected."""
        return [
            self._read_one(info, handle, timestamp, pids)
            for info, handle in zip(self._gpus, self._handles, strict=True)
        ]

    def _read_one(self, info: GpuInfo, handle: Any, timestamp: float, pids: frozenset[int] | None) -> GpuSample:
        readings: dict[str, Any] = {}
        try:
            utilization = self._supported(self._nvml.nvmlDeviceGetUtilizationRates, handle)
            if utilization is not None:
                readings["gpu_util_pct"] = utilization.gpu
                readings["mem_util_pct"] = utilization.memory
            memory = self._supported(self._nvml.nvmlDeviceGetMemoryInfo, handle)
            if memory is not None:
                readings["mem_used_mib"] = memory.used // MIB
                readings["mem_total_mib"] = memory.total // MIB
            power_mw = self._supported(self._nvml.nvmlDeviceGetPowerUsage, handle)
            readings["power_w"] = None if power_mw is None else power_mw / 1000
            readings["temp_c"] = self._supported(
                self._nvml.nvmlDeviceGetTemperature, handle, self._nvml.NVML_TEMPERATURE_GPU
            )
            if pids:
                processes = self._supported(self._nvml.nvmlDeviceGetComputeRunningProcesses, handle)
                if processes is not None:
                    readings["job_on_gpu"] = any(_in_job(p.pid, pids) for p in processes)
        except self._nvml.NVMLError as exc:
            readings["error"] = f"{type(exc).__name__}: {exc}"
        return GpuSample(
            timestamp=timestamp,
            gpu_index=info.index,
            uuid=info.uuid,
            name=info.name,
            source="nvml",
            **readings,
        )

    def _supported(self, read: Callable[..., Any], *args: Any) -> Any:
        """The reading, or None where the device does not support it."""
        try:
            return read(*args)
        except self._nvml.NVMLError_NotSupported:
            return None


def _in_job(pid: int, job_pids: frozenset[int]) -> bool:
    """Whether `pid` is one of the job's processes: listed itself, or in the process group of a listed process
    (the agent lists the job's group leader; the GPU work usually runs in a child)."""
    if pid in job_pids:
        return True
    try:
        return os.getpgid(pid) in job_pids
    except OSError:  # gone, or not visible from here (another PID namespace)
        return False
