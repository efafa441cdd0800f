"""Which reports the escrow would skip: the one off-chain copy of `RentalEscrow._applyReport`'s rules.

An oracle judges each report against the rental's fresh state on chain before it batches it, so that a report the
chain would skip never takes a place in a batch. `predict_skip` returns the `SkipReason` the contract would emit
for the report in a block with timestamp `block_time`, in the contract's order of checks, or None when it would
apply the report. The rules are read in the contract's terms: `since` is the rental's opening time while it is
Open and its start time after, `covered_seconds` counts from `since`. A differential test drives the contract
with reports on every branch and compares its `ReportSkipped` reasons with this function's.

Only `CoverageInFuture` passes with time (the chain's clock catches up with the report): a report skipped for it
now is held, not given up (`TRANSIENT_SKIPS`). Every other reason stays true of the report for good.
"""

from __future__ import annotations

from offchain.chain.reads import Rental
from offchain.protocol.reports import Report, ReportStatus
from offchain.protocol.status import RentalStatus, SkipReason

#: Skip reasons that a later block may lift: the report is held until it does, never given up.
TRANSIENT_SKIPS = frozenset({SkipReason.COVERAGE_IN_FUTURE})

_NONCE_MASK = 2**32 - 1
_TAKES_REPORTS = (RentalStatus.RUNNING, RentalStatus.TERMINATED)


def predict_skip(report: Report, rental: Rental, block_time: int, start_timeout: int) -> SkipReason | None:
    """The reason the escrow would skip `report` of `rental` (its state on chain, as `getRental` reads it) in a
    block stamped `block_time`, given the escrow's `start_timeout`; None if it would apply it."""
    if report.rental_id & _NONCE_MASK == 0 or rental.status is RentalStatus.NONE:
        return SkipReason.UNKNOWN_RENTAL
    if rental.status not in _TAKES_REPORTS:
        if rental.status is not RentalStatus.OPEN:
            return SkipReason.RENTAL_CLOSED
        if block_time > rental.since + start_timeout:
            return SkipReason.START_TIMED_OUT
    if report.seq <= rental.last_seq:
        return SkipReason.SEQ_NOT_INCREASING
    if int(report.status) > max(ReportStatus):
        return SkipReason.UNKNOWN_STATUS
    if report.covered_until > block_time:
        return SkipReason.COVERAGE_IN_FUTURE
    if (
        report.covered_until < rental.since + rental.covered_seconds
        or report.delivered_seconds < rental.delivered_seconds
        or report.util_seconds < rental.util_seconds
    ):
        return SkipReason.TOTALS_DECREASED
    if report.delivered_seconds > report.covered_until - rental.since:
        return SkipReason.DELIVERED_ABOVE_COVERED
    if report.util_seconds > report.delivered_seconds:
        return SkipReason.UTILISATION_ABOVE_DELIVERED
    return None
