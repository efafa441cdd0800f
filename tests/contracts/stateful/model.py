"""The plain-Python model of the exchange that the stateful suite (test_exchange_invariants.py) runs beside the chain.

`ExchangeModel` holds what the chain should hold after every step: wallets, escrow balances, compensation owed,
stakes, offers and their latest rentals, and the fee. Its transitions are the contracts' effects, written again
from the interfaces: a rule calls one after the transaction it models went through, never for a revert.
Nothing here talks to the chain.
"""

from __future__ import annotations

from dataclasses import dataclass

from offchain.protocol.reports import Report, ReportStatus
from offchain.protocol.status import RentalStatus, SkipReason, SlashReason
from scripts.deploy import SuiteParams
from tests.contracts.unit.RentalEscrow.escrow_helpers import BPS, earnings, fee_of, sla_slash_bps

LIVE = (RentalStatus.OPEN, RentalStatus.RUNNING, RentalStatus.TERMINATED)
NEVER_STARTED = (RentalStatus.TIMED_OUT, RentalStatus.CANCELLED, RentalStatus.DECLINED)


@dataclass
class StakeModel:
    staked: int
    locked: int = 0
    unbonding: int = 0
    unbonding_ends_at: int = 0
    rentals_completed: int = 0
    slashes: int = 0
    declines: int = 0
    seconds_delivered: int = 0
    seconds_missed: int = 0

    @property
    def free(self):
        return self.staked - self.locked - self.unbonding

    def as_dict(self):
        """`getProvider` without the agent key, by field name."""
        return {
            "staked": self.staked,
            "locked": self.locked,
            "unbonding": self.unbonding,
            "unbondingEndsAt": self.unbonding_ends_at,
            "rentalsCompleted": self.rentals_completed,
            "slashes": self.slashes,
            "declines": self.declines,
            "secondsDelivered": self.seconds_delivered,
            "secondsMissed": self.seconds_missed,
        }


@dataclass
class RentalModel:
    rental_id: int
    renter: object
    price: int
    duration: int  # shortened by a termination
    since: int  # opening time while Open, start time once started
    util_floor_bps: int
    fee_bps: int
    status: RentalStatus = RentalStatus.OPEN
    seq: int = 0
    reported: int = 0
    delivered: int = 0
    earned: int = 0

    @property
    def deposit(self):
        """What the escrow holds for the rental while it is live: a termination refunds the rest at once."""
        return self.price * self.duration

    @property
    def live(self):
        return self.status in LIVE

    @property
    def last_end(self):
        return self.since + self.reported

    @property
    def end(self):
        return self.since + self.duration

    def as_dict(self):
        """What `getRental` returns for it, by return value name."""
        return {
            "status": self.status,
            "renter": self.renter.address,
            "pricePerSecond": self.price,
            "duration": self.duration,
            "since": self.since,
            "lastSeq": self.seq,
            "reportedSeconds": self.reported,
            "deliveredSeconds": self.delivered,
            "earned": self.earned,
        }


@dataclass
class OfferModel:
    offer_id: int
    provider: object
    collateral: int
    price: int
    util_floor_bps: int
    min_duration: int
    max_duration: int
    egress: bool
    active: bool = True
    nonce: int = 0
    rental: RentalModel | None = None  # the offer's latest rental; earlier ones are superseded

    def rental_id(self, nonce):
        return (self.offer_id << 32) | nonce

    def unknown_rental_id(self):
        """A superseded id of the offer if it has one, else the id its next rental will get."""
        return self.rental_id(self.nonce - 1 if self.nonce >= 2 else self.nonce + 1)


def is_live(rental):
    return rental.live


def is_open(rental):
    return rental.status == RentalStatus.OPEN


def is_open_or_running(rental):
    return rental.status in (RentalStatus.OPEN, RentalStatus.RUNNING)


def is_started_and_live(rental):
    return rental.status in (RentalStatus.RUNNING, RentalStatus.TERMINATED)


@dataclass
class ExchangeModel:
    """The exchange by address: `wallets` (token balances), `balances` (what the escrow owes), `compensation`
    (what the registry owes renters) and `stakes`, plus the offers, the fee and `now`, the block time."""

    params: SuiteParams
    treasury: str
    now: int
    wallets: dict
    balances: dict
    compensation: dict
    stakes: dict  # provider address -> StakeModel
    offers: list
    fee_bps: int

    # ------------------------------------------------------------------ stake

    def stake(self, provider, amount):
        self.stakes[provider.address].staked += amount
        self.wallets[provider.address] -= amount

    def request_unstake(self, provider, amount):
        stake = self.stakes[provider.address]
        stake.unbonding += amount
        stake.unbonding_ends_at = self.now + self.params.unbonding_period

    def withdraw_unstaked(self, provider):
        stake = self.stakes[provider.address]
        stake.staked -= stake.unbonding
        self.wallets[provider.address] += stake.unbonding
        stake.unbonding = 0

    # ------------------------------------------------------------------ rentals

    def skip_reason(self, rental):
        """Why the escrow skips a report of this rental, or None if the rental takes reports."""
        if rental is None:
            return SkipReason.UNKNOWN_RENTAL
        if rental.status == RentalStatus.OPEN and self.now > rental.since + self.params.start_timeout:
            return SkipReason.START_TIMED_OUT
        if not rental.live:
            return SkipReason.RENTAL_CLOSED
        return None

    def open_rental(self, offer, renter, duration):
        """Locks the offer's collateral and takes the deposit; returns the new rental."""
        offer.nonce += 1
        offer.rental = RentalModel(
            offer.rental_id(offer.nonce), renter, offer.price, duration, self.now, offer.util_floor_bps, self.fee_bps
        )
        self.stakes[offer.provider.address].locked += offer.collateral
        self.wallets[renter.address] -= offer.rental.deposit
        return offer.rental

    def start(self, rental):
        rental.since = self.now
        rental.status = RentalStatus.RUNNING

    def terminate(self, rental):
        """A running rental cut short now: the renter is owed the unused time at once."""
        self.balances[rental.renter.address] += rental.price * (rental.end - self.now)
        rental.duration = self.now - rental.since
        rental.status = RentalStatus.TERMINATED

    def settle(self, offer, rental, status, missed, slash_bps):
        """The model of `_settle`: the registry slashes and unlocks the collateral and counts the rental, the
        escrow credits the provider its earnings less the fee, the treasury the fee and the renter the rest.
        Returns the RentalFinalized event the escrow owes."""
        rental.status = status
        stake = self.stakes[offer.provider.address]
        slashed = offer.collateral * slash_bps // BPS
        stake.locked -= offer.collateral
        stake.staked -= slashed
        if status == RentalStatus.DECLINED:
            stake.declines += 1
        elif status not in NEVER_STARTED:
            stake.rentals_completed += 1
            stake.seconds_delivered += rental.delivered
        stake.seconds_missed += missed
        if slashed:
            stake.slashes += 1
            self.compensation[rental.renter.address] += slashed
        fee = fee_of(rental.earned, rental.fee_bps)
        refund = rental.deposit - rental.earned
        self.balances[offer.provider.address] += rental.earned - fee
        self.balances[self.treasury] += fee
        self.balances[rental.renter.address] += refund

        if not slashed:
            reason = SlashReason.NONE
        else:
            reason = SlashReason.START_TIMEOUT if status == RentalStatus.TIMED_OUT else SlashReason.SLA_BREACH
        return {
            "rentalId": rental.rental_id,
            "status": status,
            "providerPayout": rental.earned - fee,
            "fee": fee,
            "refund": refund,
            "deliveredSeconds": rental.delivered,
            "missedSeconds": missed,
            "slashed": slashed,
            "slashReason": reason,
        }

    def settle_elapsed(self, offer, rental, status, elapsed):
        """Settles a rental that ran `elapsed` seconds: the seconds it did not deliver are missed, and slashed
        once they exceed the SLA."""
        missed = elapsed - rental.delivered
        slash_bps = sla_slash_bps(missed, elapsed, self.params.sla_bps, self.params.sla_slash_bps)
        return self.settle(offer, rental, status, missed, slash_bps)

    def apply_report(self, offer, rental, report: Report):
        """The model of `_accrue` and of the settlement a Completed or Failed report triggers; returns the
        RentalFinalized event the escrow owes, or None if the report does not settle the rental."""
        period_end = min(report.period_end, rental.end)
        delivered = min(report.delivered_seconds, period_end - rental.last_end)
        rental.earned += earnings(rental.price, delivered, rental.util_floor_bps, report.avg_util_bps)
        rental.seq = report.seq
        rental.reported = period_end - rental.since
        rental.delivered += delivered
        if rental.status == RentalStatus.OPEN:
            rental.status = RentalStatus.RUNNING
        if report.status == ReportStatus.COMPLETED:
            return self.settle_elapsed(offer, rental, RentalStatus.COMPLETED, rental.reported)
        if report.status == ReportStatus.FAILED:
            return self.settle_elapsed(offer, rental, RentalStatus.FAILED, rental.reported)
        return None

    # ------------------------------------------------------------------ withdrawals

    def withdraw(self, account):
        self.wallets[account.address] += self.balances[account.address]
        self.balances[account.address] = 0

    def withdraw_compensation(self, account):
        self.wallets[account.address] += self.compensation[account.address]
        self.compensation[account.address] = 0

    def live_deposits(self):
        return sum(o.rental.deposit for o in self.offers if o.rental and o.rental.live)

    def locked_collateral(self, provider):
        """The collateral of the provider's live rentals."""
        return sum(
            o.collateral for o in self.offers if o.provider == provider and o.rental is not None and o.rental.live
        )
