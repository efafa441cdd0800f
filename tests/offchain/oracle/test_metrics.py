"""Prometheus text rendering of the oracle's metrics, including the batcher's and transaction manager's."""

from __future__ import annotations

from offchain.oracle.metrics import OracleMetrics


def samples(text: str) -> dict[str, str]:
    return dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_counters_render_with_their_labels():
    metrics = OracleMetrics()
    metrics.reports_accepted.inc()
    metrics.reports_rejected.inc("seq_gap")
    metrics.reports_rejected.inc("seq_gap")
    metrics.reports_rejected.inc('odd"reason')
    rendered = samples(metrics.render())
    assert rendered["gpuex_oracle_reports_accepted_total"] == "1"
    assert rendered['gpuex_oracle_reports_rejected_total{reason="seq_gap"}'] == "2"
    assert rendered['gpuex_oracle_reports_rejected_total{reason="odd\\"reason"}'] == "1"


def test_histograms_are_cumulative_with_sum_and_count():
    metrics = OracleMetrics()
    for size in (1, 3, 100, 1_000):
        metrics.record_batch(size)
    metrics.record_tx_latency(1.5)
    metrics.record_gas_used(180_000)
    rendered = samples(metrics.render())
    assert rendered['gpuex_oracle_batch_size_bucket{le="1"}'] == "1"
    assert rendered['gpuex_oracle_batch_size_bucket{le="5"}'] == "2"
    assert rendered['gpuex_oracle_batch_size_bucket{le="100"}'] == "3"
    assert rendered['gpuex_oracle_batch_size_bucket{le="500"}'] == "3"
    assert rendered['gpuex_oracle_batch_size_bucket{le="+Inf"}'] == "4"
    assert rendered["gpuex_oracle_batch_size_sum"] == "1104"
    assert rendered["gpuex_oracle_batch_size_count"] == "4"
    assert rendered['gpuex_oracle_tx_latency_seconds_bucket{le="2"}'] == "1"
    assert rendered['gpuex_oracle_tx_latency_seconds_bucket{le="1"}'] == "0"
    assert rendered["gpuex_oracle_gas_used_sum"] == "180000"
    assert rendered['gpuex_oracle_gas_used_bucket{le="250000"}'] == "1"


def test_every_family_has_help_and_type():
    text = OracleMetrics().render()
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    assert {line.split()[2] for line in text.splitlines() if line.startswith("# HELP")} == names
    assert len(names) == 12


def test_landing_metrics_show_reports_held_settled_and_why_they_landed():
    metrics = OracleMetrics()
    metrics.reports_held.set(7)
    metrics.reports_settled.inc("landed")
    metrics.reports_settled.inc("skipped")
    metrics.landings.inc("checkpoint")
    metrics.landings.inc("final")
    metrics.landings.inc("final")
    text = metrics.render()
    rendered = samples(text)
    assert "# TYPE gpuex_oracle_reports_held gauge" in text.splitlines()
    assert rendered["gpuex_oracle_reports_held"] == "7"
    assert rendered['gpuex_oracle_reports_settled_total{state="landed"}'] == "1"
    assert rendered['gpuex_oracle_reports_settled_total{state="skipped"}'] == "1"
    assert rendered['gpuex_oracle_landings_total{reason="final"}'] == "2"
    assert rendered['gpuex_oracle_landings_total{reason="checkpoint"}'] == "1"
