"""Records a telemetry trace: `python -m offchain.telemetry.record --seconds 60 --out trace.jsonl`.

Reads the real GPUs through NVML by default. `--source simulated` writes a SIMULATED trace instead; with
`--start` its clock is virtual and the trace is written at once.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from offchain.telemetry.nvml import NvmlSource
from offchain.telemetry.recorder import record
from offchain.telemetry.simulated import GPU_MODELS, Outage, SimulatedSource
from offchain.telemetry.source import TelemetrySource, TelemetryUnavailable


def _outage(text: str) -> Outage:
    try:
        gpu, start, end = text.split(":")
        return Outage(gpu_index=int(gpu), start_s=float(start), end_s=float(end))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected GPU:FROM:TO in seconds, got {text!r}: {exc}") from exc


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m offchain.telemetry.record", description=__doc__)
    parser.add_argument("--seconds", type=int, required=True, help="ticks to record, one per second")
    parser.add_argument("--out", type=Path, required=True, help="trace file to write (JSON lines)")
    parser.add_argument("--source", choices=("nvml", "simulated"), default="nvml")
    simulated = parser.add_argument_group("simulated source")
    simulated.add_argument("--model", choices=sorted(GPU_MODELS), default="NVIDIA H100 80GB HBM3")
    simulated.add_argument("--gpus", type=int, default=8)
    simulated.add_argument("--seed", type=int, default=0)
    simulated.add_argument("--start", type=float, help="unix time of the first tick; makes the clock virtual")
    simulated.add_argument(
        "--outage",
        type=_outage,
        action="append",
        default=[],
        metavar="GPU:FROM:TO",
        help="GPU unhealthy from FROM to TO seconds after the first tick (repeatable)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    source: TelemetrySource
    if args.source == "nvml":
        if args.start is not None or args.outage:
            parser.error("--start and --outage only apply to --source simulated")
        try:
            source = NvmlSource()
        except TelemetryUnavailable as exc:
            print(f"no NVML telemetry here: {exc}", file=sys.stderr)
            return 2
    else:
        source = SimulatedSource(args.model, args.gpus, seed=args.seed, start=args.start, outages=args.outage)
    try:
        written = asyncio.run(record(source, args.out, args.seconds, paced=args.start is None))
    finally:
        source.close()
    label = "SIMULATED " if source.simulated else ""
    print(f"recorded {written} {label}samples of {len(source.gpus())} GPUs to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
