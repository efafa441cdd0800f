"""The escrow's rental lifecycle (`RentalStatus` in contracts/types/DataTypes.sol) and the reasons its events carry
(`SkipReason`, `SlashReason`), for every off-chain reader."""

from __future__ import annotations

from enum import IntEnum


class RentalStatus(IntEnum):
    """`RentalEscrow.getRental(...).status`; NONE also stands for an id a later rental of the offer replaced."""

    NONE = 0
    OPEN = 1
    RUNNING = 2
    TERMINATED = 3
    COMPLETED = 4
    FAILED = 5
    EXPIRED = 6
    TIMED_OUT = 7
    CANCELLED = 8

    @property
    def is_live(self) -> bool:
        """Open, Running or Terminated: the rental holds its offer and may still take reports."""
        return self in (RentalStatus.OPEN, RentalStatus.RUNNING, RentalStatus.TERMINATED)

    @property
    def is_final(self) -> bool:
        """Settled: nothing about the rental changes any more."""
        return self >= RentalStatus.COMPLETED


class SkipReason(IntEnum):
    """`ReportSkipped.reason`: why a report of a signed batch was not applied."""

    UNKNOWN_RENTAL = 0
    RENTAL_CLOSED = 1
    START_TIMED_OUT = 2


class SlashReason(IntEnum):
    """`RentalFinalized.slashReason`: why collateral was slashed to the renter."""

    NONE = 0
    START_TIMEOUT = 1
    SLA_BREACH = 2
