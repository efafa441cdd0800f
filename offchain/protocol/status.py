"""The offer and rental lifecycles (`OfferStatus`, `RentalStatus` in contracts/types/DataTypes.sol) and the
reasons the escrow's events carry (`SkipReason`, `SlashReason`, `DeclineReason`), for every off-chain reader."""

from __future__ import annotations

from enum import IntEnum


class OfferStatus(IntEnum):
    """`OfferStatus` in contracts/types/DataTypes.sol: what the `status` of `ProviderRegistry.getOffer` reads."""

    NONE = 0
    ACTIVE = 1
    PAUSED = 2
    CLOSED = 3


class RentalStatus(IntEnum):
    """The `status` of `RentalEscrow.getRental`; NONE also stands for an id a later rental of the offer replaced."""

    NONE = 0
    OPEN = 1
    RUNNING = 2
    TERMINATED = 3
    COMPLETED = 4
    FAILED = 5
    EXPIRED = 6
    TIMED_OUT = 7
    CANCELLED = 8
    DECLINED = 9

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

    UNKNOWN_RENTAL = 0  # no rental has this id, or a later rental of its offer replaced it
    RENTAL_CLOSED = 1  # the rental is settled
    START_TIMED_OUT = 2  # never started, and its start timeout has passed
    SEQ_NOT_INCREASING = 3  # a replay, or older than the report applied last
    UNKNOWN_STATUS = 4
    COVERAGE_IN_FUTURE = 5  # covers time after the block's
    TOTALS_DECREASED = 6  # coverage, delivered or utilisation-weighted seconds below the applied totals
    DELIVERED_ABOVE_COVERED = 7
    UTILISATION_ABOVE_DELIVERED = 8  # utilisation above 100 %


class SlashReason(IntEnum):
    """`RentalFinalized.slashReason`: why collateral was slashed to the renter."""

    NONE = 0
    START_TIMEOUT = 1
    SLA_BREACH = 2


class DeclineReason(IntEnum):
    """`RentalDeclined.reason`: why the provider's agent declined a rental instead of starting it."""

    SPEC_MISSING = 0
    SPEC_INVALID = 1
    IMAGE_UNAVAILABLE = 2
    EXCEEDS_OFFER = 3
    GPUS_UNAVAILABLE = 4
    AGENT_FAILURE = 5

    def describe(self) -> str:
        """What the reason means, in a few words for people (the CLI and the web page show it)."""
        return _DECLINE_DESCRIPTIONS[self]


_DECLINE_DESCRIPTIONS = {
    DeclineReason.SPEC_MISSING: "the job spec never reached the provider's agent",
    DeclineReason.SPEC_INVALID: "the job spec is unreadable, does not match the rental's hash or asks for something "
    "refused",
    DeclineReason.IMAGE_UNAVAILABLE: "the job's container image cannot be had",
    DeclineReason.EXCEEDS_OFFER: "the job asks for more memory, CPUs or network than the offer has",
    DeclineReason.GPUS_UNAVAILABLE: "the offer's GPUs are not on the provider's machine",
    DeclineReason.AGENT_FAILURE: "the provider's agent failed preparing the job",
}
