"""Shared by the agent tests: bounded waits and signed reports."""

from __future__ import annotations

from eth_account import Account
from eth_utils import keccak

from offchain.ops.inprocess import wait_until  # noqa: F401 (re-exported for the tests)
from offchain.ops.roles import AGENT_KEY
from offchain.protocol.messages import ZERO_ROOT, TelemetryReport, TelemetrySubmission, chain_root

AGENT_ADDRESS = Account.from_key(AGENT_KEY).address
CHAIN_ID = 1337
REGISTRY = "0x2222222222222222222222222222222222222222"
UUIDS = ("GPU-0b1f7c2e-8d7a-4a51-9e0c-3f6d2b9a1c11", "GPU-7e4d2a90-15c3-4b8e-a2f6-9d0c8b7e6f22")


def signed_submission(seq: int, rental_id: int = 1, period_seconds: int = 10) -> TelemetrySubmission:
    """Cumulative report `seq` of a made-up rental, always the same for the same arguments, chained to the reports
    before it and signed by the agent key."""
    start = 1_700_000_000 + (seq - 1) * period_seconds
    prev_root = ZERO_ROOT
    for earlier in range(1, seq):
        prev_root = chain_root(prev_root, keccak(text=f"{rental_id}/{earlier}"))
    report = TelemetryReport(
        rental_id=rental_id,
        seq=seq,
        period_start=start,
        covered_until=start + period_seconds,
        delivered_seconds=seq * period_seconds,
        util_seconds=seq * period_seconds * 9 // 10,
        peak_mem_mib=40_000,
        sample_count=2 * period_seconds,
        gpu_uuids=UUIDS,
        prev_root=prev_root,
        samples_root=keccak(text=f"{rental_id}/{seq}"),
    )
    return TelemetrySubmission(report=report, signature=report.sign(AGENT_KEY, CHAIN_ID, REGISTRY))
