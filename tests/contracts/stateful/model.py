"""The plain-Python model of the exchange that the stateful suite (test_exchange_invariants.py) runs beside the chain.

`ExchangeModel` holds what the chain should hold after every step: wallets, escrow balances, compensation owed,
stakes, offers and their latest rentals with the totals of their last applied report, and the fee. Its transitions
are the contracts' effects, written again from the interfaces: a rule calls one after the transaction it models went
through, never for a revert; `skip_reason` says which reports a batch skips.
Nothing here talks to the chain.
"""

from __future__ import annotations

from dataclasses import dataclass

from offchain.protocol.reports import Report, ReportStatus
from offchain.protocol.status import RentalStatus, SlashReason
from scripts.deploy import SuiteParams
from tests.contracts.helpers import SkipReason
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
    covered: int = 0  # seconds after `since` the applied totals cover
    delivered: int = 0
    util: int = 0  # utilisation-weighted seconds
    claimed: int = 0

    @property
    def earned(self):
        """Gross earnings of the applied totals: RentalMath.earnings, never a sum of per-report amounts."""
        return earnings(self.price, self.delivered, self.util, self.util_floor_bps)

    @property
    def deposit(self):
        """The deposit as it stands: a termination refunds the unused time at once."""
        return self.price * self.duration

    @property
    def held(self):
        """What the escrow still holds for the rental while it is live: the deposit less what claims credited."""
        return self.deposit - self.claimed

    @property
    def live(self):
        return self.status in LIVE

    @property
    def covered_until(self):
        return self.since + self.covered

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
            "utilFloorBps": self.util_floor_bps,
            "feeBps": self.fee_bps,
            "lastSeq": self.seq,
            "coveredSeconds": self.covered,
            "deliveredSeconds": self.delivered,
            "utilSeconds": self.util,
            "earned": self.earned,
            "claimed": self.claimed,
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

    def rental_of(self, rental_id):
        """The model of the rental with this id, or None if it is not the offer's latest rental."""
        return self.rental if self.rental is not None and self.rental.rental_id == rental_id else None


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

    def takes_reports(self, rental):
        """Whether a report of this rental can apply at all (it may still be skipped for its own fields)."""
        return self.rental_skip_reason(rental) is None

    def rental_skip_reason(self, rental):
        """Why the escrow skips any report of this rental now, or None."""
        if rental is None:
            return SkipReason.UNKNOWN_RENTAL
        if not rental.live:
            return SkipReason.RENTAL_CLOSED
        if rental.status == RentalStatus.OPEN and self.now > rental.since + self.params.start_timeout:
            return SkipReason.START_TIMED_OUT
        return None

    def skip_reason(self, rental, report: Report):
        """Why the escrow skips this report of `rental` (None when the id is no rental's) now, or None if it
        applies. The checks run in the escrow's order; the totals are compared raw, before any clamping."""
        reason = self.rental_skip_reason(rental)
        if reason is not None:
            return reason
        if report.seq <= rental.seq:
            return SkipReason.SEQ_NOT_INCREASING
        if report.status > ReportStatus.FAILED:
            return SkipReason.UNKNOWN_STATUS
        if report.covered_until > self.now:
            return SkipReason.COVERAGE_IN_FUTURE
        if (
            report.covered_until < rental.covered_until
            or report.delivered_seconds < rental.delivered
            or report.util_seconds < rental.util
        ):
            return SkipReason.TOTALS_DECREASED
        if report.delivered_seconds > report.covered_until - rental.since:
            return SkipReason.DELIVERED_ABOVE_COVERED
        if report.util_seconds > report.delivered_seconds:
            return SkipReason.UTILISATION_ABOVE_DELIVERED
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
        """A running rental cut short now: the renter is owed the unused time at once. Its applied coverage never
        passes the block time, so it stays within the shortened duration."""
        self.balances[rental.renter.address] += rental.price * (rental.end - self.now)
        rental.duration = self.now - rental.since
        rental.status = RentalStatus.TERMINATED

    def settle(self, offer, rental, status, missed, slash_bps):
        """The model of `_settle`: the registry slashes and unlocks the collateral and counts the rental, the
        escrow credits the provider its earnings less the fee and the treasury the fee, less what claims already
        credited, and the renter the rest of the deposit. Returns the RentalFinalized event the escrow owes, with
        the rental's lifetime payout and fee."""
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
        earned = rental.earned
        fee = fee_of(earned, rental.fee_bps)
        refund = rental.deposit - earned
        self.pay_out(offer, rental)
        self.balances[rental.renter.address] += refund

        if not slashed:
            reason = SlashReason.NONE
        else:
            reason = SlashReason.START_TIMEOUT if status == RentalStatus.TIMED_OUT else SlashReason.SLA_BREACH
        return {
            "rentalId": rental.rental_id,
            "status": status,
            "providerPayout": earned - fee,
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

    def pay_out(self, offer, rental):
        """Credits the provider and the treasury the rental's earnings not claimed yet, each side's share the
        difference of its share of the totals; returns (payout, fee) of this credit."""
        earned, claimed = rental.earned, rental.claimed
        fee = fee_of(earned, rental.fee_bps) - fee_of(claimed, rental.fee_bps)
        payout = earned - claimed - fee
        self.balances[offer.provider.address] += payout
        self.balances[self.treasury] += fee
        return payout, fee

    def claim(self, offer, rental):
        """A claim of a started live rental; returns the EarningsClaimed event the escrow owes."""
        payout, fee = self.pay_out(offer, rental)
        rental.claimed = rental.earned
        return {"rentalId": rental.rental_id, "earned": rental.claimed, "providerPayout": payout, "fee": fee}

    def apply_report(self, offer, rental, report: Report):
        """The model of `_applyReport` for a report `skip_reason` lets through: the totals clamped to the rental's
        end, then the settlement a Completed or Failed report triggers. Returns the ReportApplied event the escrow
        owes and the RentalFinalized one, or None if the report does not settle the rental."""
        rental.covered = min(report.covered_until - rental.since, rental.duration)
        rental.delivered = min(report.delivered_seconds, rental.covered)
        rental.util = min(report.util_seconds, rental.delivered)
        rental.seq = report.seq
        if rental.status == RentalStatus.OPEN:
            rental.status = RentalStatus.RUNNING
        applied = {
            "rentalId": rental.rental_id,
            "seq": report.seq,
            "coveredUntil": rental.covered_until,
            "deliveredSeconds": rental.delivered,
            "utilSeconds": rental.util,
            "telemetryRoot": "0x" + bytes(report.telemetry_root).hex(),
        }
        if report.status == ReportStatus.COMPLETED:
            return applied, self.settle_elapsed(offer, rental, RentalStatus.COMPLETED, rental.covered)
        if report.status == ReportStatus.FAILED:
            return applied, self.settle_elapsed(offer, rental, RentalStatus.FAILED, rental.covered)
        return applied, None

    # ------------------------------------------------------------------ withdrawals

    def withdraw(self, account):
        self.wallets[account.address] += self.balances[account.address]
        self.balances[account.address] = 0

    def withdraw_compensation(self, account):
        self.wallets[account.address] += self.compensation[account.address]
        self.compensation[account.address] = 0

    def live_deposits(self):
        """What the escrow holds for live rentals: their deposits less what claims credited."""
        return sum(o.rental.held for o in self.offers if o.rental and o.rental.live)

    def offer_of(self, rental_id):
        return next(o for o in self.offers if o.offer_id == rental_id >> 32)

    def locked_collateral(self, provider):
        """The collateral of the provider's live rentals."""
        return sum(
            o.collateral for o in self.offers if o.provider == provider and o.rental is not None and o.rental.live
        )
