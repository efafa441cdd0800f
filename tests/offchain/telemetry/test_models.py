"""GpuSample: health judgement, validation and canonical bytes."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from offchain.telemetry.models import GpuSample


def _sample(**changes) -> GpuSample:
    fields = dict(
        timestamp=1_767_225_600.25,
        gpu_index=0,
        uuid="GPU-00000000-0000-4000-8000-000000000001",
        name="NVIDIA H100 80GB HBM3",
        gpu_util_pct=90,
        mem_util_pct=40,
        mem_used_mib=40_000,
        mem_total_mib=81_559,
        power_w=612.345,
        temp_c=64,
        source="nvml",
    )
    fields.update(changes)
    return GpuSample(**fields)


def test_plausible_readings_are_healthy():
    assert _sample().healthy


@pytest.mark.parametrize(
    "changes",
    [
        {"error": "NVMLError_GpuIsLost: GPU is lost"},
        {"gpu_util_pct": None},
        {"mem_util_pct": None},
        {"mem_used_mib": None},
        {"mem_total_mib": None},
        {"gpu_util_pct": 101},
        {"gpu_util_pct": -1},
        {"mem_util_pct": 101},
        {"mem_used_mib": 81_560},
        {"mem_used_mib": -1},
        {"mem_total_mib": 0, "mem_used_mib": 0},
        {"power_w": -0.001},
        {"power_w": 2_000.001},
        {"temp_c": -1},
        {"temp_c": 121},
    ],
    ids=lambda changes: ",".join(f"{k}={v}" for k, v in changes.items()),
)
def test_unreachable_or_implausible_readings_are_unhealthy(changes):
    assert not _sample(**changes).healthy


@pytest.mark.parametrize("changes", [{"power_w": None}, {"temp_c": None}, {"job_on_gpu": False}])
def test_unsupported_sensors_and_an_absent_job_do_not_make_a_sample_unhealthy(changes):
    assert _sample(**changes).healthy


@pytest.mark.parametrize(
    "changes",
    [
        {"timestamp": float("nan")},
        {"power_w": float("inf")},
        {"source": "guessed"},
        {"extra": 1},
        {"uuid": ""},
    ],
    ids=["nan-timestamp", "inf-power", "unknown-source", "extra-field", "empty-uuid"],
)
def test_malformed_samples_are_rejected(changes):
    with pytest.raises(ValidationError):
        _sample(**changes)


def test_json_round_trip_keeps_the_sample():
    sample = _sample(job_on_gpu=True)

    assert GpuSample.model_validate_json(sample.model_dump_json()) == sample


def test_canonical_bytes_are_compact_sorted_json_with_fixed_point_numbers():
    encoded = _sample(job_on_gpu=True).canonical_bytes()

    assert encoded == (
        b'{"error":null,"gpu_index":0,"gpu_util_pct":90,"job_on_gpu":true,"mem_total_mib":81559,'
        b'"mem_used_mib":40000,"mem_util_pct":40,"name":"NVIDIA H100 80GB HBM3","power_mw":612345,'
        b'"source":"nvml","temp_c":64,"timestamp_ms":1767225600250,'
        b'"uuid":"GPU-00000000-0000-4000-8000-000000000001"}'
    )


def test_canonical_bytes_escape_non_ascii_names():
    encoded = _sample(name="GPU \u00e9t\u00e9").canonical_bytes()

    assert json.loads(encoded)["name"] == "GPU \u00e9t\u00e9"
    assert b"\\u00e9" in encoded


@pytest.mark.parametrize(
    "changes",
    [
        {"timestamp": 1_767_225_600.251},
        {"gpu_index": 1},
        {"uuid": "GPU-00000000-0000-4000-8000-000000000002"},
        {"gpu_util_pct": 91},
        {"mem_used_mib": 40_001},
        {"power_w": 612.346},
        {"temp_c": 65},
        {"job_on_gpu": False},
        {"error": "x"},
        {"source": "simulated"},
        {"source": "replay"},
    ],
    ids=lambda changes: ",".join(changes),
)
def test_every_reading_and_the_source_change_the_canonical_bytes(changes):
    assert _sample(**changes).canonical_bytes() != _sample().canonical_bytes()


def test_canonical_bytes_resolve_time_to_the_millisecond_and_power_to_the_milliwatt():
    assert _sample(timestamp=1_767_225_600.2501, power_w=612.3451).canonical_bytes() == _sample().canonical_bytes()
