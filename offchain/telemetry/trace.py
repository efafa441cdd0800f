"""The trace file format: one `GpuSample` as JSON per line, in tick order."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Iterable

from pydantic import ValidationError

from offchain.telemetry.models import GpuSample


class TraceFormatError(ValueError):
    """A trace file line is not a sample, or the samples go back in time."""


def write_samples(out: IO[str], samples: Iterable[GpuSample]) -> None:
    """Appends samples to an open trace file."""
    out.writelines(sample.model_dump_json() + "\n" for sample in samples)


def read_trace(path: Path) -> list[GpuSample]:
    """Every sample of a trace file, checked line by line; blank lines are skipped."""
    samples: list[GpuSample] = []
    with path.open(encoding="utf-8") as trace:
        for line_number, line in enumerate(trace, start=1):
            if not line.strip():
                continue
            try:
                sample = GpuSample.model_validate_json(line)
            except ValidationError as exc:
                raise TraceFormatError(f"{path}:{line_number}: not a GPU sample: {exc}") from exc
            if samples and sample.timestamp < samples[-1].timestamp:
                raise TraceFormatError(f"{path}:{line_number}: timestamp goes back in time")
            samples.append(sample)
    return samples
