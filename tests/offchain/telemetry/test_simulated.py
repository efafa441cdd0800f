"""SimulatedSource: seeded, deterministic, plausible, labelled simulated, with scripted outages."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from offchain.telemetry.models import GpuSample
from offchain.telemetry.simulated import GPU_MODELS, OUTAGE_ERROR, Outage, SimulatedSource
from tests.offchain.telemetry.helpers import take

START = 1_767_225_600


def test_same_seed_gives_the_same_samples_and_another_seed_does_not():
    def trace(seed: int) -> list[list[GpuSample]]:
        return take(SimulatedSource(gpu_count=4, seed=seed, start=START), 30)

    assert trace(1) == trace(1)
    assert trace(1) != trace(2)


def test_virtual_clock_stamps_one_tick_per_interval():
    ticks = take(SimulatedSource(gpu_count=2, start=START, interval=0.5), 4)

    assert [{s.timestamp for s in tick} for tick in ticks] == [
        {START},
        {START + 0.5},
        {START + 1.0},
        {START + 1.5},
    ]


def test_without_a_start_ticks_are_stamped_by_the_clock():
    times = iter([100.0, 101.5])
    ticks = take(SimulatedSource(gpu_count=1, clock=lambda: next(times)), 2)

    assert [tick[0].timestamp for tick in ticks] == [100.0, 101.5]


@pytest.mark.parametrize("model", sorted(GPU_MODELS))
def test_every_sample_is_labelled_simulated_and_physically_plausible(model):
    spec = GPU_MODELS[model]
    source = SimulatedSource(model, gpu_count=8, seed=3, start=START)

    samples = [s for tick in take(source, 300) for s in tick]

    assert source.simulated
    assert all(s.source == "simulated" and s.healthy and s.name == model for s in samples)
    assert all(s.mem_total_mib == spec.mem_total_mib for s in samples)
    assert all(spec.idle_power_w * 0.8 <= s.power_w <= spec.max_power_w for s in samples)
    assert all(20 <= s.temp_c <= 90 for s in samples)


def test_utilisation_ramps_up_then_works_with_dips():
    samples = [s for tick in take(SimulatedSource(gpu_count=8, seed=5, start=START), 600) for s in tick]
    warm = [s for s in samples if s.timestamp >= START + 15]

    assert max(s.gpu_util_pct for s in samples if s.timestamp == START) <= 10
    mean_util = sum(s.gpu_util_pct for s in warm) / len(warm)
    assert 75 <= mean_util <= 97
    assert any(s.gpu_util_pct < 35 for s in warm), "no dip in ten minutes of work"
    assert min(s.mem_used_mib for s in warm) > 0.5 * GPU_MODELS["NVIDIA H100 80GB HBM3"].mem_total_mib


def test_gpus_are_distinct_and_listed_in_index_order():
    source = SimulatedSource("NVIDIA L4", gpu_count=3, seed=9)

    gpus = source.gpus()

    assert [g.index for g in gpus] == [0, 1, 2]
    assert len({g.uuid for g in gpus}) == 3
    assert all(
        re.fullmatch(r"GPU-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", g.uuid) for g in gpus
    )
    assert all(g.name == "NVIDIA L4" and g.mem_total_mib == 23_034 for g in gpus)
    assert [s.uuid for s in take(source, 1)[0]] == [g.uuid for g in gpus]


def test_an_outage_makes_one_gpu_unhealthy_for_exactly_its_window():
    source = SimulatedSource(gpu_count=2, seed=1, start=START, outages=[Outage(gpu_index=1, start_s=5, end_s=8)])

    ticks = take(source, 12)

    assert all(tick[0].healthy for tick in ticks)
    assert [t for t, tick in enumerate(ticks) if not tick[1].healthy] == [5, 6, 7]
    assert ticks[6][1].error == OUTAGE_ERROR
    assert ticks[6][1].source == "simulated"


def test_unknown_model_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="NVIDIA H100 80GB HBM3"):
        SimulatedSource("NVIDIA B9000")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"gpu_count": 0},
        {"interval": 0},
        {"gpu_count": 2, "outages": [Outage(gpu_index=2, start_s=0, end_s=1)]},
    ],
)
def test_impossible_configurations_are_refused(kwargs):
    with pytest.raises(ValueError):
        SimulatedSource(**kwargs)


def test_an_outage_must_end_after_it_starts():
    with pytest.raises(ValidationError, match="end after it starts"):
        Outage(gpu_index=0, start_s=5, end_s=5)


def test_construction_logs_that_telemetry_is_simulated(caplog):
    SimulatedSource(gpu_count=2, seed=4)

    assert "SIMULATED telemetry" in caplog.text
