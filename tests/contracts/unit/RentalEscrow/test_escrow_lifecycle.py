"""RentalEscrow lifecycle: start, terminate, claimStartTimeout, finalize, withdraw, fees, SLA slashing and
utilisation-weighted pricing."""

import brownie

from offchain.protocol.reports import ReportStatus, rental_id
from tests.contracts.helpers import PRICE, RentalStatus, SlashReason, block_time, error, report, wait
from tests.contracts.unit.RentalEscrow.escrow_helpers import (
    BPS,
    DURATION,
    earnings,
    event,
    fee_of,
    sla_slash_bps,
)

DEPOSIT = PRICE * DURATION


# start


def test_provider_starts_open_rental_and_billing_runs_from_now(escrow, rid, provider):
    opened = escrow.getRental(rid)["since"]
    wait(100)

    tx = escrow.start(rid, {"from": provider})

    assert tx.timestamp >= opened + 100
    assert escrow.getRental(rid)["status"] == RentalStatus.RUNNING
    assert escrow.getRental(rid)["since"] == tx.timestamp
    assert event(tx, "RentalStarted") == {"rentalId": rid, "startedAt": tx.timestamp, "byReport": False}


def test_agent_starts_open_rental(escrow, registry, rid, provider, agent):
    registry.setAgent(agent, {"from": provider})

    escrow.start(rid, {"from": agent})

    assert escrow.getRental(rid)["status"] == RentalStatus.RUNNING


def test_start_by_neither_provider_nor_agent_reverts(escrow, rid, renter):
    with brownie.reverts(error("Escrow_NotProviderOrAgent", rid, renter)):
        escrow.start(rid, {"from": renter})


def test_start_after_start_timeout_reverts(escrow, rid, provider, params):
    wait(params.start_timeout + 1)

    with brownie.reverts(error("Escrow_StartTimedOut", rid)):
        escrow.start(rid, {"from": provider})


def test_start_of_running_rental_reverts(escrow, rid, started, provider):
    with brownie.reverts(error("Escrow_RentalNotActive", rid, RentalStatus.RUNNING)):
        escrow.start(rid, {"from": provider})


# terminate


def test_terminate_before_start_cancels_with_full_refund(escrow, offer, rid, renter):
    tx = escrow.terminate(rid, {"from": renter})

    assert escrow.getRental(rid)["status"] == RentalStatus.CANCELLED
    assert escrow.liveRentalOf(offer) == 0
    assert escrow.balanceOf(renter) == DEPOSIT
    assert event(tx, "RentalFinalized") == {
        "rentalId": rid,
        "status": RentalStatus.CANCELLED,
        "providerPayout": 0,
        "fee": 0,
        "refund": DEPOSIT,
        "deliveredSeconds": 0,
        "missedSeconds": 0,
        "slashed": 0,
        "slashReason": SlashReason.NONE,
    }


def test_terminate_before_start_releases_collateral_without_slash(escrow, registry, offer, rid, provider, renter):
    staked = registry.getProvider(provider)["staked"]

    tx = escrow.terminate(rid, {"from": renter})

    account = registry.getProvider(provider)
    assert (account["staked"], account["locked"], account["rentalsCompleted"], account["slashes"]) == (staked, 0, 0, 0)
    assert registry.compensationOf(renter) == 0
    assert "Slashed" not in tx.events
    assert event(tx, "CollateralReleased") == {
        "provider": provider.address,
        "offerId": offer,
        "amount": registry.collateralOf(offer),
    }


def test_terminate_open_rental_after_start_timeout_reverts(escrow, rid, renter, params):
    wait(params.start_timeout + 1)

    with brownie.reverts(error("Escrow_StartTimedOut", rid)):
        escrow.terminate(rid, {"from": renter})


def test_terminate_running_rental_refunds_unused_time_at_once(escrow, rid, started, renter):
    wait(1_000)

    tx = escrow.terminate(rid, {"from": renter})

    refund = PRICE * (started + DURATION - tx.timestamp)
    assert escrow.balanceOf(renter) == refund
    assert event(tx, "RentalTerminated") == {"rentalId": rid, "endsAt": tx.timestamp, "refund": refund}
    state = escrow.getRental(rid)
    assert (state["status"], state["duration"]) == (RentalStatus.TERMINATED, tx.timestamp - started)


def test_terminated_rental_takes_reports_up_to_its_new_end(escrow, rid, started, renter, submit):
    wait(1_000)
    ended = escrow.terminate(rid, {"from": renter}).timestamp
    wait(50)

    tx = submit([report(rid, 1, block_time(), ended - started)])

    applied = event(tx, "ReportApplied")
    assert (applied["coveredUntil"], applied["deliveredSeconds"]) == (ended, ended - started)
    assert escrow.getRental(rid)["earned"] == PRICE * (ended - started)


def test_terminated_rental_is_not_finalizable_before_new_end_plus_grace(escrow, rid, started, renter, params):
    wait(1_000)
    ended = escrow.terminate(rid, {"from": renter}).timestamp

    with brownie.reverts(error("Escrow_NotYetFinalizable", rid, ended + params.report_grace)):
        escrow.finalize(rid, {"from": renter})


def test_terminated_rental_finalizes_after_new_end_plus_grace(escrow, rid, started, provider, renter, submit, params):
    wait(1_000)
    ended = escrow.terminate(rid, {"from": renter}).timestamp
    submit([report(rid, 1, ended, ended - started)])
    wait(params.report_grace)

    tx = escrow.finalize(rid, {"from": renter})

    earned = PRICE * (ended - started)
    fee = fee_of(earned, params.fee_bps)
    assert event(tx, "RentalFinalized") == {
        "rentalId": rid,
        "status": RentalStatus.EXPIRED,
        "providerPayout": earned - fee,
        "fee": fee,
        "refund": 0,
        "deliveredSeconds": ended - started,
        "missedSeconds": 0,
        "slashed": 0,
        "slashReason": SlashReason.NONE,
    }
    assert escrow.balanceOf(provider) == earned - fee
    assert escrow.balanceOf(renter) == DEPOSIT - earned


def test_terminate_by_non_renter_reverts(escrow, rid, started, stranger):
    with brownie.reverts(error("Escrow_NotRenter", rid, stranger)):
        escrow.terminate(rid, {"from": stranger})


def test_terminate_after_end_reverts(escrow, rid, started, renter):
    wait(DURATION)

    with brownie.reverts(error("Escrow_RentalEnded", rid, started + DURATION)):
        escrow.terminate(rid, {"from": renter})


def test_terminate_of_terminated_rental_reverts(escrow, rid, started, renter):
    escrow.terminate(rid, {"from": renter})

    with brownie.reverts(error("Escrow_RentalNotActive", rid, RentalStatus.TERMINATED)):
        escrow.terminate(rid, {"from": renter})


def test_terminate_of_cancelled_rental_reverts(escrow, rid, renter):
    escrow.terminate(rid, {"from": renter})

    with brownie.reverts(error("Escrow_RentalNotActive", rid, RentalStatus.CANCELLED)):
        escrow.terminate(rid, {"from": renter})


def test_terminate_works_while_escrow_paused(escrow, rid, deployer, renter):
    escrow.pause({"from": deployer})

    escrow.terminate(rid, {"from": renter})

    assert escrow.getRental(rid)["status"] == RentalStatus.CANCELLED


# claimStartTimeout


def test_claim_start_timeout_refunds_whole_deposit(escrow, registry, offer, rid, renter, stranger, params):
    wait(params.start_timeout + 1)

    tx = escrow.claimStartTimeout(rid, {"from": stranger})

    slashed = registry.collateralOf(offer) * params.start_slash_bps // BPS
    assert escrow.getRental(rid)["status"] == RentalStatus.TIMED_OUT
    assert escrow.balanceOf(renter) == DEPOSIT
    assert event(tx, "RentalFinalized") == {
        "rentalId": rid,
        "status": RentalStatus.TIMED_OUT,
        "providerPayout": 0,
        "fee": 0,
        "refund": DEPOSIT,
        "deliveredSeconds": 0,
        "missedSeconds": DURATION,
        "slashed": slashed,
        "slashReason": SlashReason.START_TIMEOUT,
    }


def test_claim_start_timeout_slashes_start_share_of_collateral_to_renter(
    escrow, registry, token, offer, rid, provider, renter, stranger, params
):
    staked = registry.getProvider(provider)["staked"]
    wait(params.start_timeout + 1)

    tx = escrow.claimStartTimeout(rid, {"from": stranger})

    slashed = registry.collateralOf(offer) * params.start_slash_bps // BPS
    assert slashed == 20_000_000
    assert registry.compensationOf(renter) == slashed
    account = registry.getProvider(provider)
    assert (account["staked"], account["locked"], account["slashes"]) == (staked - slashed, 0, 1)
    assert event(tx, "Slashed") == {
        "provider": provider.address,
        "offerId": offer,
        "renter": renter.address,
        "amount": slashed,
        "reason": SlashReason.START_TIMEOUT,
    }
    balance = token.balanceOf(renter)
    registry.withdrawCompensation({"from": renter})
    assert token.balanceOf(renter) == balance + slashed


def test_claim_start_timeout_before_timeout_reverts(escrow, rid, stranger, params):
    opened = escrow.getRental(rid)["since"]

    with brownie.reverts(error("Escrow_StartTimeoutNotReached", rid, opened + params.start_timeout)):
        escrow.claimStartTimeout(rid, {"from": stranger})


def test_claim_start_timeout_of_started_rental_reverts(escrow, rid, started, stranger, params):
    wait(params.start_timeout + 1)

    with brownie.reverts(error("Escrow_RentalNotActive", rid, RentalStatus.RUNNING)):
        escrow.claimStartTimeout(rid, {"from": stranger})


# finalize


def test_finalize_before_end_plus_grace_reverts(escrow, rid, started, stranger, params):
    wait(DURATION)

    with brownie.reverts(error("Escrow_NotYetFinalizable", rid, started + DURATION + params.report_grace)):
        escrow.finalize(rid, {"from": stranger})


def test_anyone_finalizes_after_end_plus_grace(escrow, offer, rid, started, stranger, params):
    wait(DURATION + params.report_grace)

    escrow.finalize(rid, {"from": stranger})

    assert escrow.getRental(rid)["status"] == RentalStatus.EXPIRED
    assert escrow.liveRentalOf(offer) == 0


def test_finalize_works_while_escrow_paused(escrow, rid, started, deployer, stranger, params):
    escrow.pause({"from": deployer})
    wait(DURATION + params.report_grace)

    escrow.finalize(rid, {"from": stranger})

    assert escrow.getRental(rid)["status"] == RentalStatus.EXPIRED


def test_finalize_counts_unreported_time_as_missed(escrow, rid, started, stranger, submit, params):
    wait(1_000)
    submit([report(rid, 1, started + 1_000, 1_000)])
    wait(DURATION + params.report_grace)

    tx = escrow.finalize(rid, {"from": stranger})

    finalized = event(tx, "RentalFinalized")
    assert (finalized["deliveredSeconds"], finalized["missedSeconds"]) == (1_000, DURATION - 1_000)
    assert finalized["refund"] == DEPOSIT - PRICE * 1_000


def test_finalize_of_final_rental_reverts(escrow, rid, started, stranger, params):
    wait(DURATION + params.report_grace)
    escrow.finalize(rid, {"from": stranger})

    with brownie.reverts(error("Escrow_RentalNotActive", rid, RentalStatus.EXPIRED)):
        escrow.finalize(rid, {"from": stranger})


def test_finalize_of_open_rental_reverts(escrow, rid, stranger):
    with brownie.reverts(error("Escrow_RentalNotActive", rid, RentalStatus.OPEN)):
        escrow.finalize(rid, {"from": stranger})


def test_finalize_of_unknown_rental_reverts(escrow, offer, rid, stranger):
    with brownie.reverts(error("Escrow_UnknownRental", rental_id(offer, 2))):
        escrow.finalize(rental_id(offer, 2), {"from": stranger})


def test_finalize_of_nonce_zero_id_reverts(escrow, offer, rid, stranger):
    with brownie.reverts(error("Escrow_UnknownRental", rental_id(offer, 0))):
        escrow.finalize(rental_id(offer, 0), {"from": stranger})


# withdraw and fees


def test_withdraw_sends_whole_balance(escrow, token, rid, renter):
    escrow.terminate(rid, {"from": renter})
    balance = token.balanceOf(renter)

    tx = escrow.withdraw({"from": renter})

    assert token.balanceOf(renter) == balance + DEPOSIT
    assert escrow.balanceOf(renter) == 0
    assert event(tx, "Withdrawn") == {"account": renter.address, "amount": DEPOSIT}


def test_withdraw_with_nothing_credited_reverts(escrow, stranger):
    with brownie.reverts(error("Escrow_NothingToWithdraw", stranger)):
        escrow.withdraw({"from": stranger})


def test_second_withdraw_reverts(escrow, rid, renter):
    escrow.terminate(rid, {"from": renter})
    escrow.withdraw({"from": renter})

    with brownie.reverts(error("Escrow_NothingToWithdraw", renter)):
        escrow.withdraw({"from": renter})


def test_withdraw_works_while_escrow_paused(escrow, token, rid, deployer, renter):
    escrow.terminate(rid, {"from": renter})
    escrow.pause({"from": deployer})
    balance = token.balanceOf(renter)

    escrow.withdraw({"from": renter})

    assert token.balanceOf(renter) == balance + DEPOSIT


def test_provider_collects_several_rentals_in_one_withdraw(
    escrow, token, provider, renter, renter2, list_offer, open_rental, submit, params
):
    rentals = [open_rental(r, list_offer(provider)) for r in (renter, renter2)]
    starts = [escrow.start(r, {"from": provider}).timestamp for r in rentals]
    wait(600)
    submit([report(r, 1, s + 600, 600, status=ReportStatus.COMPLETED) for r, s in zip(rentals, starts)])
    payout = 2 * (PRICE * 600 - fee_of(PRICE * 600, params.fee_bps))
    balance = token.balanceOf(provider)

    tx = escrow.withdraw({"from": provider})

    assert event(tx, "Withdrawn")["amount"] == payout
    assert token.balanceOf(provider) == balance + payout


def test_fee_is_credited_to_treasury(escrow, token, rid, started, treasury, submit, params):
    wait(600)
    submit([report(rid, 1, started + 600, 600, status=ReportStatus.COMPLETED)])

    fee = fee_of(PRICE * 600, params.fee_bps)
    assert fee == 15_000
    assert escrow.balanceOf(treasury) == fee
    balance = token.balanceOf(treasury)
    escrow.withdraw({"from": treasury})
    assert token.balanceOf(treasury) == balance + fee


def test_fee_change_applies_only_to_rentals_opened_later(escrow, rid, started, deployer, treasury, submit, params):
    escrow.setFee(1_000, {"from": deployer})
    wait(600)

    tx = submit([report(rid, 1, started + 600, 600, status=ReportStatus.COMPLETED)])

    assert event(tx, "RentalFinalized")["fee"] == fee_of(PRICE * 600, params.fee_bps)
    assert escrow.balanceOf(treasury) == fee_of(PRICE * 600, params.fee_bps)


# SLA


def _finalize_with_delivery(escrow, rid, started, delivered, submit, params, caller):
    """Reports `delivered` seconds over the whole rental, then finalises it after the grace."""
    wait(DURATION + params.report_grace)
    submit([report(rid, 1, started + DURATION, delivered)])
    return escrow.finalize(rid, {"from": caller})


def test_delivery_at_exactly_the_sla_is_not_slashed(escrow, registry, rid, started, renter, stranger, submit, params):
    delivered = DURATION * params.sla_bps // BPS

    tx = _finalize_with_delivery(escrow, rid, started, delivered, submit, params, stranger)

    finalized = event(tx, "RentalFinalized")
    assert (finalized["missedSeconds"], finalized["slashed"]) == (DURATION - delivered, 0)
    assert finalized["slashReason"] == SlashReason.NONE
    assert registry.compensationOf(renter) == 0


def test_missing_more_than_the_sla_slashes_collateral_in_proportion(
    escrow, registry, offer, rid, started, provider, renter, stranger, submit, params
):
    delivered = DURATION * params.sla_bps // BPS - 1
    staked = registry.getProvider(provider)["staked"]

    tx = _finalize_with_delivery(escrow, rid, started, delivered, submit, params, stranger)

    missed = DURATION - delivered
    slash_bps = sla_slash_bps(missed, DURATION, params.sla_bps, params.sla_slash_bps)
    slashed = registry.collateralOf(offer) * slash_bps // BPS
    assert (slash_bps, slashed) == (100, 2_000_000)
    finalized = event(tx, "RentalFinalized")
    assert (finalized["missedSeconds"], finalized["slashed"]) == (missed, slashed)
    assert finalized["slashReason"] == SlashReason.SLA_BREACH
    assert registry.compensationOf(renter) == slashed
    assert registry.getProvider(provider)["staked"] == staked - slashed


def test_nothing_delivered_slashes_the_whole_sla_share(escrow, registry, offer, rid, started, stranger, params):
    wait(DURATION + params.report_grace)

    tx = escrow.finalize(rid, {"from": stranger})

    assert event(tx, "RentalFinalized")["slashed"] == registry.collateralOf(offer) * params.sla_slash_bps // BPS


def test_sla_of_early_completion_is_measured_over_elapsed_time(registry, offer, rid, started, submit, params):
    wait(300)

    tx = submit([report(rid, 1, started + 300, 200, status=ReportStatus.COMPLETED)])

    slash_bps = sla_slash_bps(100, 300, params.sla_bps, params.sla_slash_bps)
    finalized = event(tx, "RentalFinalized")
    assert (finalized["missedSeconds"], finalized["slashed"]) == (100, registry.collateralOf(offer) * slash_bps // BPS)
    assert finalized["slashReason"] == SlashReason.SLA_BREACH


# utilisation-weighted pricing


def test_utilisation_weighted_earnings_are_the_formula_on_the_totals(
    escrow, provider, renter, list_offer, open_rental, submit
):
    price, floor = 1_237, 4_000
    offer = list_offer(provider, price=price, util_floor_bps=floor)
    rid = open_rental(renter, offer, duration=DURATION)
    started = escrow.start(rid, {"from": provider}).timestamp
    wait(DURATION)
    totals = [(777, 700, 233), (1_332, 1_255, 788), (1_433, 1_356, 788), (2_433, 2_355, 1_454)]

    tx = submit([report(rid, seq, started + covered, d, util=u) for seq, (covered, d, u) in enumerate(totals, 1)])

    assert [(a["deliveredSeconds"], a["utilSeconds"]) for a in tx.events["ReportApplied"]] == [t[1:] for t in totals]
    expected = earnings(price, 2_355, 1_454, floor)
    # Summing each report's rounded-down share would lose units: only the totals give the exact figure.
    steps = [(d - pd, u - pu) for (_, d, u), (_, pd, pu) in zip(totals, [(0, 0, 0)] + totals)]
    assert sum(earnings(price, d, u, floor) for d, u in steps) != expected
    assert escrow.getRental(rid)["earned"] == expected


def test_utilisation_weighted_rental_settles_on_its_earnings(
    escrow, provider, renter, list_offer, open_rental, submit, params
):
    price, floor = 1_237, 4_000
    offer = list_offer(provider, price=price, util_floor_bps=floor)
    rid = open_rental(renter, offer, duration=DURATION)
    started = escrow.start(rid, {"from": provider}).timestamp
    wait(1_800)

    tx = submit([report(rid, 1, started + 1_800, 1_799, util=777, status=ReportStatus.COMPLETED)])

    earned = earnings(price, 1_799, 777, floor)
    fee = fee_of(earned, params.fee_bps)
    finalized = event(tx, "RentalFinalized")
    assert (finalized["providerPayout"], finalized["fee"]) == (earned - fee, fee)
    assert finalized["refund"] == price * DURATION - earned
    assert escrow.balanceOf(provider) == earned - fee
    assert escrow.balanceOf(renter) == price * DURATION - earned


def test_idle_gpus_earn_the_utilisation_floor(escrow, provider, renter, list_offer, open_rental, submit):
    offer = list_offer(provider, util_floor_bps=4_000)
    rid = open_rental(renter, offer, duration=DURATION)
    started = escrow.start(rid, {"from": provider}).timestamp
    wait(600)

    submit([report(rid, 1, started + 600, 600, util=0)])

    assert escrow.getRental(rid)["earned"] == PRICE * 600 * 4_000 // BPS


def test_full_floor_is_pure_time_pricing(escrow, rid, started, submit):
    wait(600)

    submit([report(rid, 1, started + 600, 600, util=0)])

    assert escrow.getRental(rid)["earned"] == PRICE * 600
