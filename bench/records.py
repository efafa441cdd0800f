"""What a benchmark run produced: figures against their targets, the curves the chart draws, and the machine.

Every section returns `Figure`s; the renderer (`bench.render`) turns a `BenchReport` into the console table,
`docs/PERFORMANCE.md` and the chart, so no section formats its own output.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Target(BaseModel):
    """`value op threshold`, and who set it: an issue of the project, or us (the benchmark's own target)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    op: Literal["<", "<=", ">=", "=="]
    threshold: float
    source: str  # "issue #2", "issue #3", "ours"

    def met_by(self, value: float) -> bool:
        if self.op == "<":
            return value < self.threshold
        if self.op == "<=":
            return value <= self.threshold
        if self.op == ">=":
            return value >= self.threshold
        return value == self.threshold


class Figure(BaseModel):
    """One measured number. `value` is None when it could not be measured here (`note` says why)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    section: str
    name: str
    value: float | None
    unit: str
    target: Target | None = None
    note: str = ""

    @property
    def met(self) -> bool | None:
        """Whether the target is met; None when there is no target or no value."""
        if self.target is None or self.value is None:
            return None
        return self.target.met_by(self.value)


class Point(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    x: float
    y: float


class Series(BaseModel):
    """A line of the chart: `panel` is "gas" (gas per report against batch size) or "ingest" (latency against
    concurrent agents)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    panel: Literal["gas", "ingest"]
    label: str
    points: tuple[Point, ...]
    style: Literal["measured", "target"] = "measured"


class Machine(BaseModel):
    """Where the figures were taken."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu: str
    cores: int
    memory_gib: float
    os: str
    python: str
    anvil: str
    gpu: str
    commit: str


class SectionResult(BaseModel):
    """What one section measured, and how it was set up (one line per fact, printed under its table)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str
    figures: tuple[Figure, ...]
    series: tuple[Series, ...] = ()
    notes: tuple[str, ...] = ()
    wall_seconds: float = 0.0


class BenchReport(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    started_at: datetime
    wall_seconds: float
    network: str
    machine: Machine
    sections: tuple[SectionResult, ...] = Field(min_length=1)
