"""The GPUs a provider command works on: given by UUID, seen by NVML (the default), or a provider's SIMULATED GPUs
on the devnet (`offchain.telemetry.local`)."""

from __future__ import annotations

import argparse
import os

from offchain.cli import parse
from offchain.cli.args import UsageError
from offchain.cli.network import DEVNET, Context
from offchain.telemetry.local import DEFAULT_SIMULATED_MODEL, local_source
from offchain.telemetry.models import GpuInfo
from offchain.telemetry.simulated import GPU_MODELS
from offchain.telemetry.source import TelemetrySource, TelemetryUnavailable

ALLOW_SIMULATED_ENV = "GPUEX_AGENT_ALLOW_SIMULATED"


def add_gpu_options(parser: argparse.ArgumentParser, by_uuid: bool = True) -> None:
    if by_uuid:
        parser.add_argument(
            "--gpu",
            dest="gpu_uuids",
            action="append",
            metavar="UUID",
            help="a GPU's NVML UUID, e.g. GPU-5f2e...; repeat for more (default: every GPU NVML sees)",
        )
    parser.add_argument(
        "--simulated",
        type=parse.positive_int,
        metavar="N",
        help="N SIMULATED GPUs of the provider instead of NVML's (devnet only)",
    )
    parser.add_argument(
        "--simulated-model",
        default=DEFAULT_SIMULATED_MODEL,
        choices=sorted(GPU_MODELS),
        metavar="MODEL",
        help="the simulated GPUs' model (default %(default)s)",
    )


def simulation_allowed(ctx: Context) -> bool:
    """Simulated telemetry is for the devnet, or where the operator says its oracles accept it."""
    return ctx.network == DEVNET or os.environ.get(ALLOW_SIMULATED_ENV, "").lower() in ("1", "true", "yes")


def telemetry_source(args: argparse.Namespace, ctx: Context, provider: str) -> TelemetrySource:
    """NVML's GPUs, or with `--simulated N` the provider's simulated ones."""
    if args.simulated is not None and not simulation_allowed(ctx):
        raise UsageError(
            f"--simulated is for the devnet; set {ALLOW_SIMULATED_ENV}=true only against oracles "
            "that accept simulated telemetry"
        )
    try:
        return local_source(provider, args.simulated, args.simulated_model)
    except TelemetryUnavailable as exc:
        raise TelemetryUnavailable(f"{exc} (on the devnet, --simulated N stands in for GPUs)") from None


def local_gpus(args: argparse.Namespace, ctx: Context, provider: str) -> list[GpuInfo]:
    """The GPUs named with `--gpu`, else those of `telemetry_source`. GPUs given by UUID have no name or memory."""
    if args.gpu_uuids:
        if args.simulated is not None:
            raise UsageError("--gpu and --simulated exclude each other")
        if len(set(args.gpu_uuids)) != len(args.gpu_uuids):
            raise UsageError("a GPU UUID is given twice")
        return [GpuInfo(index=i, uuid=uuid, name="", mem_total_mib=0) for i, uuid in enumerate(args.gpu_uuids)]
    source = telemetry_source(args, ctx, provider)
    try:
        return source.gpus()
    finally:
        source.close()
