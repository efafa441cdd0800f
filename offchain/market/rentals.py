"""The one read model of a rental: the escrow's events of one rental folded in chain order, and the figures the
CLI and the web page show of it.

The events tell everything `RentalEscrow.getRental` holds except the opening time and the utilisation floor, so a
rental a later one of its offer replaced (which `getRental` reads as NONE and zeros) reads the same as a live one.
The floor is the offer's (fixed when it is listed), which the caller passes along. Logs do not carry their block's
time: a caller that knows the times of the opening and of the settlement passes them along.

Reports are cumulative: each applied one carries the rental's totals since its start, so a period's figures are
the differences of two consecutive totals, and earnings are computed from the totals as the escrow computes them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar, Generic, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field

from offchain.chain.events import (
    EarningsClaimed,
    RentalDeclined,
    RentalEvent,
    RentalFinalized,
    RentalOpened,
    RentalStarted,
    RentalTerminated,
    ReportApplied,
    ReportSkipped,
)
from offchain.protocol.status import DeclineReason, RentalStatus

T = TypeVar("T")

BPS = 10_000
#: Rentals whose earnings a claim credits now (`claimPayout` refuses the others).
CLAIMABLE_STATUSES = (RentalStatus.RUNNING, RentalStatus.TERMINATED)


def earnings(price_per_second: int, delivered_seconds: int, util_seconds: int, util_floor_bps: int) -> int:
    """Gross earnings of a rental's totals, rounded down as `RentalMath.earnings` rounds them: the floor share of
    the price is paid for every delivered second, the rest in proportion to utilisation."""
    return price_per_second * (delivered_seconds * util_floor_bps + util_seconds * (BPS - util_floor_bps)) // BPS


def utilisation_bps(util_seconds: int, delivered_seconds: int) -> int | None:
    """Average utilisation of `delivered_seconds` that carry `util_seconds`; None when nothing was delivered."""
    return round(util_seconds * BPS / delivered_seconds) if delivered_seconds else None


class ReportPeriod(BaseModel):
    """What one applied report added to the totals applied before it: the period from `start` (the previous
    report's coverage, or the start) to `covered_until`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    report: ReportApplied
    start: int
    delivered_seconds: int
    util_seconds: int
    earned: int  # gross

    @property
    def seq(self) -> int:
        return self.report.seq

    @property
    def covered_until(self) -> int:
        return self.report.covered_until

    @property
    def util_bps(self) -> int | None:
        return utilisation_bps(self.util_seconds, self.delivered_seconds)


class _Opening(Generic[T]):
    """A figure of the rental that its opening fixed, read from its `RentalOpened` event."""

    def __init__(self, field: str) -> None:
        self.field = field

    def __get__(self, rental: RentalHistory, owner: type | None = None) -> T:
        return cast(T, getattr(rental.opened, self.field))


class RentalHistory(BaseModel):
    """A rental's events so far; `opened` starts it and `apply` adds the next event (in chain order)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    opened: RentalOpened
    util_floor_bps: int = Field(ge=0, le=BPS)  # the offer's
    opened_at: int | None = None  # the opening block's time, when known
    started: RentalStarted | None = None
    reports: tuple[ReportApplied, ...] = ()
    skipped: tuple[ReportSkipped, ...] = ()
    claims: tuple[EarningsClaimed, ...] = ()
    terminated: RentalTerminated | None = None
    declined: RentalDeclined | None = None
    settlement: RentalFinalized | None = None
    settled_at: int | None = None  # the settlement block's time, when known

    @classmethod
    def fold(cls, events: Iterable[RentalEvent], util_floor_bps: int) -> RentalHistory | None:
        """The rental of one rental's events in chain order, of an offer with utilisation floor `util_floor_bps`;
        None when its opening is not among them."""
        rental = None
        for event in events:
            if isinstance(event, RentalOpened):
                rental = cls(opened=event, util_floor_bps=util_floor_bps)
            elif rental is not None:
                rental = rental.apply(event)
        return rental

    def apply(self, event: RentalEvent, at: int | None = None) -> RentalHistory:
        """The rental after `event`, an event of it after those applied so far, in a block of time `at`."""
        if event.rental_id != self.rental_id or isinstance(event, RentalOpened):
            raise ValueError(f"{event.name} of rental {event.rental_id} does not follow rental {self.rental_id}")
        match event:
            case RentalStarted():
                return self.model_copy(update={"started": event})
            case ReportApplied():
                return self.model_copy(update={"reports": (*self.reports, event)})
            case ReportSkipped():
                return self.model_copy(update={"skipped": (*self.skipped, event)})
            case EarningsClaimed():
                return self.model_copy(update={"claims": (*self.claims, event)})
            case RentalTerminated():
                return self.model_copy(update={"terminated": event})
            case RentalDeclined():
                return self.model_copy(update={"declined": event})
            case RentalFinalized():
                return self.model_copy(update={"settlement": event, "settled_at": at})
        raise TypeError(f"not a rental event: {event!r}")

    # ------------------------------------------------------------------------------------- as opened

    rental_id: ClassVar[_Opening[int]] = _Opening("rental_id")
    offer_id: ClassVar[_Opening[int]] = _Opening("offer_id")
    renter: ClassVar[_Opening[str]] = _Opening("renter")
    price_per_second: ClassVar[_Opening[int]] = _Opening("price_per_second")
    booked_duration: ClassVar[_Opening[int]] = _Opening("duration")  # the duration paid for at the opening
    deposit: ClassVar[_Opening[int]] = _Opening("deposit")

    @property
    def job_spec_hash(self) -> str:
        """0x-hex."""
        return "0x" + self.opened.job_spec_hash.hex()

    # ----------------------------------------------------------------------------------------- derived

    @property
    def status(self) -> RentalStatus:
        if self.settlement is not None:
            return self.settlement.status
        if self.terminated is not None:
            return RentalStatus.TERMINATED
        return RentalStatus.OPEN if self.started is None else RentalStatus.RUNNING

    @property
    def started_at(self) -> int | None:
        return None if self.started is None else self.started.started_at

    @property
    def started_by_report(self) -> bool:
        return self.started is not None and self.started.by_report

    @property
    def since(self) -> int | None:
        """The start time once started, else the opening time (None when unknown): where the rental's time runs
        from, as `getRental` has it."""
        return self.opened_at if self.started is None else self.started.started_at

    @property
    def duration(self) -> int:
        """Seconds from `since`: the booked duration, shortened by a termination."""
        if self.terminated is None or self.started is None:
            return self.booked_duration
        return self.terminated.ends_at - self.started.started_at

    @property
    def ends_at(self) -> int | None:
        return None if self.since is None else self.since + self.duration

    @property
    def terminated_at(self) -> int | None:
        return None if self.terminated is None else self.terminated.ends_at

    @property
    def decline_reason(self) -> DeclineReason | None:
        return None if self.declined is None else self.declined.reason

    @property
    def last_seq(self) -> int:
        """The sequence number of the last applied report; 0 before the first."""
        return self.reports[-1].seq if self.reports else 0

    @property
    def covered_until(self) -> int | None:
        """Up to when the applied totals cover the rental; None before the first report."""
        return self.reports[-1].covered_until if self.reports else None

    @property
    def covered_seconds(self) -> int:
        """Seconds after the start that the applied totals cover (clamped to the rental's end)."""
        if not self.reports or self.started is None:
            return 0
        return self.reports[-1].covered_until - self.started.started_at

    @property
    def delivered_seconds(self) -> int:
        """Applied total."""
        return self.reports[-1].delivered_seconds if self.reports else 0

    @property
    def util_seconds(self) -> int:
        """Applied total of delivered seconds weighted by utilisation."""
        return self.reports[-1].util_seconds if self.reports else 0

    @property
    def avg_util_bps(self) -> int | None:
        """GPU utilisation over every delivered second; None before any was delivered."""
        return utilisation_bps(self.util_seconds, self.delivered_seconds)

    @property
    def earned(self) -> int:
        """Gross earnings of the applied totals: what the renter pays, the protocol fee included."""
        return earnings(self.price_per_second, self.delivered_seconds, self.util_seconds, self.util_floor_bps)

    @property
    def claimed(self) -> int:
        """Of `earned`, what the provider's claims credited while the rental ran (gross, fee included)."""
        return self.claims[-1].earned if self.claims else 0

    @property
    def claimable(self) -> int:
        """Gross earnings a claim would credit now; 0 once settled (the settlement credits the rest)."""
        return 0 if self.settlement is not None else self.earned - self.claimed

    @property
    def provider_paid(self) -> int:
        """What the provider has been credited so far, after the fee: its lifetime payout once settled."""
        if self.settlement is not None:
            return self.settlement.provider_payout
        return sum(claim.provider_payout for claim in self.claims)

    @property
    def periods(self) -> list[ReportPeriod]:
        """Each applied report as the period it added, oldest first."""
        periods = []
        start = self.started_at or 0
        delivered = util = earned = 0
        for report in self.reports:
            total = earnings(self.price_per_second, report.delivered_seconds, report.util_seconds, self.util_floor_bps)
            periods.append(
                ReportPeriod(
                    report=report,
                    start=start,
                    delivered_seconds=report.delivered_seconds - delivered,
                    util_seconds=report.util_seconds - util,
                    earned=total - earned,
                )
            )
            start, delivered, util, earned = report.covered_until, report.delivered_seconds, report.util_seconds, total
        return periods

    @property
    def termination_refund(self) -> int:
        return 0 if self.terminated is None else self.terminated.refund

    @property
    def refunded(self) -> int:
        """Deposit credited back to the renter so far: at a termination and at the settlement."""
        return self.termination_refund + (0 if self.settlement is None else self.settlement.refund)
