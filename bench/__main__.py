"""`python -m bench [--network development] [--sections gas,ingest] [...]`: see `bench.suite`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.suite import SECTIONS, Options, run


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in text.split(","))


def main(argv: list[str] | None = None) -> int:
    defaults = Options()
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--network",
        default=defaults.network,
        help="Brownie network of an anvil of the benchmark's own (its clock is moved)",
    )
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated, of " + ", ".join(SECTIONS))
    parser.add_argument("--ingest-agents", type=_ints, default=defaults.ingest_agents, help="e.g. 1,10,100")
    parser.add_argument("--ingest-reports", type=int, default=defaults.ingest_reports, help="reports per ingest run")
    parser.add_argument("--scale-agents", type=int, default=defaults.scale_agents)
    parser.add_argument("--scale-minutes", type=int, default=defaults.scale_minutes, help="simulated minutes")
    parser.add_argument(
        "--scale-minute-seconds",
        type=float,
        default=defaults.scale_minute_seconds,
        help="wall seconds a simulated minute lasts",
    )
    parser.add_argument(
        "--scale-chain-rentals",
        type=int,
        default=defaults.scale_chain_rentals,
        help="of the scale agents' rentals, how many are opened on the chain and have their latest report landed",
    )
    parser.add_argument(
        "--doc",
        type=Path,
        help="where the markdown goes (default docs/PERFORMANCE.md, written only when every section runs)",
    )
    parser.add_argument("--chart", type=Path, help="where the PNG goes (default docs/performance.png, likewise)")
    args = parser.parse_args(argv)
    sections = tuple(s for s in args.sections.split(",") if s)
    if unknown := set(sections) - set(SECTIONS):
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    everything = set(sections) == set(SECTIONS)
    options = Options(
        network=args.network,
        sections=sections,
        ingest_agents=args.ingest_agents,
        ingest_reports=args.ingest_reports,
        scale_agents=args.scale_agents,
        scale_minutes=args.scale_minutes,
        scale_minute_seconds=args.scale_minute_seconds,
        scale_chain_rentals=args.scale_chain_rentals,
        doc=args.doc or (defaults.doc if everything else None),
        chart=args.chart or (defaults.chart if everything else None),
    )
    run(options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
