"""Helpers for the RentalEscrow unit tests: a reader of its events and a plain-Python model of RentalMath.
Enums, revert strings and time live in tests/contracts/helpers.py."""

from __future__ import annotations

from offchain.protocol.reports import Report

BPS = 10_000
DURATION = 3_600  # seconds a test rental runs unless a test says otherwise


def event(tx, name, index=0):
    """The fields of the `index`-th event `name` that `tx` emitted, as a plain dict."""
    return dict(tx.events[name][index])


def unchecked_report(rental_id, seq, period_end, delivered, util=10_000, status=0, root=b"\x22" * 32):
    """A report the pydantic model would refuse (utilisation above 10000 bps, an unknown status), built
    without validation so that it can still be signed and submitted."""
    return Report.model_construct(
        rental_id=rental_id,
        seq=seq,
        period_end=period_end,
        delivered_seconds=delivered,
        avg_util_bps=util,
        status=status,
        telemetry_root=root,
    )


def earnings(price, delivered, floor_bps, util_bps):
    """RentalMath.earnings: delivered x price x (floor + (1 - floor) x utilisation), rounded down."""
    return price * delivered * (floor_bps * BPS + (BPS - floor_bps) * util_bps) // (BPS * BPS)


def sla_slash_bps(missed, elapsed, sla_bps, max_slash_bps):
    """RentalMath.slaSlashBps: zero within the SLA, else max_slash_bps scaled by missed / elapsed."""
    if elapsed == 0 or missed * BPS <= (BPS - sla_bps) * elapsed:
        return 0
    return max_slash_bps * missed // elapsed


def fee_of(earned, fee_bps):
    return earned * fee_bps // BPS
