"""The GPUs a provider machine lists and measures: NVML's by default, or a provider's SIMULATED GPUs on the devnet.

A provider's simulated GPUs are seeded by its address, so registering them (`gpuex provider register-gpus
--simulated 2`) and running the agent over them (`gpuex agent run --simulated 2`) see the same UUIDs, and two
providers on one devnet never claim the same card.
"""

from __future__ import annotations

from offchain.telemetry.nvml import NvmlSource
from offchain.telemetry.simulated import SimulatedSource
from offchain.telemetry.source import TelemetrySource

DEFAULT_SIMULATED_MODEL = "NVIDIA H100 80GB HBM3"


def simulated_seed(provider: str) -> int:
    """The simulator seed of a provider's GPUs: the low 32 bits of its address."""
    return int(provider, 16) % 2**32


def local_source(
    provider: str, simulated_gpus: int | None = None, simulated_model: str = DEFAULT_SIMULATED_MODEL
) -> TelemetrySource:
    """This machine's GPUs through NVML, or `simulated_gpus` simulated GPUs of `provider`. Raises
    `TelemetryUnavailable` when NVML cannot run here, `ValueError` for an unknown simulated model."""
    if simulated_gpus is None:
        return NvmlSource()
    return SimulatedSource(simulated_model, simulated_gpus, seed=simulated_seed(provider))
