"""The oracle's counters and histograms, rendered in the Prometheus text exposition format (version 0.0.4).

Ingest feeds the report counters and the ingest latency; the batcher and transaction manager feed batch sizes,
transaction latency and gas through `record_batch`, `record_tx_latency` and `record_gas_used`, the reports held
that have yet to land, how many reports were settled (landed, skipped, dropped) and why reports were landed.
Which oracle submitted what: the reports this oracle put in its own batches, by the role it took them in (primary
in its turn, or fallback for the oracles before it, `offchain.oracle.rotation`).
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Sequence

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
            self.submitted,
        )
        return "\n".join(line for family in families for line in family.render()) + "\n"
