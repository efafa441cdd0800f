"""Recording traces, through the library and the `python -m offchain.telemetry.record` entry point."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from offchain.telemetry.record import main
from offchain.telemetry.recorder import record
from offchain.telemetry.simulated import SimulatedSource
from offchain.telemetry.trace import read_trace
from tests.offchain.telemetry.helpers import REAL_NVML_PROBLEM, take

SIMULATED_TRACE = Path(__file__).parents[2] / "data" / "trace-simulated-2gpu.jsonl"
# How tests/data/trace-simulated-2gpu.jsonl was made (see tests/data/README.md).
SIMULATED_TRACE_ARGS = [
    "--source",
    "simulated",
    "--gpus",
    "2",
    "--seed",
    "7",
    "--start",
    "1767225600",
    "--outage",
    "1:40:52",
    "--seconds",
    "120",
]


def test_unpaced_recording_writes_every_tick_as_json_lines(tmp_path):
    out = tmp_path / "trace.jsonl"
    source = SimulatedSource(gpu_count=3, seed=2, start=1_000)

    written = asyncio.run(record(source, out, 5, paced=False))

    samples = read_trace(out)
    assert written == len(samples) == 15
    assert sorted({s.timestamp for s in samples}) == [1_000, 1_001, 1_002, 1_003, 1_004]
    assert samples == [s for tick in take(SimulatedSource(gpu_count=3, seed=2, start=1_000), 5) for s in tick]


def test_paced_recording_samples_on_the_wall_clock(tmp_path):
    out = tmp_path / "trace.jsonl"
    before = time.time()

    asyncio.run(record(SimulatedSource(gpu_count=1), out, 1))

    [sample] = read_trace(out)
    assert before <= sample.timestamp <= time.time()
    assert 0.45 <= sample.timestamp % 1 <= 0.95


def test_recording_nothing_is_refused(tmp_path):
    with pytest.raises(ValueError, match="at least one second"):
        asyncio.run(record(SimulatedSource(gpu_count=1), tmp_path / "t.jsonl", 0, paced=False))


def test_committed_simulated_trace_is_what_the_documented_command_produces(tmp_path):
    out = tmp_path / "trace.jsonl"

    assert main([*SIMULATED_TRACE_ARGS, "--out", str(out)]) == 0

    assert out.read_bytes() == SIMULATED_TRACE.read_bytes()


def test_cli_records_a_simulated_trace_with_an_outage(tmp_path, capsys):
    out = tmp_path / "trace.jsonl"

    code = main(
        [
            "--source",
            "simulated",
            "--gpus",
            "2",
            "--start",
            "0",
            "--seconds",
            "4",
            "--outage",
            "0:1:3",
            "--out",
            str(out),
        ]
    )

    assert code == 0
    assert f"recorded 8 SIMULATED samples of 2 GPUs to {out}" in capsys.readouterr().out
    health = [(s.timestamp, s.gpu_index, s.healthy) for s in read_trace(out)]
    assert [h for h in health if not h[2]] == [(1, 0, False), (2, 0, False)]


def test_cli_outage_must_be_gpu_from_to(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--source", "simulated", "--seconds", "1", "--out", str(tmp_path / "t"), "--outage", "1:5"])

    assert exit_.value.code == 2
    assert "expected GPU:FROM:TO" in capsys.readouterr().err


def test_cli_refuses_simulation_options_for_nvml(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--seconds", "1", "--out", str(tmp_path / "t"), "--start", "0"])

    assert exit_.value.code == 2
    assert "only apply to --source simulated" in capsys.readouterr().err


@pytest.mark.skipif(REAL_NVML_PROBLEM is None, reason="NVML works on this machine")
def test_cli_without_nvml_exits_2_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "trace.jsonl"

    assert main(["--seconds", "1", "--out", str(out)]) == 2

    assert "no NVML telemetry here" in capsys.readouterr().err
    assert not out.exists()
