"""NvmlSource: its logic against an injected fake NVML, and the real NVML where this machine has one."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from offchain.telemetry.nvml import NvmlSource, _in_job
from offchain.telemetry.source import TelemetryError, TelemetryUnavailable
from tests.offchain.telemetry.fake_nvml import MIB, FakeGpu, FakeNvml, NVMLError_LibraryNotFound
from tests.offchain.telemetry.helpers import REAL_NVML_PROBLEM

UUIDS = ("GPU-00000000-0000-4000-8000-000000000001", "GPU-00000000-0000-4000-8000-000000000002")


def _source(*gpus: FakeGpu, **kwargs) -> tuple[NvmlSource, FakeNvml]:
    fake = FakeNvml(list(gpus))
    return NvmlSource(nvml=fake, clock=lambda: 1_700_000_000.25, **kwargs), fake


def _sample(source: NvmlSource):
    return asyncio.run(source.sample())


def test_readings_are_converted_to_sample_units():
    source, _ = _source(FakeGpu(UUIDS[0], mem_used_bytes=40_000 * MIB + 123, power_mw=612_345, temp_c=64))

    [sample] = _sample(source)

    assert sample.timestamp == 1_700_000_000.25
    assert (sample.gpu_index, sample.uuid, sample.name) == (0, UUIDS[0], "NVIDIA H100 80GB HBM3")
    assert (sample.gpu_util_pct, sample.mem_util_pct) == (90, 40)
    assert (sample.mem_used_mib, sample.mem_total_mib) == (40_000, 81_559)
    assert sample.power_w == 612.345
    assert sample.temp_c == 64
    assert sample.source == "nvml"
    assert sample.healthy


def test_gpus_lists_every_device_with_its_memory_total():
    source, _ = _source(FakeGpu(UUIDS[0]), FakeGpu(UUIDS[1], name="NVIDIA L4", mem_total_bytes=23_034 * MIB))

    assert [(g.index, g.uuid, g.name, g.mem_total_mib) for g in source.gpus()] == [
        (0, UUIDS[0], "NVIDIA H100 80GB HBM3", 81_559),
        (1, UUIDS[1], "NVIDIA L4", 23_034),
    ]
    assert source.simulated is False


def test_all_gpus_of_a_tick_share_its_timestamp():
    source, _ = _source(FakeGpu(UUIDS[0]), FakeGpu(UUIDS[1]))

    samples = _sample(source)

    assert [s.uuid for s in samples] == list(UUIDS)
    assert {s.timestamp for s in samples} == {1_700_000_000.25}


def test_process_list_is_read_only_every_nth_tick():
    source, fake = _source(FakeGpu(UUIDS[0], pids=[4242]), expected_pids={4242}, process_check_every=3)

    job_flags = [_sample(source)[0].job_on_gpu for _ in range(7)]

    assert job_flags == [True, None, None, True, None, None, True]
    assert fake.process_list_calls == 3


def test_job_on_gpu_is_false_when_no_expected_pid_holds_the_gpu():
    source, _ = _source(FakeGpu(UUIDS[0], pids=[1, 2]), FakeGpu(UUIDS[1], pids=[77]), expected_pids={77, 78})

    assert [s.job_on_gpu for s in _sample(source)] == [False, True]


def test_no_expected_job_means_no_process_list_read():
    source, fake = _source(FakeGpu(UUIDS[0], pids=[4242]))

    assert [_sample(source)[0].job_on_gpu for _ in range(3)] == [None, None, None]
    assert fake.process_list_calls == 0


def test_setting_expected_pids_checks_on_the_next_tick():
    source, _ = _source(FakeGpu(UUIDS[0], pids=[4242]), process_check_every=10)
    _sample(source)
    _sample(source)

    source.expected_pids = [4242]

    assert source.expected_pids == frozenset({4242})
    assert _sample(source)[0].job_on_gpu is True
    assert _sample(source)[0].job_on_gpu is None


def test_unsupported_power_reading_is_absent_but_healthy():
    source, _ = _source(FakeGpu(UUIDS[0], power_mw=None))

    [sample] = _sample(source)

    assert sample.power_w is None
    assert sample.error is None
    assert sample.healthy


def test_lost_gpu_samples_unhealthy_with_the_nvml_error_while_others_stay_healthy():
    source, fake = _source(FakeGpu(UUIDS[0]), FakeGpu(UUIDS[1]))
    fake.gpus[1].lost = True

    first, second = _sample(source)

    assert first.healthy
    assert second.error == "NVMLError_GpuIsLost: GPU is lost"
    assert second.gpu_util_pct is None
    assert not second.healthy


def test_insane_reading_is_recorded_but_unhealthy():
    source, _ = _source(FakeGpu(UUIDS[0], gpu_util=255))

    [sample] = _sample(source)

    assert sample.gpu_util_pct == 255
    assert not sample.healthy


def test_nvml_that_does_not_start_raises_telemetry_unavailable():
    fake = FakeNvml([FakeGpu(UUIDS[0])], init_error=NVMLError_LibraryNotFound("NVML Shared Library Not Found"))

    with pytest.raises(TelemetryUnavailable, match="NVML Shared Library Not Found"):
        NvmlSource(nvml=fake)


def test_no_gpu_raises_telemetry_unavailable_and_shuts_nvml_down():
    fake = FakeNvml([])

    with pytest.raises(TelemetryUnavailable, match="no GPU"):
        NvmlSource(nvml=fake)
    assert fake.shutdowns == 1


def test_gpu_lost_while_listing_raises_telemetry_unavailable_and_shuts_nvml_down():
    fake = FakeNvml([FakeGpu(UUIDS[0], lost=True)])

    with pytest.raises(TelemetryUnavailable, match="GPU is lost"):
        NvmlSource(nvml=fake)
    assert fake.shutdowns == 1


def test_close_shuts_nvml_down_once_and_later_samples_fail():
    source, fake = _source(FakeGpu(UUIDS[0]))

    source.close()
    source.close()

    assert fake.shutdowns == 1
    with pytest.raises(TelemetryError, match="closed"):
        _sample(source)


def test_async_context_closes_the_source():
    source, fake = _source(FakeGpu(UUIDS[0]))

    async def use() -> None:
        async with source as entered:
            assert entered is source
            await source.sample()

    asyncio.run(use())
    assert fake.shutdowns == 1


def test_process_check_interval_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        NvmlSource(nvml=FakeNvml([FakeGpu(UUIDS[0])]), process_check_every=0)


@pytest.mark.skipif(REAL_NVML_PROBLEM is None, reason="NVML works on this machine")
def test_missing_real_nvml_raises_telemetry_unavailable():
    with pytest.raises(TelemetryUnavailable):
        NvmlSource()


@pytest.mark.skipif(REAL_NVML_PROBLEM is not None, reason=f"no NVML on this machine: {REAL_NVML_PROBLEM}")
def test_real_gpus_sample_healthy():
    async def two_ticks():
        async with NvmlSource() as source:
            return source.gpus(), await source.sample(), await source.sample()

    gpus, first, second = asyncio.run(two_ticks())

    assert gpus
    for tick in (first, second):
        assert [s.uuid for s in tick] == [g.uuid for g in gpus]
        assert all(s.source == "nvml" and s.healthy for s in tick), tick
    assert second[0].timestamp > first[0].timestamp


def test_a_process_in_the_job_group_counts_as_the_job():
    """The agent lists the job's group leader; a GPU process that is a child in that group is the job's."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True)
    try:
        child_group = os.getpgid(child.pid)
        assert _in_job(child.pid, frozenset({child_group}))
        assert _in_job(os.getpid(), frozenset({os.getpgid(0)}))
        assert not _in_job(os.getpid(), frozenset({child.pid}))
        assert not _in_job(2**22 + 12_345, frozenset({child.pid}))  # no such process
    finally:
        child.kill()
        child.wait()
