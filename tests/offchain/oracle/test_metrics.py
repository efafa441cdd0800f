"""Prometheus text rendering of the oracle's metrics, including the batcher's and transaction manager's."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from offchain.chain.tx.store import TxRecord, TxState
from offchain.oracle.metrics import MetricsFormatError, OracleMetrics, parse_samples

NOW = 1_800_000_000.0


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
    assert len(names) == 22


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


def test_quarantine_metrics_show_the_stores_quarantined_reports_by_reason_and_its_equivocations():
    metrics = OracleMetrics()
    metrics.reports_quarantined.inc("TOTALS_DECREASED")
    metrics.observe_quarantine({"TOTALS_DECREASED": 2, "cosign_refused": 1}, 3)
    metrics.observe_quarantine({"TOTALS_DECREASED": 2}, 4)
    rendered = samples(metrics.render())
    assert rendered['gpuex_oracle_reports_quarantined_total{reason="TOTALS_DECREASED"}'] == "1"
    assert rendered['gpuex_oracle_reports_quarantined{reason="TOTALS_DECREASED"}'] == "2"
    assert 'gpuex_oracle_reports_quarantined{reason="cosign_refused"}' not in rendered
    assert rendered["gpuex_oracle_equivocations"] == "4"


def unconfirmed(key: str, sent_seconds_ago: float, mined: bool) -> TxRecord:
    sent = datetime.fromtimestamp(NOW - sent_seconds_ago, tz=timezone.utc)
    return TxRecord(
        key=key,
        state=TxState.UNCONFIRMED,
        chain_id=1,
        from_address="0x" + "11" * 20,
        to="0x" + "22" * 20,
        data=b"",
        nonce=0,
        hash=None,
        attempts=1,
        gas_limit=None,
        block_number=7 if mined else None,
        block_hash=None,
        gas_used=None,
        effective_gas_price=None,
        error=None,
        created_at=sent,
        updated_at=sent,
        broadcast_at=sent,
        confirmed_at=None,
    )


def test_finality_metrics_show_what_waits_by_age_and_the_reorgs():
    metrics = OracleMetrics()
    metrics.confirmations.set(12)
    waiting = [unconfirmed("a", 5, True), unconfirmed("b", 30, False), unconfirmed("c", 120, True)]
    metrics.record_finality(waiting + [unconfirmed("d", 3_600, False)], reports_batched=9, now=NOW)
    metrics.record_reorg(was_final=True)
    metrics.record_reorg(was_final=False)
    metrics.record_reorg(was_final=False)
    metrics.reports_relanded.inc("resent", 2)
    rendered = samples(metrics.render())
    assert rendered["gpuex_oracle_confirmations"] == "12"
    assert rendered['gpuex_oracle_tx_unconfirmed{age="lt_1m"}'] == "2"
    assert rendered['gpuex_oracle_tx_unconfirmed{age="1m_10m"}'] == "1"
    assert rendered['gpuex_oracle_tx_unconfirmed{age="ge_10m"}'] == "1"
    assert rendered["gpuex_oracle_tx_awaiting_confirmations"] == "2"
    assert rendered["gpuex_oracle_tx_oldest_unconfirmed_seconds"] == "3600"
    assert rendered["gpuex_oracle_reports_batched"] == "9"
    assert rendered['gpuex_oracle_reorgs_total{depth="final"}'] == "1"
    assert rendered['gpuex_oracle_reorgs_total{depth="unconfirmed"}'] == "2"
    assert rendered['gpuex_oracle_reports_relanded_total{how="resent"}'] == "2"


def test_finality_gauges_fall_back_to_zero_once_nothing_waits():
    metrics = OracleMetrics()
    metrics.record_finality([unconfirmed("a", 700, True)], reports_batched=1, now=NOW)
    metrics.record_finality([], reports_batched=0, now=NOW)
    rendered = samples(metrics.render())
    assert rendered['gpuex_oracle_tx_unconfirmed{age="ge_10m"}'] == "0"
    assert rendered["gpuex_oracle_tx_oldest_unconfirmed_seconds"] == "0"
    assert rendered["gpuex_oracle_reports_batched"] == "0"


def test_a_rendered_page_parses_back_to_its_samples():
    metrics = OracleMetrics()
    metrics.reports_settled.inc("landed", 3)
    metrics.record_reorg(was_final=True)
    parsed = parse_samples(metrics.render())
    assert parsed["gpuex_oracle_reports_settled_total"] == {"landed": 3.0}
    assert parsed["gpuex_oracle_reorgs_total"] == {"final": 1.0}
    assert parsed["gpuex_oracle_confirmations"] == {"": 0.0}
    assert parsed["gpuex_oracle_batch_size_bucket"]["+Inf"] == 0.0


@pytest.mark.parametrize("page", ["<html>not metrics</html>", "gpuex_oracle_x NaNish", "{} 1", "bad name! 1"])
def test_a_page_that_is_not_prometheus_text_is_refused(page):
    with pytest.raises(MetricsFormatError, match="line 1 is not a sample"):
        parse_samples(page)
