"""Helpers for the RentalEscrow unit tests: a reader of its events and a plain-Python model of RentalMath.
Enums, revert strings and time live in tests/contracts/helpers.py."""

from __future__ import annotations

from offchain.protocol.reports import Report

BPS = 10_000
DURATION = 3_600  # seconds a test rental runs unless a test says otherwise


def event(tx, name, index=0):
    """The fields of the `index`-th event `name` that `tx` emitted, as a plain dict."""
    return dict(tx.events[name][index])


def unchecked_report(rental_id, seq, covered_until, delivered, util=None, status=0, root=b"\x22" * 32):
    """A report the pydantic model would refuse (an unknown status), built without validation so that it can
    still be signed and submitted. `util` defaults to `delivered`."""
    return Report.model_construct(
        rental_id=rental_id,
        seq=seq,
        covered_until=covered_until,
        delivered_seconds=delivered,
        util_seconds=delivered if util is None else util,
        status=status,
        telemetry_root=root,
    )


def earnings(price, delivered, util_seconds, floor_bps):
    """RentalMath.earnings of a rental's totals: price x (floor x delivered + (1 - floor) x utilSeconds), rounded
    down."""
    return price * (delivered * floor_bps + util_seconds * (BPS - floor_bps)) // BPS


def sla_slash_bps(missed, elapsed, sla_bps, max_slash_bps):
    """RentalMath.slaSlashBps: zero within the SLA, else max_slash_bps scaled by missed / elapsed."""
    if elapsed == 0 or missed * BPS <= (BPS - sla_bps) * elapsed:
        return 0
    return max_slash_bps * missed // elapsed


def fee_of(earned, fee_bps):
    return earned * fee_bps // BPS
