"""A stand-in for `pynvml`, injected as `NvmlSource(nvml=...)`: the same functions and error classes."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

MIB = 1024 * 1024


class NVMLError(Exception):
    pass


class NVMLError_NotSupported(NVMLError):  # noqa: N801 - pynvml's name
    pass


class NVMLError_GpuIsLost(NVMLError):  # noqa: N801 - pynvml's name
    pass


class NVMLError_LibraryNotFound(NVMLError):  # noqa: N801 - pynvml's name
    pass


@dataclass
class FakeGpu:
    """One GPU's current readings; `power_mw=None` means the device does not support power readings."""

    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    gpu_util: int = 90
    mem_util: int = 40
    mem_used_bytes: int = 40_000 * MIB
    mem_total_bytes: int = 81_559 * MIB
    power_mw: int | None = 612_345
    temp_c: int = 64
    pids: list[int] = field(default_factory=list)
    lost: bool = False


class FakeNvml:
    """Module-like object over a list of `FakeGpu`; handles are indices. Counts the calls tests check."""

    NVMLError = NVMLError
    NVMLError_NotSupported = NVMLError_NotSupported
    NVML_TEMPERATURE_GPU = 0

    def __init__(self, gpus: list[FakeGpu], init_error: NVMLError | None = None) -> None:
        self.gpus = gpus
        self.init_error = init_error
        self.initialised = False
        self.shutdowns = 0
        self.process_list_calls = 0

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise self.init_error
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1
        self.initialised = False

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def _gpu(self, handle: int) -> FakeGpu:
        assert self.initialised, "NVML called before nvmlInit or after nvmlShutdown"
        gpu = self.gpus[handle]
        if gpu.lost:
            raise NVMLError_GpuIsLost("GPU is lost")
        return gpu

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return self._gpu(handle).uuid

    def nvmlDeviceGetName(self, handle: int) -> str:
        return self._gpu(handle).name

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> SimpleNamespace:
        gpu = self._gpu(handle)
        return SimpleNamespace(gpu=gpu.gpu_util, memory=gpu.mem_util)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:
        gpu = self._gpu(handle)
        return SimpleNamespace(
            total=gpu.mem_total_bytes, used=gpu.mem_used_bytes, free=gpu.mem_total_bytes - gpu.mem_used_bytes
        )

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        gpu = self._gpu(handle)
        if gpu.power_mw is None:
            raise NVMLError_NotSupported("Not Supported")
        return gpu.power_mw

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        assert sensor == self.NVML_TEMPERATURE_GPU
        return self._gpu(handle).temp_c

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[SimpleNamespace]:
        self.process_list_calls += 1
        return [SimpleNamespace(pid=pid, usedGpuMemory=None) for pid in self._gpu(handle).pids]
