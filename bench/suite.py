"""Runs the benchmark sections on one Brownie network and writes `docs/PERFORMANCE.md` and the chart."""

from __future__ import annotations

import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from pydantic import BaseModel, ConfigDict, Field

from bench import containers, gas, ingest, renterapi, sampler, scale
from bench.machine import PROJECT_ROOT, this_machine
from bench.records import BenchReport, SectionResult
from bench.render import print_section, write

# The scale simulation runs last: on the anvil it leaves behind (its clock set back and forward again, thousands of
# raw transactions), Brownie reported later transactions of the job-container section as dropped.
SECTIONS = ("gas", "sampler", "ingest", "containers", "renterapi", "scale")


class Options(BaseModel):
    """What to run and how big; the defaults are what `make bench` runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    network: str = "development"
    sections: tuple[str, ...] = SECTIONS
    ingest_agents: tuple[int, ...] = (1, 10, 100)
    ingest_reports: int = Field(default=10_000, ge=1)
    scale_agents: int = Field(default=100_000, ge=1)
    scale_minutes: int = Field(default=2, ge=1)
    scale_minute_seconds: float = Field(default=60.0, gt=0)
    scale_chain_rentals: int = Field(default=1_000, ge=1)
    doc: Path | None = PROJECT_ROOT / "docs" / "PERFORMANCE.md"  # None: print only
    chart: Path | None = PROJECT_ROOT / "docs" / "performance.png"


def _runners(options: Options) -> dict[str, Callable[[], SectionResult]]:
    return {
        "gas": gas.measure,
        "sampler": sampler.measure,
        "ingest": lambda: ingest.measure(options.ingest_agents, options.ingest_reports),
        "scale": lambda: scale.measure(
            options.scale_agents, options.scale_minutes, options.scale_minute_seconds, options.scale_chain_rentals
        ),
        "containers": containers.measure,
        "renterapi": renterapi.measure,
    }


@contextmanager
def brownie_network(network_id: str) -> Iterator[None]:
    """The project loaded as `brownie run` loads it, connected to `network_id` (which launches its anvil)."""
    from brownie import network, project

    loaded = project.load(PROJECT_ROOT)
    loaded.load_config()
    loaded._add_to_main_namespace()
    network.connect(network_id)
    try:
        yield
    finally:
        network.disconnect()


def run(options: Options) -> BenchReport:
    started_at, started = datetime.now(timezone.utc), time.perf_counter()
    machine = this_machine()
    runners = _runners(options)
    results = []
    with brownie_network(options.network):
        for name in options.sections:
            print(f"{name} ...", flush=True)
            result = runners[name]()
            print_section(result)
            results.append(result)
    report = BenchReport(
        started_at=started_at,
        wall_seconds=time.perf_counter() - started,
        network=options.network,
        machine=machine,
        sections=tuple(results),
    )
    if options.doc is not None and options.chart is not None:
        write(report, options.doc, options.chart)
        print(f"wrote {options.doc} and {options.chart} ({report.wall_seconds:,.0f} s)")
    return report
