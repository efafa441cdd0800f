"""The one read model of a rental: the escrow's events of one rental folded in chain order, and the figures the
CLI and the web page show of it.

The events tell everything `RentalEscrow.getRental` holds except the opening time, so a rental a later one of its
offer replaced (which `getRental` reads as NONE and zeros) reads the same as a live one. Logs do not carry their
block's time: a caller that knows the times of the opening and of the settlement passes them along.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar, Generic, TypeVar, cast

from pydantic import BaseModel, ConfigDict

from offchain.chain.events import (
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
    opened_at: int | None = None  # the opening block's time, when known
    started: RentalStarted | None = None
    reports: tuple[ReportApplied, ...] = ()
    skipped: tuple[ReportSkipped, ...] = ()
    terminated: RentalTerminated | None = None
    declined: RentalDeclined | None = None
    settlement: RentalFinalized | None = None
    settled_at: int | None = None  # the settlement block's time, when known

    @classmethod
    def fold(cls, events: Iterable[RentalEvent]) -> RentalHistory | None:
        """The rental of one rental's events in chain order; None when its opening is not among them."""
        rental = None
        for event in events:
            if isinstance(event, RentalOpened):
                rental = cls(opened=event)
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
    def reported_seconds(self) -> int:
        """Seconds after the start that applied reports cover (clamped to the rental's end)."""
        if not self.reports or self.started is None:
            return 0
        return self.reports[-1].period_end - self.started.started_at

    @property
    def delivered_seconds(self) -> int:
        return sum(r.delivered_seconds for r in self.reports)

    @property
    def earned(self) -> int:
        """Gross earnings the applied reports accrued: what the renter pays, the protocol fee included."""
        return sum(r.earned for r in self.reports)

    @property
    def termination_refund(self) -> int:
        return 0 if self.terminated is None else self.terminated.refund

    @property
    def refunded(self) -> int:
        """Deposit credited back to the renter so far: at a termination and at the settlement."""
        return self.termination_refund + (0 if self.settlement is None else self.settlement.refund)

    @property
    def avg_util_bps(self) -> int | None:
        """GPU utilisation over the delivered seconds of every applied report; None before any was delivered."""
        delivered = self.delivered_seconds
        if not delivered:
            return None
        return round(sum(r.avg_util_bps * r.delivered_seconds for r in self.reports) / delivered)
