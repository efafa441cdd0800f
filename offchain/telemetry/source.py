"""The interface every telemetry source implements, and the errors they raise."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType

from offchain.telemetry.models import GpuInfo, GpuSample


class TelemetryError(Exception):
    """Base class of telemetry failures."""


class TelemetryUnavailable(TelemetryError):
    """The source cannot run here: no NVML library, no driver, or no GPU."""


class TraceExhausted(TelemetryError):
    """A replayed trace has no ticks left."""


class TelemetrySource(ABC):
    """Samples every GPU of a machine once per call; used as `async with source: ...`.

    Callers pace the calls (see `offchain.telemetry.ticks`); a source never sleeps between ticks.
    """

    @property
    @abstractmethod
    def simulated(self) -> bool:
        """True unless the samples are live measurements of this machine's GPUs.

        Agents must refuse such a source unless explicitly allowed, and label every report built from it.
        """

    @abstractmethod
    def gpus(self) -> list[GpuInfo]:
        """The GPUs this source samples, in index order."""

    @abstractmethod
    async def sample(self) -> list[GpuSample]:
        """One sample per GPU, all stamped with the same tick time."""

    @abstractmethod
    def close(self) -> None:
        """Releases what the source holds; idempotent."""

    async def __aenter__(self) -> TelemetrySource:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
