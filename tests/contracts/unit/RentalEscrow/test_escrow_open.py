"""RentalEscrow.openRental: deposit, event, rental ids, the front-run guard and the registry's checks."""

import brownie

from offchain.protocol.reports import rental_id
from scripts.deploy import USDC
from tests.contracts.helpers import PRICE, RentalStatus, error
from tests.contracts.unit.RentalEscrow.escrow_helpers import DURATION, event

JOB = b"\x11" * 32
MAX_PRICE = 2**64 - 1


def test_open_rental_pulls_deposit(escrow, token, provider, renter, list_offer):
    offer = list_offer(provider)
    renter_before, escrow_before = token.balanceOf(renter), token.balanceOf(escrow)

    escrow.openRental(offer, DURATION, MAX_PRICE, JOB, {"from": renter})

    assert token.balanceOf(renter) == renter_before - PRICE * DURATION
    assert token.balanceOf(escrow) == escrow_before + PRICE * DURATION


def test_open_rental_emits_rental_opened(escrow, provider, renter, list_offer):
    offer = list_offer(provider)

    tx = escrow.openRental(offer, DURATION, MAX_PRICE, JOB, {"from": renter})

    assert event(tx, "RentalOpened") == {
        "rentalId": rental_id(offer, 1),
        "offerId": offer,
        "renter": renter.address,
        "pricePerSecond": PRICE,
        "duration": DURATION,
        "deposit": PRICE * DURATION,
        "jobSpecHash": "0x" + JOB.hex(),
    }


def test_open_rental_records_an_open_rental_since_the_opening(escrow, provider, renter, list_offer, params):
    offer = list_offer(provider)

    tx = escrow.openRental(offer, DURATION, MAX_PRICE, JOB, {"from": renter})

    assert escrow.getRental(tx.return_value).dict() == {
        "status": RentalStatus.OPEN,
        "renter": renter.address,
        "pricePerSecond": PRICE,
        "duration": DURATION,
        "since": tx.timestamp,
        "utilFloorBps": 10_000,
        "feeBps": params.fee_bps,
        "lastSeq": 0,
        "coveredSeconds": 0,
        "deliveredSeconds": 0,
        "utilSeconds": 0,
        "earned": 0,
        "claimed": 0,
    }
    assert escrow.liveRentalOf(offer) == tx.return_value


def test_open_rental_locks_the_offers_collateral(escrow, registry, provider, renter, list_offer):
    offer = list_offer(provider)
    free_before = registry.freeStake(provider)

    tx = escrow.openRental(offer, DURATION, MAX_PRICE, JOB, {"from": renter})

    collateral = registry.collateralOf(offer)
    assert collateral == 200 * USDC
    assert registry.getProvider(provider)["locked"] == collateral
    assert registry.freeStake(provider) == free_before - collateral
    assert event(tx, "CollateralLocked") == {"provider": provider.address, "offerId": offer, "amount": collateral}


def test_rental_id_is_offer_id_shifted_by_32_bits_or_nonce(escrow, provider, renter, list_offer):
    list_offer(provider)
    offer = list_offer(provider)

    tx = escrow.openRental(offer, DURATION, MAX_PRICE, JOB, {"from": renter})

    assert offer == 2
    assert tx.return_value == (2 << 32) | 1 == 8589934593


def test_nonces_count_per_offer(provider, provider2, renter, renter2, list_offer, open_rental):
    offer_a = list_offer(provider)
    offer_b = list_offer(provider2)

    first_a = open_rental(renter, offer_a)
    first_b = open_rental(renter2, offer_b)

    assert first_a == rental_id(offer_a, 1)
    assert first_b == rental_id(offer_b, 1)


def test_second_rental_after_the_first_is_final_gets_nonce_2(
    escrow, provider, renter, renter2, list_offer, open_rental
):
    offer = list_offer(provider)
    first = open_rental(renter, offer)
    escrow.terminate(first, {"from": renter})

    second = open_rental(renter2, offer)

    assert second == rental_id(offer, 2)
    assert escrow.getRental(second)["status"] == RentalStatus.OPEN
    assert escrow.getRental(second)["renter"] == renter2.address
    assert escrow.liveRentalOf(offer) == second


def test_second_rental_supersedes_the_first_in_the_offers_storage(
    escrow, provider, renter, renter2, list_offer, open_rental
):
    offer = list_offer(provider)
    first = open_rental(renter, offer)
    escrow.terminate(first, {"from": renter})

    open_rental(renter2, offer)

    assert escrow.getRental(first).dict() == {
        "status": RentalStatus.NONE,
        "renter": brownie.ZERO_ADDRESS,
        "pricePerSecond": 0,
        "duration": 0,
        "since": 0,
        "utilFloorBps": 0,
        "feeBps": 0,
        "lastSeq": 0,
        "coveredSeconds": 0,
        "deliveredSeconds": 0,
        "utilSeconds": 0,
        "earned": 0,
        "claimed": 0,
    }
    with brownie.reverts(error("Escrow_UnknownRental", first)):
        escrow.finalize(first, {"from": renter})


def test_reopening_an_offer_rewrites_its_rental_slots_instead_of_allocating(
    escrow, provider, provider2, renter, renter2, list_offer, open_rental
):
    reused = list_offer(provider)
    escrow.terminate(open_rental(renter, reused), {"from": renter})
    fresh = list_offer(provider2)

    gas_fresh = escrow.openRental(fresh, DURATION, MAX_PRICE, JOB, {"from": renter}).gas_used
    gas_reused = escrow.openRental(reused, DURATION, MAX_PRICE, JOB, {"from": renter2}).gas_used

    # Three zero-to-nonzero slot writes (20,000 gas each) become nonzero-to-nonzero rewrites (2,900 each).
    assert gas_fresh - gas_reused > 3 * 15_000


def test_open_rental_reverts_while_offer_has_an_open_rental(escrow, provider, renter, renter2, list_offer, open_rental):
    offer = list_offer(provider)
    open_rental(renter, offer)

    with brownie.reverts(error("Escrow_OfferRented", offer)):
        escrow.openRental(offer, DURATION, MAX_PRICE, JOB, {"from": renter2})


def test_open_rental_reverts_while_offers_rental_is_terminated_but_not_final(
    escrow, provider, renter, renter2, list_offer, open_rental
):
    offer = list_offer(provider)
    rid = open_rental(renter, offer)
    escrow.start(rid, {"from": provider})
    escrow.terminate(rid, {"from": renter})

    with brownie.reverts(error("Escrow_OfferRented", offer)):
        escrow.openRental(offer, DURATION, MAX_PRICE, JOB, {"from": renter2})


def test_open_rental_reverts_when_provider_raised_price_above_renters_max(
    escrow, registry, provider, renter, list_offer
):
    offer = list_offer(provider)
    registry.updateOfferPrice(offer, 2 * PRICE, {"from": provider})

    with brownie.reverts(error("Escrow_PriceAboveMax", offer, 2 * PRICE, PRICE)):
        escrow.openRental(offer, DURATION, PRICE, JOB, {"from": renter})


def test_open_rental_at_exactly_the_max_price_succeeds(escrow, provider, renter, list_offer):
    offer = list_offer(provider)

    tx = escrow.openRental(offer, DURATION, PRICE, JOB, {"from": renter})

    assert escrow.getRental(tx.return_value)["pricePerSecond"] == PRICE


def test_open_rental_charges_the_price_current_at_opening(escrow, registry, token, provider, renter, list_offer):
    offer = list_offer(provider)
    registry.updateOfferPrice(offer, PRICE // 2, {"from": provider})
    balance_before = token.balanceOf(renter)

    tx = escrow.openRental(offer, DURATION, PRICE, JOB, {"from": renter})

    assert escrow.getRental(tx.return_value)["pricePerSecond"] == PRICE // 2
    assert token.balanceOf(renter) == balance_before - PRICE // 2 * DURATION


def test_open_rental_of_paused_offer_reverts(escrow, registry, provider, renter, list_offer):
    offer = list_offer(provider)
    registry.pauseOffer(offer, {"from": provider})

    with brownie.reverts(error("Registry_OfferNotActive", offer)):
        escrow.openRental(offer, DURATION, MAX_PRICE, JOB, {"from": renter})


def test_open_rental_of_closed_offer_reverts(escrow, registry, provider, renter, list_offer):
    offer = list_offer(provider)
    registry.closeOffer(offer, {"from": provider})

    with brownie.reverts(error("Registry_OfferNotActive", offer)):
        escrow.openRental(offer, DURATION, MAX_PRICE, JOB, {"from": renter})


def test_open_rental_of_unknown_offer_reverts(escrow, renter):
    with brownie.reverts(error("Registry_OfferNotActive", 99)):
        escrow.openRental(99, DURATION, MAX_PRICE, JOB, {"from": renter})


def test_open_rental_shorter_than_offers_minimum_reverts(escrow, provider, renter, list_offer):
    offer = list_offer(provider, min_duration=60, max_duration=86_400)

    with brownie.reverts(error("Registry_DurationOutOfRange", offer, 59, 60, 86_400)):
        escrow.openRental(offer, 59, MAX_PRICE, JOB, {"from": renter})


def test_open_rental_longer_than_offers_maximum_reverts(escrow, provider, renter, list_offer):
    offer = list_offer(provider, min_duration=60, max_duration=86_400)

    with brownie.reverts(error("Registry_DurationOutOfRange", offer, 86_401, 60, 86_400)):
        escrow.openRental(offer, 86_401, MAX_PRICE, JOB, {"from": renter})


def test_open_rental_reverts_when_providers_free_stake_is_short_of_collateral(
    escrow, provider, renter, list_offer, params
):
    offer = list_offer(provider, gpus=2, stake=150 * USDC)

    with brownie.reverts(error("Registry_InsufficientFreeStake", provider, 150 * USDC, 2 * params.min_stake_per_gpu)):
        escrow.openRental(offer, DURATION, MAX_PRICE, JOB, {"from": renter})


def test_open_rental_reverts_when_stake_is_locked_by_another_offers_rental(
    escrow, provider, renter, renter2, list_offer, open_rental, params
):
    first = list_offer(provider, gpus=1)
    second = list_offer(provider, gpus=1, stake=1)
    open_rental(renter, first)

    with brownie.reverts(error("Registry_InsufficientFreeStake", provider, 1, params.min_stake_per_gpu)):
        escrow.openRental(second, DURATION, MAX_PRICE, JOB, {"from": renter2})


def test_open_rental_without_allowance_reverts(escrow, token, deployer, provider, stranger, list_offer):
    offer = list_offer(provider)
    token.mint(stranger, PRICE * DURATION, {"from": deployer})

    with brownie.reverts(error("ERC20InsufficientAllowance", escrow, 0, PRICE * DURATION)):
        escrow.openRental(offer, DURATION, MAX_PRICE, JOB, {"from": stranger})


def test_open_rental_while_escrow_paused_reverts(escrow, deployer, provider, renter, list_offer):
    offer = list_offer(provider)
    escrow.pause({"from": deployer})

    with brownie.reverts(error("EnforcedPause")):
        escrow.openRental(offer, DURATION, MAX_PRICE, JOB, {"from": renter})


def test_open_rental_after_unpause_succeeds(escrow, deployer, provider, renter, list_offer):
    offer = list_offer(provider)
    escrow.pause({"from": deployer})
    escrow.unpause({"from": deployer})

    tx = escrow.openRental(offer, DURATION, MAX_PRICE, JOB, {"from": renter})

    assert tx.return_value == rental_id(offer, 1)
