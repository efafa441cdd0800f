"""Report-period summaries: delivered seconds, utilisation, peak memory, sample count and root."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import pytest
from pydantic import ValidationError

from offchain.protocol.gpustats import GpuPeriodStats
from offchain.telemetry.merkle import ZERO_HASH, merkle_root, sorted_leaves
from offchain.telemetry.models import GpuSample
from offchain.telemetry.replay import ReplaySource
from offchain.telemetry.source import TraceExhausted
from offchain.telemetry.window import UsageTotals, WindowSummary, gpu_period_stats, summarize
from tests.offchain.telemetry.helpers import take

T0 = 1_767_225_600
GPU_A = "GPU-00000000-0000-4000-8000-00000000000a"
GPU_B = "GPU-00000000-0000-4000-8000-00000000000b"
OFFER = (GPU_A, GPU_B)
SIMULATED_TRACE = Path(__file__).parents[2] / "data" / "trace-simulated-2gpu.jsonl"
TRACE_OUTAGE = range(40, 52)  # seconds after the trace's first tick in which its GPU 1 is down


def _sample(second: float, uuid: str, util: int = 80, mem: int = 10_000, **changes) -> GpuSample:
    fields = dict(
        timestamp=T0 + second,
        gpu_index=OFFER.index(uuid) if uuid in OFFER else 7,
        uuid=uuid,
        name="NVIDIA H100 80GB HBM3",
        gpu_util_pct=util,
        mem_util_pct=30,
        mem_used_mib=mem,
        mem_total_mib=81_559,
        power_w=500.0,
        temp_c=60,
        source="nvml",
    )
    fields.update(changes)
    return GpuSample(**fields)


def _steady(seconds: int, util_a: int = 90, util_b: int = 61) -> list[GpuSample]:
    return [_sample(s, GPU_A, util_a) for s in range(seconds)] + [_sample(s, GPU_B, util_b) for s in range(seconds)]


def test_every_second_with_healthy_samples_of_all_gpus_is_delivered():
    summary = summarize(_steady(10), OFFER, T0, T0 + 10)

    assert summary.delivered_seconds == 10
    assert summary.avg_util_bps == 7_550
    assert summary.sample_count == 20
    assert summary.peak_mem_mib == 10_000
    assert summary.simulated is False
    assert (summary.period_start, summary.period_end) == (T0, T0 + 10)


def test_average_utilisation_is_rounded_down_to_a_basis_point():
    samples = [_sample(0, GPU_A, 33), _sample(1, GPU_A, 34), _sample(2, GPU_A, 34)]

    assert summarize(samples, [GPU_A], T0, T0 + 3).avg_util_bps == 3_366


def test_a_second_missing_one_gpu_is_not_delivered_nor_averaged():
    samples = [s for s in _steady(10) if not (s.uuid == GPU_B and s.timestamp == T0 + 4)]
    samples.append(_sample(4, GPU_A, util=0))

    summary = summarize(samples, OFFER, T0, T0 + 10)

    assert summary.delivered_seconds == 9
    assert summary.avg_util_bps == 7_550
    assert summary.sample_count == 20


def test_an_unhealthy_sample_takes_its_second_away_and_its_memory_does_not_count():
    samples = _steady(10)
    samples[3] = _sample(3, GPU_A, mem=80_000, error="NVMLError_GpuIsLost: GPU is lost")

    summary = summarize(samples, OFFER, T0, T0 + 10)

    assert summary.delivered_seconds == 9
    assert summary.peak_mem_mib == 10_000


def test_a_second_with_a_healthy_and_an_unhealthy_sample_of_one_gpu_is_not_delivered():
    samples = _steady(3) + [_sample(1.6, GPU_A, util=150)]

    assert summarize(samples, OFFER, T0, T0 + 3).delivered_seconds == 2


def test_several_samples_of_a_gpu_in_one_second_are_averaged_before_the_gpus():
    samples = [_sample(0.1, GPU_A, 80), _sample(0.9, GPU_A, 100), _sample(0.5, GPU_B, 60)]

    summary = summarize(samples, OFFER, T0, T0 + 1)

    assert summary.delivered_seconds == 1
    assert summary.avg_util_bps == 7_500


def test_samples_belong_to_the_second_their_timestamp_falls_in():
    samples = [_sample(0.999, GPU_A), _sample(0.0, GPU_B), _sample(1.0, GPU_A), _sample(1.999, GPU_B)]

    assert summarize(samples, OFFER, T0, T0 + 2).delivered_seconds == 2


def test_gpus_outside_the_offer_are_ignored():
    offer_only = _steady(5)
    stranger = "GPU-00000000-0000-4000-8000-0000000000ff"
    samples = offer_only + [_sample(s, stranger, util=0, mem=79_000, error="lost") for s in range(5)]

    assert summarize(samples, OFFER, T0, T0 + 5) == summarize(offer_only, OFFER, T0, T0 + 5)


def test_samples_outside_the_period_are_ignored():
    inside = _steady(10)[2:8] + _steady(10)[12:18]
    outside = [_sample(-0.001, GPU_A, mem=70_000), _sample(6, GPU_A), _sample(6, GPU_B)]

    summary = summarize(inside + outside, OFFER, T0 + 2, T0 + 6)

    assert summary.delivered_seconds == 4
    assert summary.sample_count == 8
    assert summary.peak_mem_mib == 10_000
    assert summary.samples_root == merkle_root(sorted_leaves([s for s in inside if s.timestamp < T0 + 6]))


def test_an_offer_gpu_that_never_samples_means_nothing_is_delivered():
    samples = [_sample(s, GPU_A) for s in range(10)]

    summary = summarize(samples, OFFER, T0, T0 + 10)

    assert summary.delivered_seconds == 0
    assert summary.avg_util_bps == 0
    assert summary.sample_count == 10
    assert summary.peak_mem_mib == 10_000


def test_no_samples_give_an_empty_summary_with_the_zero_root():
    summary = summarize([], OFFER, T0, T0 + 60)

    assert (summary.delivered_seconds, summary.avg_util_bps, summary.peak_mem_mib, summary.sample_count) == (
        0,
        0,
        0,
        0,
    )
    assert summary.samples_root == ZERO_HASH
    assert summary.simulated is False


def test_root_covers_exactly_the_period_samples_whatever_their_order():
    samples = _steady(6)

    summary = summarize(samples, OFFER, T0, T0 + 6)

    assert summary.samples_root == merkle_root(sorted_leaves(samples))
    assert summarize(list(reversed(samples)), OFFER, T0, T0 + 6).samples_root == summary.samples_root
    changed = samples[:-1] + [samples[-1].model_copy(update={"gpu_util_pct": 62})]
    assert summarize(changed, OFFER, T0, T0 + 6).samples_root != summary.samples_root


@pytest.mark.parametrize("source", ["simulated", "replay"])
def test_any_sample_that_is_not_live_marks_the_summary_simulated(source):
    samples = _steady(3)
    samples[4] = samples[4].model_copy(update={"source": source})

    assert summarize(samples, OFFER, T0, T0 + 3).simulated


def test_an_offer_without_gpus_or_a_reversed_period_is_refused():
    with pytest.raises(ValueError, match="at least one GPU"):
        summarize(_steady(3), [], T0, T0 + 3)
    with pytest.raises(ValueError, match="ends before"):
        summarize(_steady(3), OFFER, T0 + 3, T0)


def test_a_summary_cannot_deliver_more_seconds_than_its_period():
    with pytest.raises(ValidationError, match="more seconds delivered"):
        WindowSummary(
            period_start=T0,
            period_end=T0 + 5,
            delivered_seconds=6,
            util_seconds=0,
            peak_mem_mib=0,
            sample_count=0,
            samples_root=ZERO_HASH,
            simulated=False,
        )


def test_utilisation_weighted_seconds_are_exact():
    samples = [_sample(0, GPU_A, 33), _sample(1, GPU_A, 34), _sample(2, GPU_A, 34), _sample(2.5, GPU_A, 35)]

    assert summarize(samples, [GPU_A], T0, T0 + 3).util_seconds == Fraction(33 + 34, 100) + Fraction(69, 200)


def test_a_summary_cannot_weigh_more_seconds_than_it_delivered():
    with pytest.raises(ValidationError, match="utilisation-weighted seconds"):
        WindowSummary(
            period_start=T0,
            period_end=T0 + 5,
            delivered_seconds=2,
            util_seconds=Fraction(201, 100),
            peak_mem_mib=0,
            sample_count=0,
            samples_root=ZERO_HASH,
            simulated=False,
        )


def test_totals_over_sixty_reports_equal_the_exact_total_of_all_their_samples():
    """Utilisations of a third of a percent: rounding each report's figure down would lose up to a second per
    report; the totals round only the sum."""
    seconds = 60 * 60
    samples = [_sample(s, GPU_A, 1 + s % 3) for s in range(seconds)] + [
        _sample(s, GPU_B, 0 + (s % 7 == 0)) for s in range(seconds)
    ]
    totals = UsageTotals()
    reported = []
    for report in range(60):
        totals = totals.plus(summarize(samples, OFFER, T0 + 60 * report, T0 + 60 * (report + 1)))
        reported.append(totals.reported_util_seconds)

    whole = summarize(samples, OFFER, T0, T0 + seconds)
    assert totals == UsageTotals(delivered_seconds=seconds, util_seconds=whole.util_seconds)
    assert reported[-1] == math.floor(whole.util_seconds)
    per_report_floors = sum(
        math.floor(summarize(samples, OFFER, T0 + 60 * r, T0 + 60 * (r + 1)).util_seconds) for r in range(60)
    )
    assert per_report_floors < reported[-1]  # what rounding each report would have lost
    assert reported == sorted(reported)


def _replayed(rebase_to: float | None = None) -> list[GpuSample]:
    """Every sample of the committed simulated trace (120 ticks), played back."""
    source = ReplaySource(SIMULATED_TRACE, rebase=rebase_to is not None, clock=lambda: rebase_to)
    samples = [s for tick in take(source, 120) for s in tick]
    with pytest.raises(TraceExhausted):
        take(source, 1)
    return samples


def _expected_util_bps(samples: list[GpuSample], start: int, end: int) -> int:
    """One sample per GPU per second in the trace: the mean over delivered GPU-seconds, rounded down."""
    delivered = [s for s in samples if start <= s.timestamp < end and int(s.timestamp) - T0 not in TRACE_OUTAGE]
    return sum(s.gpu_util_pct for s in delivered) * 100 // len(delivered)


def test_replayed_trace_with_an_outage_yields_the_scripted_downtime():
    samples = _replayed()
    uuids = sorted({s.uuid for s in samples})
    first = int(samples[0].timestamp)

    periods = [summarize(samples, uuids, first + p, first + p + 60) for p in (0, 60)]

    assert first == T0
    assert [p.delivered_seconds for p in periods] == [60 - len(TRACE_OUTAGE), 60]
    assert [p.sample_count for p in periods] == [120, 120]
    assert [p.avg_util_bps for p in periods] == [
        _expected_util_bps(samples, T0, T0 + 60),
        _expected_util_bps(samples, T0 + 60, T0 + 120),
    ]
    assert all(5_000 < p.avg_util_bps < 10_000 for p in periods)
    assert periods[0].peak_mem_mib == max(s.mem_used_mib for s in samples[:120] if s.healthy)
    assert all(p.simulated for p in periods)
    assert periods[0].samples_root != periods[1].samples_root


def test_replay_rebased_to_the_clock_keeps_the_downtime_and_utilisation():
    now = 2_000_000_000.4
    recorded, rebased = _replayed(), _replayed(rebase_to=now)
    uuids = sorted({s.uuid for s in rebased})

    as_recorded = summarize(recorded, uuids, T0, T0 + 60)
    as_rebased = summarize(rebased, uuids, 2_000_000_000, 2_000_000_060)

    assert rebased[0].timestamp == now
    assert as_rebased.delivered_seconds == as_recorded.delivered_seconds == 48
    assert as_rebased.avg_util_bps == as_recorded.avg_util_bps
    assert as_rebased.samples_root != as_recorded.samples_root


def test_an_offer_gpu_absent_from_the_trace_delivers_nothing():
    samples = _replayed()
    uuids = sorted({s.uuid for s in samples}) + ["GPU-00000000-0000-4000-8000-000000000099"]

    assert summarize(samples, uuids, T0, T0 + 120).delivered_seconds == 0


def test_per_gpu_figures_come_from_each_gpus_healthy_samples_in_the_period():
    samples = [
        _sample(0, GPU_A, 90, 10_000, power_w=400.0, temp_c=60),
        _sample(1, GPU_A, 81, 12_000, power_w=500.5, temp_c=71),
        _sample(2, GPU_A, 100, 70_000, error="GPU is lost"),  # unhealthy: counted, not measured
        _sample(1, GPU_B, 50, 5_000, power_w=None, temp_c=None),  # power and temperature not supported
        _sample(10, GPU_A, 0, 0),  # after the period
        _sample(1, "GPU-of-another-offer", 100),
    ]

    a, b = gpu_period_stats(samples, OFFER, T0, T0 + 10)

    assert a == GpuPeriodStats(
        uuid=GPU_A, samples=3, util_bps=8_550, mem_used_mib=12_000, mem_total_mib=81_559, power_mw=450_250, temp_c=71
    )
    assert b == GpuPeriodStats(uuid=GPU_B, samples=1, util_bps=5_000, mem_used_mib=5_000, mem_total_mib=81_559)
    assert gpu_period_stats(samples, (GPU_B, "GPU-silent"), T0, T0 + 10)[1] == GpuPeriodStats(
        uuid="GPU-silent", samples=0
    )
