"""ReplaySource and the trace file format."""

from __future__ import annotations

from pathlib import Path

import pytest

from offchain.telemetry.models import GpuSample
from offchain.telemetry.replay import ReplaySource
from offchain.telemetry.source import TraceExhausted
from offchain.telemetry.trace import TraceFormatError, read_trace, write_samples
from tests.offchain.telemetry.helpers import take

UUIDS = ("GPU-00000000-0000-4000-8000-000000000001", "GPU-00000000-0000-4000-8000-000000000002")


def _sample(timestamp: float, gpu_index: int, **changes) -> GpuSample:
    fields = dict(
        timestamp=timestamp,
        gpu_index=gpu_index,
        uuid=UUIDS[gpu_index],
        name="NVIDIA H100 80GB HBM3",
        gpu_util_pct=80 + gpu_index,
        mem_util_pct=30,
        mem_used_mib=10_000,
        mem_total_mib=81_559,
        power_w=500.5,
        temp_c=60,
        source="nvml",
    )
    fields.update(changes)
    return GpuSample(**fields)


def _trace(tmp_path: Path, samples: list[GpuSample]) -> Path:
    path = tmp_path / "trace.jsonl"
    with path.open("w") as out:
        write_samples(out, samples)
    return path


def test_trace_round_trips_through_a_file(tmp_path):
    samples = [
        _sample(100.0, 0),
        _sample(100.0, 1, error="NVMLError_GpuIsLost: GPU is lost", gpu_util_pct=None),
    ]

    assert read_trace(_trace(tmp_path, samples)) == samples


def test_plays_one_recorded_tick_per_call_relabelled_as_replay(tmp_path):
    samples = [_sample(100.0, 0), _sample(100.0, 1), _sample(101.0, 0), _sample(102.0, 0), _sample(102.0, 1)]
    source = ReplaySource(_trace(tmp_path, samples))

    ticks = take(source, 3)

    assert [[(s.timestamp, s.gpu_index) for s in tick] for tick in ticks] == [
        [(100.0, 0), (100.0, 1)],
        [(101.0, 0)],
        [(102.0, 0), (102.0, 1)],
    ]
    assert all(s.source == "replay" for tick in ticks for s in tick)
    assert ticks[0][0].model_copy(update={"source": "nvml"}) == samples[0]


def test_an_exhausted_trace_raises(tmp_path):
    source = ReplaySource(_trace(tmp_path, [_sample(100.0, 0)]))
    take(source, 1)

    with pytest.raises(TraceExhausted, match="all 1 ticks"):
        take(source, 1)


def test_rebase_shifts_every_tick_by_the_offset_fixed_at_the_first_call(tmp_path):
    samples = [_sample(100.0, 0), _sample(100.0, 1), _sample(101.0, 0), _sample(104.0, 0)]
    clock = iter([5_000.25, 9_999.0, 9_999.0])
    source = ReplaySource(_trace(tmp_path, samples), rebase=True, clock=lambda: next(clock))

    ticks = take(source, 3)

    assert [[s.timestamp for s in tick] for tick in ticks] == [[5_000.25, 5_000.25], [5_001.25], [5_004.25]]


def test_gpus_are_those_of_the_trace_with_their_memory_total(tmp_path):
    samples = [_sample(100.0, 1, mem_total_mib=None, error="lost"), _sample(100.0, 0), _sample(101.0, 1)]
    source = ReplaySource(_trace(tmp_path, samples))

    assert [(g.index, g.uuid, g.mem_total_mib) for g in source.gpus()] == [
        (0, UUIDS[0], 81_559),
        (1, UUIDS[1], 81_559),
    ]


def test_a_replay_is_not_live_telemetry(tmp_path):
    assert ReplaySource(_trace(tmp_path, [_sample(100.0, 0)])).simulated


def test_a_line_that_is_not_a_sample_is_reported_with_its_number(tmp_path):
    path = _trace(tmp_path, [_sample(100.0, 0)])
    with path.open("a") as out:
        out.write("\n" + '{"timestamp": 101.0}\n')

    with pytest.raises(TraceFormatError, match=r"trace.jsonl:3: not a GPU sample"):
        ReplaySource(path)


def test_a_trace_that_goes_back_in_time_is_refused(tmp_path):
    path = _trace(tmp_path, [_sample(101.0, 0), _sample(100.0, 0)])

    with pytest.raises(TraceFormatError, match=r":2: timestamp goes back in time"):
        ReplaySource(path)


def test_an_empty_trace_is_refused(tmp_path):
    with pytest.raises(TraceFormatError, match="empty"):
        ReplaySource(_trace(tmp_path, []))
