"""Stateful invariants of the whole exchange: stake, rent, report, claim, settle and withdraw against a Python model.

After every step, whatever the rules did:

- `invariant_block_time_is_the_model_clock`: the latest block's timestamp is the model's clock.
- `invariant_escrow_holds_what_it_owes`: the escrow's token balance is every withdrawable balance plus the deposits
  of live rentals less what their claims already credited, to the unit, by the chain's own records and by the
  model's.
- `invariant_registry_holds_what_it_owes`: the registry's token balance is every provider's stake plus the
  compensation owed to renters, to the unit, by the chain's own records and by the model's.
- `invariant_balances_match_model`: wallets, escrow balances and compensation owed are the model's.
- `invariant_stakes_match_model`: every provider's record is the model's; its locked collateral is that of its
  live rentals and, with what is unbonding, never exceeds its stake.
- `invariant_offers_match_model`: every offer's price, status (active or paused) and egress are the model's.
- `invariant_rentals_match_model`: every offer's latest rental (its applied totals, earnings and claims included) is
  the model's, a superseded id reads as no rental, and the offer's live rental is the model's.
- `invariant_earnings_are_the_formula_on_the_totals`: a rental's earnings are RentalMath.earnings of its last
  applied totals to the unit, claims never pass them nor they the deposit, util <= delivered <= covered <=
  duration, and coverage never reaches past the block time.
- `invariant_rentals_move_forward`: a status only moves forward (Open -> Running -> Terminated -> final, Open ->
  TimedOut / Cancelled / Declined), and the applied seq, totals and claimed earnings never go back.
- `invariant_slashes_within_collateral`: no settlement slashes more than the rental's collateral.
- `invariant_nothing_paid_twice`: by every rental's events, its claims never pass the lifetime earnings its
  settlement reports, it never credits more than its deposit and a settled rental exactly its deposit, and every
  balance the escrow credited is one of those credits, whatever the order of reports, claims, terminations and
  settlements.

Reports are cumulative: `rule_submit_reports` sends batches with random seq jumps in which some reports are stale,
decreasing, over-delivered, over-utilised, in the future or of an unknown status, and asserts that the batch goes
through (only signatures may revert it, see `rule_submit_rejected_batch`) with each report applied or skipped for
the reason the model gives.

Modelled on curve-dao-contracts' stateful tests: every `rule_*` either asserts the named revert of the branch it
hits or applies its action to the plain-Python model (model.py), and every invariant compares the chain with that
model or checks a property that must hold whatever the model says (solvency, earnings from the totals,
forward-only status, single payment). GPUEX_STATEFUL_EXAMPLES runs (default 30) of GPUEX_STATEFUL_STEPS steps
(default 20) each.

Block time is the model's clock. Every transaction is mined at exactly `self.model.now` (anvil's
`evm_setNextBlockTimestamp` accepts the last block's timestamp again) and only the sleep rules move it, so the
model decides every deadline branch and hypothesis replays and shrinks a failing run exactly.
"""

from __future__ import annotations

import itertools
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import brownie
import pytest
from brownie import chain, web3
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak
from hypothesis import Phase
from hypothesis import strategies as st

from offchain.ops.roles import ACCOUNTS
from offchain.protocol.reports import EscrowDomain, ReportStatus, sign_batch, submit_args, typed_batch
from offchain.protocol.status import OfferStatus
from scripts.deploy import USDC, SuiteParams
from tests.contracts.helpers import (
    ORACLE_KEYS,
    ORACLES,
    DeclineReason,
    RentalStatus,
    error,
    new_gpu_hashes,
)
from tests.contracts.stateful.model import (
    LIVE,
    NEVER_STARTED,
    ExchangeModel,
    OfferModel,
    StakeModel,
    is_live,
    is_open,
    is_open_or_running,
    is_started_and_live,
)
from tests.contracts.unit.RentalEscrow.escrow_helpers import earnings, unchecked_report

PARAMS = SuiteParams()
THRESHOLD = 2  # the suite fixture's oracle set is 2 of 3
OUTSIDER_KEY = keccak(text="gpuex stateful outsider oracle")
TELEMETRY_ROOT = b"\x33" * 32
JOB_SPEC = b"\x11" * 32

# (provider index, GPUs, price per second, utilisation floor bps, min duration, max duration, egress): pure-time
# (floor 10000) and utilisation-weighted offers, locking 100 to 300 tUSD of collateral, some allowing egress.
OFFERS = (
    (0, 1, 1_000, 10_000, 60, 3_600, False),
    (0, 2, 2_500, 3_000, 120, 7_200, True),
    (1, 1, 700, 0, 60, 3_600, False),
    (1, 3, 4_000, 6_000, 60, 5_000, True),
    (2, 2, 10_000, 10_000, 300, 2_000, False),
)
# Provider 0 cannot back both its offers at once, provider 1 exactly can, provider 2 must stake first.
INITIAL_STAKE = (200 * USDC, 400 * USDC, 0)

# How a rule picks its rental (see `_target`).
UNKNOWN_ID, ANY_RENTAL, WANTED_FIRST = 0, 1, 2


@dataclass
class ChainView:
    """What the invariants compare, read in one JSON-RPC batch after each step."""

    now: int
    escrow_tokens: int
    registry_tokens: int
    wallets: dict
    balances: dict
    compensation: dict
    stakes: dict  # address -> Provider struct
    rentals: list  # per offer: getRental of its latest id (of nonce 1 if it has none yet)
    superseded: list  # per offer: getRental of the id before its latest, None if it has no such id
    live_rental_ids: list
    offers: list  # per offer: the Offer struct


@dataclass
class Ledger:
    """One rental's money by its events: the deposit it opened with, the gross earnings its claims credited, what
    its termination and settlement refunded, and the lifetime earnings its settlement reported."""

    deposit: int
    claimed: int = 0
    refunded: int = 0
    settled: int | None = None


def join_confirmation_threads():
    """Waits for Brownie's confirmation threads, which outlive the transaction call.

    A thread still running when the chain reverts for the next run marks that run's transaction with the same
    sender and nonce as dropped ("Tx dropped without known replacement").
    """
    for thread in threading.enumerate():
        if "_await_confirmation" in thread.name:
            thread.join()


def events(tx, name):
    """Every event `name` that `tx` emitted, in order, as plain dicts."""
    return [dict(e) for e in tx.events[name]] if name in tx.events else []


def read_batch(calls):
    """Runs `(contract call, args)` pairs as one JSON-RPC batch of eth_calls and decodes the results.

    One call at a time costs about 4 ms through Brownie; the invariants read ~50 values after every step.
    """
    replies = web3.provider.make_batch_request(
        [("eth_call", [{"to": fn._address, "data": fn.encode_input(*args)}, "latest"]) for fn, args in calls]
    )
    return [fn.decode_output(reply["result"]) for (fn, _), reply in zip(calls, replies)]


@pytest.fixture(scope="module")
def exchange(
    accounts, token, registry, escrow, deployer, treasury, provider, provider2, renter, renter2, agent, stranger, params
):
    """Funds a third provider and renter, stakes INITIAL_STAKE, sets provider 0's agent key, lists OFFERS."""
    assert params == PARAMS
    providers = (provider, provider2, accounts[ACCOUNTS["provider3"]])
    renters = (renter, renter2, accounts[ACCOUNTS["renter3"]])
    for account in (providers[2], renters[2]):
        token.mint(account, 1_000_000 * USDC, {"from": deployer})
        token.approve(registry, 2**256 - 1, {"from": account})
        token.approve(escrow, 2**256 - 1, {"from": account})
    for account, amount in zip(providers, INITIAL_STAKE):
        if amount:
            registry.stake(amount, {"from": account})
    registry.setAgent(agent, {"from": providers[0]})

    offer_ids = []
    for index, gpus, price, util_floor_bps, min_duration, max_duration, egress in OFFERS:
        hashes = new_gpu_hashes(gpus)
        registry.registerGpus(hashes, {"from": providers[index]})
        terms = (
            b"H100-80GB".ljust(32, b"\0"),
            81_559,
            price,
            min_duration,
            max_duration,
            b"eu-west".ljust(16, b"\0"),
            util_floor_bps,
            egress,
            hashes,
        )
        offer_ids.append(registry.createOffer(terms, {"from": providers[index]}).events["OfferCreated"]["offerId"])
    return dict(
        token=token,
        registry=registry,
        escrow=escrow,
        deployer=deployer,
        treasury=treasury,
        providers=providers,
        renters=renters,
        agent=agent,
        stranger=stranger,
        offer_ids=offer_ids,
    )


class ExchangeStateMachine:
    st_index = st.integers(0, 2)
    st_offer = st.integers(0, len(OFFERS) - 1)
    st_account = st.integers(0, 6)  # providers, renters, treasury
    st_pick = st.integers(0, 9)  # UNKNOWN_ID, ANY_RENTAL, else WANTED_FIRST
    st_flag = st.booleans()
    st_percent = st.integers(0, 100)
    st_stake = st.integers(0, 400 * USDC)
    st_unstake_percent = st.integers(0, 110)  # above 100: more than the free stake
    st_initial_rentals = st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, len(OFFERS) - 1), st.integers(0, 100), st.booleans()),
        min_size=1,
        max_size=3,
    )
    st_duration = st.one_of(st.integers(60, 2_000), st.integers(1, 8_000))
    st_max_price = st.sampled_from(["price", "below", "any"])
    st_caller = st.sampled_from(["provider", "provider", "agent", "renter", "stranger"])
    # Mostly a DeclineReason, sometimes a value past the last one.
    st_decline_reason = st.one_of(st.sampled_from(list(DeclineReason)), st.integers(len(DeclineReason), 255))
    # Mostly short: one long sleep times out every rental not started yet (start timeout 600 s); the deadline
    # rule reaches the end of long rentals.
    st_sleep = st.one_of(st.integers(1, 120), st.integers(1, 600), st.integers(600, 4_000))
    st_deadline = st.sampled_from(["start_timeout", "end", "finalizable"])
    st_delta = st.integers(-1, 1)
    # Mostly within the start timeout, so that reports still find rentals to apply to.
    st_report_wait = st.one_of(st.just(0), st.integers(1, 120), st.integers(1, 900))
    # One report: (kind, seq jump, share of the time since the last coverage it adds, share of that newly covered
    # time delivered, share of the new delivery at full utilisation, status, excess of a flaw). Mostly valid; every
    # other kind carries one flaw the escrow must skip it for, unless an earlier report of the batch changed things.
    st_report_draw = st.tuples(
        st.sampled_from(
            ["valid"] * 5 + ["stale", "decreasing", "over_delivered", "over_util", "future", "unknown_status"]
        ),
        st.one_of(st.just(1), st.integers(1, 60)),
        st.one_of(st.just(100), st.integers(0, 100)),
        st.one_of(st.just(100), st.integers(90, 100), st.integers(0, 100)),
        st.one_of(st.just(100), st.just(0), st.integers(0, 100)),
        st.sampled_from([ReportStatus.RUNNING] * 10 + [ReportStatus.COMPLETED, ReportStatus.FAILED]),
        st.integers(1, 1_000),
    )
    st_report_draws = st.lists(st_report_draw, min_size=1, max_size=4)
    st_other_slot = st.sampled_from([None, None, "first", "last"])
    st_signers = st.sampled_from([list(p) for n in (2, 3) for p in itertools.permutations(range(3), n)])
    st_batch_flaw = st.sampled_from(
        [
            "empty",
            "one_signature",
            "no_signature",
            "duplicate_signer",
            "outsider_signer",
            "malformed",
            "signed_for_another_version",
            "next_version",
        ]
    )
    st_claim_caller = st.sampled_from(["provider", "renter", "stranger"])
    st_claim_after = st.sampled_from([None, None, "provider", "renter", "stranger"])
    st_fee = st.integers(0, 1_200)
    st_price = st.integers(0, 20_000)

    def __init__(cls, exchange):
        for name, value in exchange.items():
            setattr(cls, name, value)
        cls.accounts = cls.providers + cls.renters + (cls.treasury,)
        cls.domain = EscrowDomain(
            chain_id=chain.id, escrow=cls.escrow.address, oracle_set_version=cls.escrow.oracleSet()["version"]
        )
        cls.initial_wallets = {a.address: cls.token.balanceOf(a) for a in cls.accounts}
        cls.initial_stakes = {p.address: cls.registry.getProvider(p)["staked"] for p in cls.providers}
        cls.initial_fee_bps = cls.escrow.feeConfig()["feeBps"]
        cls.initial_offers = []
        for offer_id in cls.offer_ids:
            offer = cls.registry.getOffer(offer_id)
            cls.initial_offers.append(
                dict(
                    offer_id=offer_id,
                    provider=next(p for p in cls.providers if p == offer["provider"]),
                    collateral=cls.registry.collateralOf(offer_id),
                    price=offer["pricePerSecond"],
                    util_floor_bps=offer["utilFloorBps"],
                    min_duration=offer["minDuration"],
                    max_duration=offer["maxDuration"],
                    egress=offer["egress"],
                )
            )

    def setup(self):
        self.model = ExchangeModel(
            params=PARAMS,
            treasury=self.treasury.address,
            now=web3.eth.get_block("latest").timestamp,
            wallets=dict(self.initial_wallets),
            balances={a.address: 0 for a in self.accounts},
            compensation={a.address: 0 for a in self.accounts},
            stakes={address: StakeModel(staked) for address, staked in self.initial_stakes.items()},
            offers=[OfferModel(**terms) for terms in self.initial_offers],
            fee_bps=self.initial_fee_bps,
        )
        self.settlements = []  # (slashed, collateral) of every settlement, as the chain reported them
        self.seen = {}  # rental id -> (status, seq, totals, claimed) at the previous step
        self.ledger = {}  # rental id -> Ledger: what its events say the escrow credited for it
        self.withdrawn = 0  # what Withdrawn events paid out of the escrow
        self._view = None

    # ------------------------------------------------------------------ plumbing

    def _tx(self, fn, *args, sender):
        """Sends a transaction mined at the model's clock."""
        web3.provider.make_request("evm_setNextBlockTimestamp", [self.model.now])
        self._view = None
        try:
            tx = fn(*args, {"from": sender})
        finally:
            join_confirmation_threads()
        self._book(tx)
        return tx

    def _book(self, tx):
        """Books the credits that `tx`'s events announce, per rental, for `invariant_nothing_paid_twice`; a
        claim's `earned` must be the gross total its rental's claims credited."""
        for opened in events(tx, "RentalOpened"):
            self.ledger[opened["rentalId"]] = Ledger(deposit=opened["deposit"])
        for claimed in events(tx, "EarningsClaimed"):
            entry = self.ledger[claimed["rentalId"]]
            entry.claimed += claimed["providerPayout"] + claimed["fee"]
            assert claimed["earned"] == entry.claimed
        for terminated in events(tx, "RentalTerminated"):
            self.ledger[terminated["rentalId"]].refunded += terminated["refund"]
        for finalized in events(tx, "RentalFinalized"):
            entry = self.ledger[finalized["rentalId"]]
            assert entry.settled is None
            entry.settled = finalized["providerPayout"] + finalized["fee"]
            entry.refunded += finalized["refund"]
        self.withdrawn += sum(withdrawn["amount"] for withdrawn in events(tx, "Withdrawn"))

    def _assert_reverts(self, message, fn, *args, sender):
        with brownie.reverts(message):
            self._tx(fn, *args, sender=sender)

    def _sleep(self, seconds):
        chain.sleep(seconds)
        self.model.now += seconds
        # Without the pin the block would also take the wall-clock seconds the run has taken so far.
        web3.provider.make_request("evm_setNextBlockTimestamp", [self.model.now])
        chain.mine()
        self._view = None

    def _sign(self, reports, keys, domain=None):
        return [sign_batch(reports, domain or self.domain, key) for key in keys]

    def _submit(self, reports, signatures, version=None):
        """Relays a batch signed under oracle set `version` (default: the current one) from a stranger: anyone may
        submit what the oracles signed."""
        args = submit_args(reports, signatures, version or self.domain.oracle_set_version)
        return self._tx(self.escrow.submitReports, *args, sender=self.stranger)

    def _target(self, index, pick, wanted=is_live):
        """The offer and rental a rule acts on: with WANTED_FIRST a `wanted` rental if there is one, with
        ANY_RENTAL any offer's latest rental, live or final, and with UNKNOWN_ID an id that is no offer's latest
        rental (no model)."""
        rented = [offer for offer in self.model.offers if offer.rental is not None]
        preferred = [offer for offer in rented if wanted(offer.rental)] if pick >= WANTED_FIRST else []
        candidates = preferred or rented or self.model.offers
        offer = candidates[index % len(candidates)]
        if offer.rental is None or pick == UNKNOWN_ID:
            return offer, offer.unknown_rental_id(), None
        return offer, offer.rental.rental_id, offer.rental

    @staticmethod
    def _inactive_error(rental_id, rental):
        """The revert of `_liveRental` for this target, or None if it is live."""
        if rental is None:
            return error("Escrow_UnknownRental", rental_id)
        if not rental.live:
            return error("Escrow_RentalNotActive", rental_id, rental.status)
        return None

    def _start(self, rental, sender):
        self._tx(self.escrow.start, rental.rental_id, sender=sender)
        self.model.start(rental)

    def _settle(self, offer, rental, status, missed, slash_bps, tx):
        self._assert_finalized(offer, rental, self.model.settle(offer, rental, status, missed, slash_bps), tx)

    def _settle_elapsed(self, offer, rental, status, elapsed, tx):
        self._assert_finalized(offer, rental, self.model.settle_elapsed(offer, rental, status, elapsed), tx)

    def _assert_finalized(self, offer, rental, expected, tx):
        """`tx` emitted one RentalFinalized for the rental, the one the model expects; its slash is kept for
        `invariant_slashes_within_collateral`."""
        finalized = [dict(e) for e in tx.events["RentalFinalized"] if e["rentalId"] == rental.rental_id]
        assert len(finalized) == 1
        self.settlements.append((finalized[0]["slashed"], offer.collateral))
        assert finalized[0] == expected

    # ------------------------------------------------------------------ stake

    def rule_stake(self, index="st_index", amount="st_stake"):
        provider = self.providers[index]
        if amount == 0:
            self._assert_reverts(error("Registry_ZeroAmount"), self.registry.stake, 0, sender=provider)
            return
        self._tx(self.registry.stake, amount, sender=provider)
        self.model.stake(provider, amount)

    def rule_request_unstake(self, index="st_index", percent="st_unstake_percent"):
        provider = self.providers[index]
        stake = self.model.stakes[provider.address]
        free = stake.free
        amount = free * percent // 100 if percent <= 100 else free + percent - 100
        if amount == 0:
            self._assert_reverts(error("Registry_ZeroAmount"), self.registry.requestUnstake, 0, sender=provider)
        elif amount > free:
            self._assert_reverts(
                error("Registry_InsufficientFreeStake", provider, free, amount),
                self.registry.requestUnstake,
                amount,
                sender=provider,
            )
        else:
            self._tx(self.registry.requestUnstake, amount, sender=provider)
            self.model.request_unstake(provider, amount)

    def rule_withdraw_unstaked(self, index="st_index", pick="st_pick"):
        provider = self._owed_first(self.providers, lambda p: self.model.stakes[p.address].unbonding, index, pick)
        stake = self.model.stakes[provider.address]
        if stake.unbonding == 0:
            self._assert_reverts(
                error("Registry_NothingUnbonding", provider), self.registry.withdrawUnstaked, sender=provider
            )
        elif self.model.now < stake.unbonding_ends_at:
            self._assert_reverts(
                error("Registry_UnbondingNotOver", provider, stake.unbonding_ends_at),
                self.registry.withdrawUnstaked,
                sender=provider,
            )
        else:
            self._tx(self.registry.withdrawUnstaked, sender=provider)
            self.model.withdraw_unstaked(provider)

    # ------------------------------------------------------------------ offers and governance

    def rule_update_price(self, offer="st_offer", price="st_price", by_provider="st_flag"):
        model = self.model.offers[offer]
        sender = model.provider if by_provider else self.stranger
        if not by_provider:
            self._assert_reverts(
                error("Registry_NotOfferProvider", model.offer_id, sender),
                self.registry.updateOfferPrice,
                model.offer_id,
                price,
                sender=sender,
            )
        elif price == 0:
            self._assert_reverts(
                error("Registry_InvalidTerms"), self.registry.updateOfferPrice, model.offer_id, 0, sender=sender
            )
        else:
            self._tx(self.registry.updateOfferPrice, model.offer_id, price, sender=sender)
            model.price = price

    def rule_pause_or_resume_offer(self, offer="st_offer", wrong_way="st_flag"):
        model = self.model.offers[offer]
        pause = model.active != wrong_way
        fn = self.registry.pauseOffer if pause else self.registry.resumeOffer
        if wrong_way:
            name = "Registry_OfferNotActive" if pause else "Registry_OfferNotPaused"
            self._assert_reverts(error(name, model.offer_id), fn, model.offer_id, sender=model.provider)
            return
        self._tx(fn, model.offer_id, sender=model.provider)
        model.active = not pause

    def rule_set_fee(self, fee_bps="st_fee"):
        if fee_bps > PARAMS.fee_cap_bps:
            self._assert_reverts(
                error("Escrow_FeeAboveCap", fee_bps, PARAMS.fee_cap_bps),
                self.escrow.setFee,
                fee_bps,
                sender=self.deployer,
            )
            return
        self._tx(self.escrow.setFee, fee_bps, sender=self.deployer)
        self.model.fee_bps = fee_bps

    # ------------------------------------------------------------------ rentals

    def initialize_rentals(self, rentals="st_initial_rentals"):
        """Starts every run with rentals opened and some started, so the rental rules act on something early."""
        for index, offer, percent, start in rentals:
            model = self.model.offers[offer]
            duration = model.min_duration + (model.max_duration - model.min_duration) * percent // 100
            self.rule_open_rental(index, offer, duration, "any")
            if start and model.rental is not None and model.rental.status == RentalStatus.OPEN:
                self._start(model.rental, model.provider)

    def rule_open_rental(self, index="st_index", offer="st_offer", duration="st_duration", max_price="st_max_price"):
        renter = self.renters[index]
        model = self.model.offers[offer]
        stake = self.model.stakes[model.provider.address]
        limit = {"price": model.price, "below": model.price - 1, "any": 2**64 - 1}[max_price]
        if model.rental is not None and model.rental.live:
            revert = error("Escrow_OfferRented", model.offer_id)
        elif not model.active:
            revert = error("Registry_OfferNotActive", model.offer_id)
        elif not model.min_duration <= duration <= model.max_duration:
            revert = error(
                "Registry_DurationOutOfRange", model.offer_id, duration, model.min_duration, model.max_duration
            )
        elif model.collateral > stake.free:
            revert = error("Registry_InsufficientFreeStake", model.provider, stake.free, model.collateral)
        elif model.price > limit:
            revert = error("Escrow_PriceAboveMax", model.offer_id, model.price, limit)
        else:
            revert = None
        args = (model.offer_id, duration, limit, JOB_SPEC)
        if revert:
            self._assert_reverts(revert, self.escrow.openRental, *args, sender=renter)
            return

        tx = self._tx(self.escrow.openRental, *args, sender=renter)
        rental = self.model.open_rental(model, renter, duration)
        assert tx.events["RentalOpened"]["rentalId"] == rental.rental_id

    def _before_the_start(self, model, rental_id: int, rental, caller: str):
        """The sender of a `start` or `decline` by `caller`, and the revert the escrow owes it (or None): the
        rental must be open, within its start timeout, and the sender its provider or the provider's agent."""
        sender = {
            "provider": model.provider,
            "agent": self.agent,
            "renter": self.renters[0],
            "stranger": self.stranger,
        }[caller]
        authorised = sender == model.provider or (sender == self.agent and model.provider == self.providers[0])
        revert = self._inactive_error(rental_id, rental)
        if revert is None and rental.status != RentalStatus.OPEN:
            revert = error("Escrow_RentalNotActive", rental_id, rental.status)
        if revert is None and not authorised:
            revert = error("Escrow_NotProviderOrAgent", rental_id, sender)
        if revert is None and self.model.now > rental.since + PARAMS.start_timeout:
            revert = error("Escrow_StartTimedOut", rental_id)
        return sender, revert

    def rule_start(self, offer="st_offer", pick="st_pick", caller="st_caller"):
        model, rental_id, rental = self._target(offer, pick, wanted=is_open)
        sender, revert = self._before_the_start(model, rental_id, rental, caller)
        if revert:
            self._assert_reverts(revert, self.escrow.start, rental_id, sender=sender)
            return
        self._start(rental, sender)

    def rule_decline(self, offer="st_offer", pick="st_pick", caller="st_caller", reason="st_decline_reason"):
        """The provider or its agent declines an open rental: the deposit back, the collateral unslashed."""
        model, rental_id, rental = self._target(offer, pick, wanted=is_open)
        sender, revert = self._before_the_start(model, rental_id, rental, caller)
        if revert is None and reason >= len(DeclineReason):
            revert = error("Escrow_UnknownDeclineReason", rental_id, reason)
        if revert:
            self._assert_reverts(revert, self.escrow.decline, rental_id, reason, sender=sender)
            return
        tx = self._tx(self.escrow.decline, rental_id, reason, sender=sender)
        assert dict(tx.events["RentalDeclined"]) == {"rentalId": rental_id, "reason": reason}
        self._settle(model, rental, RentalStatus.DECLINED, 0, 0, tx)

    def rule_terminate(self, offer="st_offer", pick="st_pick", by_renter="st_flag"):
        model, rental_id, rental = self._target(offer, pick, wanted=is_open_or_running)
        sender = rental.renter if rental is not None and by_renter else self.stranger
        revert = self._inactive_error(rental_id, rental)
        if revert is None and sender != rental.renter:
            revert = error("Escrow_NotRenter", rental_id, sender)
        if revert is None:
            if rental.status == RentalStatus.OPEN:
                if self.model.now > rental.since + PARAMS.start_timeout:
                    revert = error("Escrow_StartTimedOut", rental_id)
            elif rental.status != RentalStatus.RUNNING:
                revert = error("Escrow_RentalNotActive", rental_id, rental.status)
            elif self.model.now >= rental.end:
                revert = error("Escrow_RentalEnded", rental_id, rental.end)
        if revert:
            self._assert_reverts(revert, self.escrow.terminate, rental_id, sender=sender)
            return

        tx = self._tx(self.escrow.terminate, rental_id, sender=sender)
        if rental.status == RentalStatus.OPEN:
            self._settle(model, rental, RentalStatus.CANCELLED, 0, 0, tx)
            return
        self.model.terminate(rental)

    def rule_claim_start_timeout(self, offer="st_offer", pick="st_pick"):
        model, rental_id, rental = self._target(offer, pick, wanted=is_open)
        revert = self._inactive_error(rental_id, rental)
        if revert is None and rental.status != RentalStatus.OPEN:
            revert = error("Escrow_RentalNotActive", rental_id, rental.status)
        if revert is None and self.model.now <= rental.since + PARAMS.start_timeout:
            revert = error("Escrow_StartTimeoutNotReached", rental_id, rental.since + PARAMS.start_timeout)
        if revert:
            self._assert_reverts(revert, self.escrow.claimStartTimeout, rental_id, sender=self.stranger)
            return
        tx = self._tx(self.escrow.claimStartTimeout, rental_id, sender=self.stranger)
        # The provider missed the whole rental.
        self._settle(model, rental, RentalStatus.TIMED_OUT, rental.duration, PARAMS.start_slash_bps, tx)

    def rule_finalize(self, offer="st_offer", pick="st_pick"):
        model, rental_id, rental = self._target(offer, pick, wanted=is_started_and_live)
        revert = self._inactive_error(rental_id, rental)
        if revert is None and rental.status == RentalStatus.OPEN:
            revert = error("Escrow_RentalNotActive", rental_id, rental.status)
        if revert is None and self.model.now < rental.end + PARAMS.report_grace:
            revert = error("Escrow_NotYetFinalizable", rental_id, rental.end + PARAMS.report_grace)
        if revert:
            self._assert_reverts(revert, self.escrow.finalize, rental_id, sender=self.stranger)
            return
        tx = self._tx(self.escrow.finalize, rental_id, sender=self.stranger)
        self._settle_elapsed(model, rental, RentalStatus.EXPIRED, rental.duration, tx)

    # ------------------------------------------------------------------ oracle reports

    def _report_for(self, rental_id, rental, cursor, draw):
        """A report of `rental_id` drawn from `draw`, built on `cursor` (the seq and totals of the last report
        built for it, see `_cursor`): a valid next report, or one with the drawn flaw. Whether it applies is the
        model's to say; a valid one moves the cursor."""
        kind, jump, cover_percent, delivered_percent, util_percent, status, excess = draw
        since = rental.since if rental is not None else self.model.now
        seq, covered_until, delivered, util = cursor
        covered_until += max(0, self.model.now - covered_until) * cover_percent // 100
        delivered += max(0, covered_until - since - delivered) * delivered_percent // 100
        util += max(0, delivered - util) * util_percent // 100
        fields = dict(seq=seq + jump, covered_until=covered_until, delivered=delivered, util=util)
        if kind != "valid":
            status = ReportStatus.RUNNING
        if kind == "stale":
            fields["seq"] = seq - excess % (seq + 1)
        elif kind == "decreasing":
            if excess % 3 == 1 and cursor[2]:
                fields["delivered"], fields["util"] = cursor[2] - 1, min(util, cursor[2] - 1)
            elif excess % 3 == 2 and cursor[3]:
                fields["util"] = cursor[3] - 1
            else:
                fields["covered_until"] = cursor[1] - excess
        elif kind == "over_delivered":
            fields["delivered"] = covered_until - since + excess
        elif kind == "over_util":
            fields["util"] = delivered + excess
        elif kind == "future":
            fields["covered_until"] = self.model.now + excess
        elif kind == "unknown_status":
            status = ReportStatus.FAILED + 1 + excess % 253
        built = unchecked_report(rental_id, **fields, status=status, root=TELEMETRY_ROOT)
        if kind == "valid":
            cursor[:] = [built.seq, built.covered_until, built.delivered_seconds, built.util_seconds]
        return built

    def _cursor(self, rental):
        """Where the next report of `rental` starts: its applied seq and totals (an unknown id starts now)."""
        if rental is None:
            return [0, self.model.now, 0, 0]
        return [rental.seq, rental.covered_until, rental.delivered, rental.util]

    def rule_submit_reports(
        self,
        offer="st_offer",
        pick="st_pick",
        wait="st_report_wait",
        draws="st_report_draws",
        other_offer="st_offer",
        other_pick="st_pick",
        other_draw="st_report_draw",
        other_slot="st_other_slot",
        signers="st_signers",
        claim_after="st_claim_after",
    ):
        """A signed batch of cumulative reports for one rental, with random seq jumps, some of them stale,
        decreasing, over-delivered, over-utilised, in the future or of an unknown status, and sometimes a report of
        another rental. Whatever the reports, the batch goes through: each report applies or is skipped with the
        reason the model gives, in order. Sometimes a claim follows, so that claims interleave with reports as
        often as a provider paid as it goes would make them."""
        if wait:
            self._sleep(wait)
        _, rental_id, rental = self._target(offer, pick, wanted=self.model.takes_reports)
        cursor = self._cursor(rental)
        reports = [self._report_for(rental_id, rental, cursor, draw) for draw in draws]
        if other_slot is not None:
            _, other_id, other = self._target(other_offer, other_pick)
            other_report = self._report_for(other_id, other, self._cursor(other), other_draw)
            reports.insert(0 if other_slot == "first" else len(reports), other_report)

        tx = self._submit(reports, self._sign(reports, [ORACLE_KEYS[i] for i in signers]))

        applied, skipped, settled = [], [], []
        for one in reports:
            model = self.model.offer_of(one.rental_id)
            target = model.rental_of(one.rental_id)
            reason = self.model.skip_reason(target, one)
            if reason is not None:
                skipped.append({"rentalId": one.rental_id, "seq": one.seq, "reason": reason})
                continue
            event, finalized = self.model.apply_report(model, target, one)
            applied.append(event)
            if finalized is not None:
                settled.append((model, target, finalized))
        assert events(tx, "ReportSkipped") == skipped
        assert events(tx, "ReportApplied") == applied
        for model, target, finalized in settled:
            self._assert_finalized(model, target, finalized, tx)
        if claim_after is not None:
            self.rule_claim(offer, WANTED_FIRST, claim_after)

    def rule_submit_rejected_batch(self, offer="st_offer", pick="st_pick", flaw="st_batch_flaw"):
        """A batch whose signatures must not verify: only signatures revert a batch, and nothing changes."""
        _, rental_id, rental = self._target(offer, pick, wanted=self.model.takes_reports)
        reports = [unchecked_report(rental_id, (rental.seq if rental else 0) + 1, self.model.now, 0)]
        keys = ORACLE_KEYS[:THRESHOLD]
        version = self.domain.oracle_set_version
        signatures = None
        if flaw == "empty":
            reports = []
            revert = error("Escrow_EmptyBatch")
        elif flaw == "one_signature":
            keys = keys[:1]
            revert = error("Escrow_NotEnoughSignatures", 1, THRESHOLD)
        elif flaw == "no_signature":
            keys = []
            revert = error("Escrow_NotEnoughSignatures", 0, THRESHOLD)
        elif flaw == "duplicate_signer":
            keys = [keys[0], keys[0]]
            revert = error("Escrow_DuplicateSigner", ORACLES[0].address)
        elif flaw == "outsider_signer":
            keys = [keys[0], OUTSIDER_KEY]
            revert = error("Escrow_SignerNotInOracleSet", Account.from_key(OUTSIDER_KEY).address)
        elif flaw == "malformed":
            signatures = self._sign(reports, keys) + [b"\x1b"]
            revert = error("Escrow_MalformedSignatures", 65 * len(keys) + 1)
        elif flaw == "signed_for_another_version":
            # The escrow hashes the batch under the version it is given, so the first signature recovers a stranger.
            other = self.domain.model_copy(update={"oracle_set_version": version + 1})
            signatures = self._sign(reports, keys, other)
            signed = encode_typed_data(full_message=typed_batch(reports, self.domain))
            revert = error("Escrow_SignerNotInOracleSet", Account.recover_message(signed, signature=signatures[0]))
        elif flaw == "next_version":
            # Signed and submitted under a version no set has yet: the current oracles are not its members.
            version += 1
            signatures = self._sign(reports, keys, self.domain.model_copy(update={"oracle_set_version": version}))
            revert = error("Escrow_SignerNotInOracleSet", ORACLES[0].address)

        with brownie.reverts(revert):
            self._submit(reports, signatures or self._sign(reports, keys), version)

    # ------------------------------------------------------------------ claims

    def rule_claim(self, offer="st_offer", pick="st_pick", caller="st_claim_caller"):
        """Anyone claims a started live rental's earnings for its provider."""
        model, rental_id, rental = self._target(offer, pick, wanted=lambda r: r.live and r.earned > r.claimed)
        sender = {"provider": model.provider, "renter": self.renters[0], "stranger": self.stranger}[caller]
        revert = self._inactive_error(rental_id, rental)
        if revert is None and rental.status == RentalStatus.OPEN:
            revert = error("Escrow_RentalNotActive", rental_id, rental.status)
        if revert is None and rental.earned == rental.claimed:
            revert = error("Escrow_NothingToClaim", rental_id)
        if revert:
            self._assert_reverts(revert, self.escrow.claim, rental_id, sender=sender)
            return
        tx = self._tx(self.escrow.claim, rental_id, sender=sender)
        assert dict(tx.events["EarningsClaimed"]) == self.model.claim(model, rental)

    # ------------------------------------------------------------------ withdrawals

    @staticmethod
    def _owed_first(accounts, owed, index, pick):
        """Mostly an account that is owed something, sometimes (UNKNOWN_ID) any account."""
        candidates = (pick != UNKNOWN_ID and [a for a in accounts if owed(a)]) or accounts
        return candidates[index % len(candidates)]

    def rule_withdraw(self, index="st_account", pick="st_pick"):
        account = self._owed_first(self.accounts, lambda a: self.model.balances[a.address], index, pick)
        amount = self.model.balances[account.address]
        if amount == 0:
            self._assert_reverts(error("Escrow_NothingToWithdraw", account), self.escrow.withdraw, sender=account)
            return
        self._tx(self.escrow.withdraw, sender=account)
        self.model.withdraw(account)

    def rule_withdraw_compensation(self, index="st_account", pick="st_pick"):
        account = self._owed_first(self.accounts, lambda a: self.model.compensation[a.address], index, pick)
        amount = self.model.compensation[account.address]
        if amount == 0:
            self._assert_reverts(
                error("Registry_NothingToWithdraw", account), self.registry.withdrawCompensation, sender=account
            )
            return
        self._tx(self.registry.withdrawCompensation, sender=account)
        self.model.withdraw_compensation(account)

    # ------------------------------------------------------------------ time

    def rule_sleep(self, seconds="st_sleep"):
        self._sleep(seconds)

    def rule_sleep_to_rental_deadline(self, offer="st_offer", deadline="st_deadline", delta="st_delta"):
        """Moves to one second before, at or after a deadline of a live rental, where branches flip."""
        _, _, rental = self._target(offer, WANTED_FIRST)
        if rental is None:
            return
        at = (
            delta
            + {
                "start_timeout": rental.since + PARAMS.start_timeout,
                "end": rental.end,
                "finalizable": rental.end + PARAMS.report_grace,
            }[deadline]
        )
        if at > self.model.now:
            self._sleep(at - self.model.now)

    def rule_sleep_to_unbonding_end(self, index="st_index", delta="st_delta"):
        """Moves to one second before, at or after the end of a provider's unbonding period."""
        unbonding = [stake for stake in self.model.stakes.values() if stake.unbonding]
        if not unbonding:
            return
        at = unbonding[index % len(unbonding)].unbonding_ends_at + delta
        if at > self.model.now:
            self._sleep(at - self.model.now)

    # ------------------------------------------------------------------ invariants

    def _chain(self):
        """The chain state after the last step, read once for all invariants."""
        if self._view is not None:
            return self._view
        escrow, registry, token = self.escrow, self.registry, self.token
        calls = [(token.balanceOf, (escrow,)), (token.balanceOf, (registry,))]
        calls += [(token.balanceOf, (a,)) for a in self.accounts]
        calls += [(escrow.balanceOf, (a,)) for a in self.accounts]
        calls += [(registry.compensationOf, (a,)) for a in self.accounts]
        calls += [(registry.getProvider, (p,)) for p in self.providers]
        calls += [(escrow.getRental, (o.rental_id(max(o.nonce, 1)),)) for o in self.model.offers]
        calls += [(escrow.getRental, (o.rental_id(max(o.nonce - 1, 1)),)) for o in self.model.offers]
        calls += [(escrow.liveRentalOf, (o.offer_id,)) for o in self.model.offers]
        calls += [(registry.getOffer, (o.offer_id,)) for o in self.model.offers]
        values = iter(read_batch(calls))

        def take(count):
            return [next(values) for _ in range(count)]

        addresses = [a.address for a in self.accounts]
        self._view = ChainView(
            now=web3.eth.get_block("latest").timestamp,
            escrow_tokens=next(values),
            registry_tokens=next(values),
            wallets=dict(zip(addresses, take(len(addresses)))),
            balances=dict(zip(addresses, take(len(addresses)))),
            compensation=dict(zip(addresses, take(len(addresses)))),
            stakes=dict(zip((p.address for p in self.providers), take(len(self.providers)))),
            rentals=take(len(self.model.offers)),
            superseded=[v if o.nonce >= 2 else None for o, v in zip(self.model.offers, take(len(self.model.offers)))],
            live_rental_ids=take(len(self.model.offers)),
            offers=take(len(self.model.offers)),
        )
        return self._view

    def invariant_block_time_is_the_model_clock(self):
        assert self._chain().now == self.model.now

    def invariant_escrow_holds_what_it_owes(self):
        """Its token balance is every withdrawable balance plus the deposits of live rentals less what their claims
        already credited, to the unit."""
        view = self._chain()
        held = sum(r["pricePerSecond"] * r["duration"] - r["claimed"] for r in view.rentals if r["status"] in LIVE)
        assert view.escrow_tokens == held + sum(view.balances.values())
        assert view.escrow_tokens == self.model.live_deposits() + sum(self.model.balances.values())

    def invariant_registry_holds_what_it_owes(self):
        """Its token balance is every provider's stake plus the compensation owed to renters, to the unit."""
        view = self._chain()
        assert view.registry_tokens == sum(p["staked"] for p in view.stakes.values()) + sum(view.compensation.values())
        assert view.registry_tokens == sum(s.staked for s in self.model.stakes.values()) + sum(
            self.model.compensation.values()
        )

    def invariant_balances_match_model(self):
        view = self._chain()
        assert view.wallets == self.model.wallets
        assert view.balances == self.model.balances
        assert view.compensation == self.model.compensation

    def invariant_stakes_match_model(self):
        """Locked collateral is that of the provider's live rentals and never exceeds the stake."""
        view = self._chain()
        for address, stake in self.model.stakes.items():
            provider = view.stakes[address]
            staked, locked, unbonding = provider["staked"], provider["locked"], provider["unbonding"]
            assert locked <= staked
            assert locked + unbonding <= staked
            assert locked == self.model.locked_collateral(address)
            expected = stake.as_dict()
            assert {name: provider[name] for name in expected} == expected

    def invariant_offers_match_model(self):
        view = self._chain()
        for model, offer in zip(self.model.offers, view.offers):
            assert offer["pricePerSecond"] == model.price
            assert offer["status"] == (OfferStatus.ACTIVE if model.active else OfferStatus.PAUSED)
            assert offer["egress"] is model.egress

    def invariant_rentals_match_model(self):
        view = self._chain()
        for model, rental, superseded, live_id in zip(
            self.model.offers, view.rentals, view.superseded, view.live_rental_ids
        ):
            if model.rental is None:
                assert rental["status"] == RentalStatus.NONE
            else:
                assert rental.dict() == model.rental.as_dict()
            if superseded is not None:
                assert superseded["status"] == RentalStatus.NONE
            assert live_id == (model.rental.rental_id if model.rental is not None and model.rental.live else 0)

    def invariant_earnings_are_the_formula_on_the_totals(self):
        """A rental's earnings are RentalMath.earnings of its applied totals to the unit, claims never pass them nor
        they the deposit, util <= delivered <= covered <= duration, and coverage never reaches past the block
        time."""
        view = self._chain()
        for rental in view.rentals:
            price, duration, since = rental["pricePerSecond"], rental["duration"], rental["since"]
            covered, delivered, util = rental["coveredSeconds"], rental["deliveredSeconds"], rental["utilSeconds"]
            earned = rental["earned"]
            assert earned == earnings(price, delivered, util, rental["utilFloorBps"])
            assert rental["claimed"] <= earned <= price * duration
            assert util <= delivered <= covered <= duration
            assert since + covered <= view.now

    def invariant_rentals_move_forward(self):
        """Status only moves forward (Open -> Running -> Terminated -> final, Open -> TimedOut / Cancelled /
        Declined), and the applied seq, totals and claimed earnings never go back."""
        view = self._chain()
        for model, rental in zip(self.model.offers, view.rentals):
            if model.rental is None:
                continue
            status = RentalStatus(rental["status"])
            counters = [rental[name] for name in ("lastSeq", "coveredSeconds", "deliveredSeconds", "utilSeconds")]
            counters.append(rental["claimed"])
            previous = self.seen.get(model.rental.rental_id)
            if previous is not None:
                previous_status, previous_counters = previous
                assert status >= previous_status
                assert previous_status in LIVE or status == previous_status
                if status in NEVER_STARTED:
                    assert previous_status in (RentalStatus.OPEN, status)
                assert all(now >= before for now, before in zip(counters, previous_counters))
            self.seen[model.rental.rental_id] = (status, counters)

    def invariant_slashes_within_collateral(self):
        for slashed, collateral in self.settlements:
            assert slashed <= collateral

    def invariant_nothing_paid_twice(self):
        """By every rental's events: its claims never credit more than its settlement reports as its lifetime
        earnings, what it credited never passes its deposit and a settled rental credited exactly its deposit, a
        live rental's claims are what the escrow records as claimed, and every balance credited (withdrawn or not)
        is one of those credits."""
        view = self._chain()
        credited = 0
        for entry in self.ledger.values():
            paid = entry.claimed if entry.settled is None else entry.settled
            assert entry.claimed <= paid
            assert paid + entry.refunded <= entry.deposit
            if entry.settled is not None:
                assert paid + entry.refunded == entry.deposit
            credited += paid + entry.refunded
        assert credited == sum(view.balances.values()) + self.withdrawn
        for model, rental in zip(self.model.offers, view.rentals):
            if model.rental is not None and model.rental.live:
                assert rental["claimed"] == self.ledger[model.rental.rental_id].claimed


def test_exchange_invariants(state_machine, exchange):
    settings = {
        "max_examples": int(os.environ.get("GPUEX_STATEFUL_EXAMPLES", "30")),
        "stateful_step_count": int(os.environ.get("GPUEX_STATEFUL_STEPS", "20")),
        # No target() observations here, and the target phase's pareto pass would replay runs for minutes.
        "phases": [Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
    }
    state_machine(ExchangeStateMachine, exchange, settings=settings)


def test_the_docs_name_every_invariant():
    """The module docstring and README.md list exactly the state machine's `invariant_*` methods."""
    invariants = {name for name in dir(ExchangeStateMachine) if name.startswith("invariant_")}
    readme = (Path(__file__).parent / "README.md").read_text()
    for text in (__doc__, readme):
        assert set(re.findall(r"`(invariant_\w+)`", text)) == invariants
