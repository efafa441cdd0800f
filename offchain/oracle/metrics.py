"""The oracle's counters and histograms, rendered in the Prometheus text exposition format (version 0.0.4).

Ingest feeds the report counters and the ingest latency; the batcher and transaction manager feed batch sizes,
transaction latency and gas through `record_batch`, `record_tx_latency` and `record_gas_used`, the reports held
that have yet to land, how many reports were settled (landed, skipped, dropped) and why reports were landed. The
quarantine gauges are read from the store when `/metrics` is served. Finality (`record_finality`, `record_reorg`):
the transactions waiting for their confirmations, by age, the reports in a transaction not final yet, the reorgs
that took a transaction out of the chain and the reports landed again after one.
Which oracle submitted what: the reports this oracle put in its own batches, by the role it took them in (primary
in its turn, or fallback for the oracles before it, `offchain.oracle.rotation`).
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Iterable, Sequence

from offchain.chain.tx.store import TxRecord

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
TX_LATENCY_BUCKETS = (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600)
BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500)
GAS_BUCKETS = (50_000, 100_000, 250_000, 500_000, 1_000_000, 2_000_000, 3_000_000, 5_000_000)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class Counter:
    """A monotonically increasing count, optionally split by one label."""

    def __init__(self, name: str, help_text: str, label: str | None = None) -> None:
        self.name = name
        self.help_text = help_text
        self.label = label
        self._values: dict[str, float] = {} if label else {"": 0.0}

    def inc(self, label_value: str = "", amount: float = 1.0) -> None:
        self._values[label_value] = self._values.get(label_value, 0.0) + amount

    def value(self, label_value: str = "") -> float:
        return self._values.get(label_value, 0.0)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help_text}", f"# TYPE {self.name} counter"]
        for label_value, count in sorted(self._values.items()):
            labels = f'{{{self.label}="{_escape(label_value)}"}}' if self.label else ""
            lines.append(f"{self.name}{labels} {_number(count)}")
        return lines


class Gauge:
    """A value that goes up and down."""

    def __init__(self, name: str, help_text: str) -> None:
        self.name = name
        self.help_text = help_text
        self.value = 0.0

    def set(self, value: float) -> None:
        self.value = value

    def render(self) -> list[str]:
        return [
            f"# HELP {self.name} {self.help_text}",
            f"# TYPE {self.name} gauge",
            f"{self.name} {_number(self.value)}",
        ]


class LabelledGauge:
    """Values that go up and down, one per value of one label: set one at a time or replaced together; the label
    values given at construction are always rendered, in their order, then the others sorted."""

    def __init__(self, name: str, help_text: str, label: str, label_values: Sequence[str] = ()) -> None:
        self.name = name
        self.help_text = help_text
        self.label = label
        self._fixed = tuple(label_values)
        self._values: dict[str, float] = dict.fromkeys(label_values, 0.0)

    def set(self, label_value: str, value: float) -> None:
        self._values[label_value] = value

    def replace(self, values: dict[str, int]) -> None:
        self._values = {**dict.fromkeys(self._fixed, 0.0), **{key: float(value) for key, value in values.items()}}

    def value(self, label_value: str) -> float:
        return self._values.get(label_value, 0.0)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help_text}", f"# TYPE {self.name} gauge"]
        ordered = [*self._fixed, *sorted(set(self._values) - set(self._fixed))]
        for label_value, value in ((label, self._values[label]) for label in ordered):
            lines.append(f'{self.name}{{{self.label}="{_escape(label_value)}"}} {_number(value)}')
        return lines


#: Age bands of `gpuex_oracle_tx_unconfirmed`, as (label, upper bound in seconds), youngest first.
UNCONFIRMED_AGES = (("lt_1m", 60.0), ("1m_10m", 600.0), ("ge_10m", float("inf")))


class Histogram:
    """Observations counted into cumulative buckets, with their sum and count."""

    def __init__(self, name: str, help_text: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.help_text = help_text
        self._bounds = tuple(sorted(buckets))
        self._counts = [0] * (len(self._bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self._bounds, value)] += 1
        self.sum += value
        self.count += 1

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help_text}", f"# TYPE {self.name} histogram"]
        cumulative = 0
        for bound, count in zip(self._bounds, self._counts):
            cumulative += count
            lines.append(f'{self.name}_bucket{{le="{_number(bound)}"}} {cumulative}')
        lines.append(f'{self.name}_bucket{{le="+Inf"}} {self.count}')
        lines.append(f"{self.name}_sum {_number(self.sum)}")
        lines.append(f"{self.name}_count {self.count}")
        return lines


class MetricsFormatError(ValueError):
    """A page is not Prometheus text exposition format."""


def parse_samples(text: str) -> dict[str, dict[str, float]]:
    """The samples of a Prometheus text page, by metric name and then by the value of its one label ("" for a
    sample without labels), as `OracleMetrics.render` writes them; histogram buckets keep their `le` label.
    Raises MetricsFormatError on a line that is no comment and no sample."""
    samples: dict[str, dict[str, float]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line or line.startswith("#"):
            continue
        name_part, _, value = line.rpartition(" ")
        name, _, labels = name_part.partition("{")
        try:
            sample = float(value)
        except ValueError:
            raise MetricsFormatError(f"line {number} is not a sample: {line[:80]!r}") from None
        if not name or not name.replace("_", "a").replace(":", "a").isalnum():
            raise MetricsFormatError(f"line {number} is not a sample: {line[:80]!r}")
        label_value = labels.rstrip("}").partition("=")[2].strip('"') if labels else ""
        samples.setdefault(name, {})[label_value] = sample
    return samples


class OracleMetrics:
    """Everything `GET /metrics` shows for one oracle."""

    def __init__(self) -> None:
        self.reports_accepted = Counter("gpuex_oracle_reports_accepted_total", "Telemetry reports newly accepted.")
        self.reports_duplicate = Counter(
            "gpuex_oracle_reports_duplicate_total", "Retries of reports already held, acknowledged again."
        )
        self.reports_rejected = Counter(
            "gpuex_oracle_reports_rejected_total", "Telemetry submissions refused, by reason.", label="reason"
        )
        self.cosign_requests = Counter(
            "gpuex_oracle_cosign_requests_total", "Co-signing requests, by outcome (signed or a reason).", "outcome"
        )
        self.ingest_seconds = Histogram(
            "gpuex_oracle_ingest_seconds", "Time to answer POST /v1/telemetry.", LATENCY_BUCKETS
        )
        self.batch_size = Histogram("gpuex_oracle_batch_size", "Reports per submitted batch.", BATCH_SIZE_BUCKETS)
        self.tx_latency_seconds = Histogram(
            "gpuex_oracle_tx_latency_seconds",
            "Time from sending a batch transaction to its receipt.",
            TX_LATENCY_BUCKETS,
        )
        self.gas_used = Histogram("gpuex_oracle_gas_used", "Gas used per batch transaction.", GAS_BUCKETS)
        self.reports_held = Gauge(
            "gpuex_oracle_reports_held", "Rentals' latest reports waiting to land or in a batch transaction."
        )
        self.reports_settled = Counter(
            "gpuex_oracle_reports_settled_total",
            "Reports whose way to the chain ended, by state (landed, skipped, dropped).",
            "state",
        )
        self.landings = Counter(
            "gpuex_oracle_landings_total", "Reports put in a batch to land, by why they were due.", "reason"
        )
        # Poisoned and equivocating reports: what this oracle quarantined (by the first word of the reason, a
        # SkipReason name or cosign_refused, dry_run_reverted, batch_failed), and the equivocations it holds as
        # evidence, both counted in the store so that they survive a restart (`observe_quarantine`).
        self.reports_quarantined = Counter(
            "gpuex_oracle_reports_quarantined_total", "Reports quarantined by this process, by reason.", "reason"
        )
        self.quarantined = LabelledGauge(
            "gpuex_oracle_reports_quarantined", "Reports the store holds quarantined, by reason.", "reason"
        )
        self.equivocations = Gauge(
            "gpuex_oracle_equivocations", "Pairs of different agent-signed reports for one seq, kept as evidence."
        )
        # Finality (ChainSettings.confirmations; the batcher's reconcile).
        self.confirmations = Gauge(
            "gpuex_oracle_confirmations", "Blocks deep a transaction must be before it is final (the setting)."
        )
        self.tx_unconfirmed = LabelledGauge(
            "gpuex_oracle_tx_unconfirmed",
            "Transactions sent and not final yet, by time since first sent (lt_1m, 1m_10m, ge_10m).",
            "age",
            [label for label, _ in UNCONFIRMED_AGES],
        )
        self.tx_awaiting_confirmations = Gauge(
            "gpuex_oracle_tx_awaiting_confirmations", "Transactions mined and not yet `confirmations` blocks deep."
        )
        self.tx_oldest_unconfirmed_seconds = Gauge(
            "gpuex_oracle_tx_oldest_unconfirmed_seconds", "Time since the oldest transaction not final was first sent."
        )
        self.reports_batched = Gauge(
            "gpuex_oracle_reports_batched", "Reports in a batch transaction that is not final yet."
        )
        self.reorgs = Counter(
            "gpuex_oracle_reorgs_total",
            "Transactions a reorg took out of the chain, by whether they had been final (a reorg deeper than the"
            " confirmations) or not.",
            "depth",
        )
        self.reports_relanded = Counter(
            "gpuex_oracle_reports_relanded_total",
            "Landed reports a reorg took out of the chain, put on their way again: resent (with their transaction)"
            " or rebatched (held for a new batch).",
            "how",
        )
        # Submitter rotation: which reports this oracle sent itself, and in which role.
        self.submitted = Counter(
            "gpuex_oracle_reports_submitted_total",
            "Reports this oracle put in its own batch transactions, by role (primary: its turn; fallback: standing in"
            " for the oracles before it).",
            "role",
        )

    def record_batch(self, size: int) -> None:
        self.batch_size.observe(size)

    def record_tx_latency(self, seconds: float) -> None:
        self.tx_latency_seconds.observe(seconds)

    def record_gas_used(self, gas: int) -> None:
        self.gas_used.observe(gas)

    def observe_quarantine(self, counts: dict[str, int], equivocations: int) -> None:
        """Sets the quarantine gauges from the store's counts (`SubmissionStore.quarantine_counts`)."""
        self.quarantined.replace(counts)
        self.equivocations.set(equivocations)

    def record_finality(self, unconfirmed: Iterable[TxRecord], reports_batched: int, now: float) -> None:
        """Sets the finality gauges from the transactions not final yet and the reports they carry."""
        counts = dict.fromkeys((label for label, _ in UNCONFIRMED_AGES), 0)
        mined = 0
        oldest = 0.0
        for record in unconfirmed:
            sent = record.broadcast_at or record.created_at
            age = max(0.0, now - sent.timestamp())
            oldest = max(oldest, age)
            counts[next(label for label, bound in UNCONFIRMED_AGES if age < bound)] += 1
            mined += record.block_number is not None
        for label, count in counts.items():
            self.tx_unconfirmed.set(label, count)
        self.tx_awaiting_confirmations.set(mined)
        self.tx_oldest_unconfirmed_seconds.set(round(oldest, 3))
        self.reports_batched.set(reports_batched)

    def record_reorg(self, was_final: bool) -> None:
        self.reorgs.inc("final" if was_final else "unconfirmed")

    def render(self) -> str:
        families = (
            self.reports_accepted,
            self.reports_duplicate,
            self.reports_rejected,
            self.cosign_requests,
            self.ingest_seconds,
            self.batch_size,
            self.tx_latency_seconds,
            self.gas_used,
            self.reports_held,
            self.reports_settled,
            self.landings,
            self.reports_quarantined,
            self.quarantined,
            self.equivocations,
            self.confirmations,
            self.tx_unconfirmed,
            self.tx_awaiting_confirmations,
            self.tx_oldest_unconfirmed_seconds,
            self.reports_batched,
            self.reorgs,
            self.reports_relanded,
            self.submitted,
        )
        return "\n".join(line for family in families for line in family.render()) + "\n"
