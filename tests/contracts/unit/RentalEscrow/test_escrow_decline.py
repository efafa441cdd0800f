"""RentalEscrow.decline: a provider or its agent declines an open rental it cannot run; the renter gets the whole
deposit back, the collateral is released unslashed and the provider counts a decline."""

import brownie
import pytest

from offchain.protocol.reports import ReportStatus, rental_id
from tests.contracts.helpers import (
    PRICE,
    DeclineReason,
    RentalStatus,
    SkipReason,
    SlashReason,
    at_next_block,
    error,
    report,
    wait,
)
from tests.contracts.unit.RentalEscrow.escrow_helpers import DURATION, event

DEPOSIT = PRICE * DURATION


# who may decline


def test_provider_declines_open_rental(escrow, offer, rid, provider):
    escrow.decline(rid, DeclineReason.SPEC_MISSING, {"from": provider})

    assert escrow.getRental(rid)["status"] == RentalStatus.DECLINED
    assert escrow.liveRentalOf(offer) == 0


def test_agent_declines_open_rental(escrow, registry, rid, provider, agent):
    registry.setAgent(agent, {"from": provider})

    escrow.decline(rid, DeclineReason.GPUS_UNAVAILABLE, {"from": agent})

    assert escrow.getRental(rid)["status"] == RentalStatus.DECLINED


@pytest.mark.parametrize("caller", ["renter", "stranger", "provider2"])
def test_decline_by_neither_provider_nor_agent_reverts(escrow, rid, request, caller):
    account = request.getfixturevalue(caller)

    with brownie.reverts(error("Escrow_NotProviderOrAgent", rid, account)):
        escrow.decline(rid, DeclineReason.SPEC_MISSING, {"from": account})


def test_decline_by_a_former_agent_key_reverts(escrow, registry, rid, provider, agent, stranger):
    registry.setAgent(agent, {"from": provider})
    registry.setAgent(stranger, {"from": provider})

    with brownie.reverts(error("Escrow_NotProviderOrAgent", rid, agent)):
        escrow.decline(rid, DeclineReason.SPEC_MISSING, {"from": agent})


def test_decline_works_while_escrow_paused(escrow, rid, deployer, provider):
    escrow.pause({"from": deployer})

    escrow.decline(rid, DeclineReason.AGENT_FAILURE, {"from": provider})

    assert escrow.getRental(rid)["status"] == RentalStatus.DECLINED


# when it may decline


def test_decline_of_running_rental_reverts(escrow, rid, started, provider):
    with brownie.reverts(error("Escrow_RentalNotActive", rid, RentalStatus.RUNNING)):
        escrow.decline(rid, DeclineReason.SPEC_INVALID, {"from": provider})


def test_decline_of_rental_started_by_its_first_report_reverts(escrow, rid, provider, submit):
    opened = escrow.getRental(rid)["since"]
    wait(60)
    submit([report(rid, 1, opened + 60, 60)])

    with brownie.reverts(error("Escrow_RentalNotActive", rid, RentalStatus.RUNNING)):
        escrow.decline(rid, DeclineReason.SPEC_INVALID, {"from": provider})


def test_decline_at_the_last_second_of_the_start_timeout_works(escrow, rid, provider, params):
    opened = escrow.getRental(rid)["since"]
    at_next_block(opened + params.start_timeout)

    tx = escrow.decline(rid, DeclineReason.SPEC_MISSING, {"from": provider})

    assert tx.timestamp == opened + params.start_timeout
    assert escrow.getRental(rid)["status"] == RentalStatus.DECLINED


def test_decline_after_the_start_timeout_reverts(escrow, rid, provider, params):
    opened = escrow.getRental(rid)["since"]
    at_next_block(opened + params.start_timeout + 1)

    with brownie.reverts(error("Escrow_StartTimedOut", rid)):
        escrow.decline(rid, DeclineReason.SPEC_MISSING, {"from": provider})


def test_start_timeout_is_still_claimable_after_a_refused_late_decline(
    escrow, registry, offer, rid, provider, renter, stranger, params
):
    wait(params.start_timeout + 1)
    with brownie.reverts(error("Escrow_StartTimedOut", rid)):
        escrow.decline(rid, DeclineReason.SPEC_MISSING, {"from": provider})

    tx = escrow.claimStartTimeout(rid, {"from": stranger})

    assert event(tx, "RentalFinalized")["slashReason"] == SlashReason.START_TIMEOUT
    assert registry.compensationOf(renter) == registry.collateralOf(offer) * params.start_slash_bps // 10_000


def test_decline_twice_reverts(escrow, rid, provider):
    escrow.decline(rid, DeclineReason.SPEC_MISSING, {"from": provider})

    with brownie.reverts(error("Escrow_RentalNotActive", rid, RentalStatus.DECLINED)):
        escrow.decline(rid, DeclineReason.SPEC_MISSING, {"from": provider})


def test_decline_of_cancelled_rental_reverts(escrow, rid, provider, renter):
    escrow.terminate(rid, {"from": renter})

    with brownie.reverts(error("Escrow_RentalNotActive", rid, RentalStatus.CANCELLED)):
        escrow.decline(rid, DeclineReason.SPEC_MISSING, {"from": provider})


@pytest.mark.parametrize("nonce", [0, 2])
def test_decline_of_unknown_rental_reverts(escrow, offer, rid, provider, nonce):
    with brownie.reverts(error("Escrow_UnknownRental", rental_id(offer, nonce))):
        escrow.decline(rental_id(offer, nonce), DeclineReason.SPEC_MISSING, {"from": provider})


def test_decline_of_superseded_rental_reverts(escrow, offer, rid, provider, renter2, open_rental):
    escrow.decline(rid, DeclineReason.SPEC_MISSING, {"from": provider})
    open_rental(renter2, offer)

    with brownie.reverts(error("Escrow_UnknownRental", rid)):
        escrow.decline(rid, DeclineReason.SPEC_MISSING, {"from": provider})


# reasons


@pytest.mark.parametrize("reason", list(DeclineReason), ids=[r.name.lower() for r in DeclineReason])
def test_every_decline_reason_is_accepted_and_emitted(escrow, rid, provider, reason):
    tx = escrow.decline(rid, reason, {"from": provider})

    assert event(tx, "RentalDeclined") == {"rentalId": rid, "reason": reason}


@pytest.mark.parametrize("reason", [len(DeclineReason), 255])
def test_decline_with_an_unknown_reason_reverts(escrow, rid, provider, reason):
    with brownie.reverts(error("Escrow_UnknownDeclineReason", rid, reason)):
        escrow.decline(rid, reason, {"from": provider})


# what it settles


def test_decline_credits_the_whole_deposit_to_the_renter(escrow, token, rid, provider, renter, treasury):
    escrow.decline(rid, DeclineReason.IMAGE_UNAVAILABLE, {"from": provider})

    assert escrow.balanceOf(renter) == DEPOSIT
    assert escrow.balanceOf(provider) == 0
    assert escrow.balanceOf(treasury) == 0
    balance = token.balanceOf(renter)
    escrow.withdraw({"from": renter})
    assert token.balanceOf(renter) == balance + DEPOSIT


def test_decline_releases_the_collateral_without_a_slash(escrow, registry, offer, rid, provider, renter):
    account = registry.getProvider(provider)
    compensation = registry.compensationOf(renter)

    tx = escrow.decline(rid, DeclineReason.EXCEEDS_OFFER, {"from": provider})

    after = registry.getProvider(provider)
    assert (after["staked"], after["locked"]) == (account["staked"], 0)
    assert registry.freeStake(provider) == account["staked"]
    assert registry.compensationOf(renter) == compensation
    assert "Slashed" not in tx.events
    assert event(tx, "CollateralReleased") == {
        "provider": provider.address,
        "offerId": offer,
        "amount": registry.collateralOf(offer),
    }


def test_decline_counts_a_decline_and_no_completed_rental_or_slash(escrow, registry, rid, provider):
    escrow.decline(rid, DeclineReason.SPEC_INVALID, {"from": provider})

    account = registry.getProvider(provider)
    assert (account["declines"], account["rentalsCompleted"], account["slashes"]) == (1, 0, 0)
    assert (account["secondsDelivered"], account["secondsMissed"]) == (0, 0)


def test_decline_emits_declined_then_finalized_with_the_deposit_refunded(escrow, rid, provider):
    tx = escrow.decline(rid, DeclineReason.SPEC_INVALID, {"from": provider})

    assert event(tx, "RentalFinalized") == {
        "rentalId": rid,
        "status": RentalStatus.DECLINED,
        "providerPayout": 0,
        "fee": 0,
        "refund": DEPOSIT,
        "deliveredSeconds": 0,
        "missedSeconds": 0,
        "slashed": 0,
        "slashReason": SlashReason.NONE,
    }
    names = [e.name for e in tx.events]
    assert names.index("RentalDeclined") < names.index("RentalFinalized")


def test_declined_offer_can_be_rented_again_at_once(escrow, offer, rid, provider, renter2, open_rental):
    escrow.decline(rid, DeclineReason.SPEC_MISSING, {"from": provider})

    again = open_rental(renter2, offer)

    assert again == rental_id(offer, 2)
    assert escrow.liveRentalOf(offer) == again
    assert escrow.getRental(again)["status"] == RentalStatus.OPEN


# a declined rental is final


def test_report_of_declined_rental_is_skipped(
    escrow, rid, provider, list_offer, open_rental, provider2, renter2, submit
):
    live = open_rental(renter2, list_offer(provider2))
    live_started = escrow.start(live, {"from": provider2}).timestamp
    opened = escrow.getRental(rid)["since"]
    escrow.decline(rid, DeclineReason.SPEC_MISSING, {"from": provider})
    wait(60)

    tx = submit(
        [report(rid, 1, opened + 60, 60, status=ReportStatus.COMPLETED), report(live, 1, live_started + 60, 60)]
    )

    assert event(tx, "ReportSkipped") == {"rentalId": rid, "seq": 1, "reason": SkipReason.RENTAL_CLOSED}
    assert escrow.getRental(rid)["status"] == RentalStatus.DECLINED
    assert escrow.getRental(rid)["lastSeq"] == 0


def test_claim_start_timeout_of_declined_rental_reverts(escrow, rid, provider, stranger, params):
    escrow.decline(rid, DeclineReason.SPEC_MISSING, {"from": provider})
    wait(params.start_timeout + 1)

    with brownie.reverts(error("Escrow_RentalNotActive", rid, RentalStatus.DECLINED)):
        escrow.claimStartTimeout(rid, {"from": stranger})


def test_terminate_of_declined_rental_reverts(escrow, rid, provider, renter):
    escrow.decline(rid, DeclineReason.SPEC_MISSING, {"from": provider})

    with brownie.reverts(error("Escrow_RentalNotActive", rid, RentalStatus.DECLINED)):
        escrow.terminate(rid, {"from": renter})


def test_finalize_of_declined_rental_reverts(escrow, rid, provider, stranger, params):
    escrow.decline(rid, DeclineReason.SPEC_MISSING, {"from": provider})
    wait(DURATION + params.report_grace)

    with brownie.reverts(error("Escrow_RentalNotActive", rid, RentalStatus.DECLINED)):
        escrow.finalize(rid, {"from": stranger})


def test_start_of_declined_rental_reverts(escrow, rid, provider):
    escrow.decline(rid, DeclineReason.SPEC_MISSING, {"from": provider})

    with brownie.reverts(error("Escrow_RentalNotActive", rid, RentalStatus.DECLINED)):
        escrow.start(rid, {"from": provider})
