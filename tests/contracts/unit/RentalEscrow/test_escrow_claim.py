"""RentalEscrow.claim: a provider is paid as it goes, what its rental earned by the last applied totals less what
it already claimed, and the claims plus the final settlement add up to one settlement of the final totals."""

import brownie
import pytest

from offchain.protocol.reports import ReportStatus, rental_id
from tests.contracts.helpers import RentalStatus, error, report, wait
from tests.contracts.unit.RentalEscrow.escrow_helpers import DURATION, earnings, event, fee_of

FLOOR = 4_000
PRICE = 1_237  # with FLOOR, the totals below earn fractional amounts, so every rounding shows
# (covered, delivered, utilisation-weighted) totals of three successive reports
TOTALS = [(600, 590, 311), (1_200, 1_190, 733), (1_800, 1_795, 1_001)]


@pytest.fixture
def offer(list_offer, provider):
    return list_offer(provider, price=PRICE, util_floor_bps=FLOOR)


@pytest.fixture
def reported(escrow, rid, started, submit):
    """Applies the `n`-th report of TOTALS to the started rental `rid`; returns its gross earnings."""

    def _reported(n, status=ReportStatus.RUNNING):
        covered, delivered, util = TOTALS[n - 1]
        submit([report(rid, n, started + covered, delivered, util=util, status=status)])
        return earnings(PRICE, delivered, util, FLOOR)

    wait(TOTALS[-1][0])
    return _reported


def test_claim_credits_the_earnings_so_far_less_the_fee(escrow, rid, reported, provider, treasury, stranger, params):
    earned = reported(1)

    tx = escrow.claimPayout(rid, {"from": stranger})

    fee = fee_of(earned, params.fee_bps)
    assert event(tx, "EarningsClaimed") == {
        "rentalId": rid,
        "earned": earned,
        "providerPayout": earned - fee,
        "fee": fee,
    }
    assert (escrow.balanceOf(provider), escrow.balanceOf(treasury)) == (earned - fee, fee)
    assert escrow.getRental(rid)["claimed"] == earned


def test_later_claim_credits_the_differences_of_the_fee_on_the_totals(
    escrow, rid, reported, provider, treasury, stranger, params
):
    first = reported(1)
    escrow.claimPayout(rid, {"from": stranger})
    second = reported(2)

    tx = escrow.claimPayout(rid, {"from": stranger})

    fee = fee_of(second, params.fee_bps) - fee_of(first, params.fee_bps)
    # The fee on the difference rounds otherwise: a claim must not.
    assert fee != fee_of(second - first, params.fee_bps)
    assert event(tx, "EarningsClaimed") == {
        "rentalId": rid,
        "earned": second,
        "providerPayout": second - first - fee,
        "fee": fee,
    }
    assert escrow.balanceOf(treasury) == fee_of(second, params.fee_bps)
    assert escrow.balanceOf(provider) == second - fee_of(second, params.fee_bps)


def test_claims_and_the_final_settlement_add_up_to_one_settlement(
    escrow, rid, reported, provider, renter, treasury, stranger, params
):
    reported(1)
    escrow.claimPayout(rid, {"from": stranger})
    reported(2)
    escrow.claimPayout(rid, {"from": provider})

    earned = reported(3, status=ReportStatus.COMPLETED)

    fee = fee_of(earned, params.fee_bps)
    credited = [escrow.balanceOf(a) for a in (provider, treasury, renter)]
    assert credited == [earned - fee, fee, PRICE * DURATION - earned]
    assert sum(credited) == PRICE * DURATION


def test_final_settlement_reports_lifetime_totals_after_claims(escrow, rid, reported, stranger, params):
    reported(1)
    escrow.claimPayout(rid, {"from": stranger})

    earned = reported(3)
    wait(DURATION)
    tx = escrow.finalize(rid, {"from": stranger})

    finalized = event(tx, "RentalFinalized")
    fee = fee_of(earned, params.fee_bps)
    assert (finalized["providerPayout"], finalized["fee"], finalized["refund"]) == (
        earned - fee,
        fee,
        PRICE * DURATION - earned,
    )


def test_claim_of_everything_leaves_nothing_to_settle_but_the_refund(
    escrow, rid, reported, provider, renter, treasury, stranger, params
):
    earned = reported(3)
    escrow.claimPayout(rid, {"from": stranger})
    wait(DURATION)

    escrow.finalize(rid, {"from": stranger})

    fee = fee_of(earned, params.fee_bps)
    assert [escrow.balanceOf(a) for a in (provider, treasury, renter)] == [earned - fee, fee, PRICE * DURATION - earned]


def test_claim_of_terminated_rental_works(escrow, rid, reported, provider, renter, stranger, params):
    earned = reported(1)
    escrow.terminate(rid, {"from": renter})

    escrow.claimPayout(rid, {"from": stranger})

    assert escrow.balanceOf(provider) == earned - fee_of(earned, params.fee_bps)


def test_claim_works_while_escrow_paused(escrow, rid, reported, provider, deployer, stranger, params):
    earned = reported(1)
    escrow.pause({"from": deployer})

    escrow.claimPayout(rid, {"from": stranger})

    assert escrow.balanceOf(provider) == earned - fee_of(earned, params.fee_bps)


def test_claim_of_rental_started_by_its_first_report_works(escrow, rid, provider, submit, stranger, params):
    opened = escrow.getRental(rid)["since"]
    wait(300)
    submit([report(rid, 1, opened + 300, 290, util=100)])

    escrow.claimPayout(rid, {"from": stranger})

    earned = earnings(PRICE, 290, 100, FLOOR)
    assert escrow.balanceOf(provider) == earned - fee_of(earned, params.fee_bps)


def test_claim_credits_the_provider_whoever_calls(escrow, rid, reported, provider, renter, params):
    earned = reported(1)

    escrow.claimPayout(rid, {"from": renter})

    assert escrow.balanceOf(provider) == earned - fee_of(earned, params.fee_bps)
    assert escrow.balanceOf(renter) == 0


def test_claim_before_any_report_reverts(escrow, rid, started, stranger):
    with brownie.reverts(error("Escrow_NothingToClaim", rid)):
        escrow.claimPayout(rid, {"from": stranger})


def test_claim_without_new_earnings_reverts(escrow, rid, reported, stranger):
    reported(1)
    escrow.claimPayout(rid, {"from": stranger})

    with brownie.reverts(error("Escrow_NothingToClaim", rid)):
        escrow.claimPayout(rid, {"from": stranger})


def test_claim_of_open_rental_reverts(escrow, rid, stranger):
    with brownie.reverts(error("Escrow_RentalNotActive", rid, RentalStatus.OPEN)):
        escrow.claimPayout(rid, {"from": stranger})


def test_claim_after_finalisation_reverts(escrow, rid, reported, stranger):
    reported(1, status=ReportStatus.COMPLETED)

    with brownie.reverts(error("Escrow_RentalNotActive", rid, RentalStatus.COMPLETED)):
        escrow.claimPayout(rid, {"from": stranger})


def test_claim_after_a_claimed_rental_expired_reverts(escrow, rid, reported, stranger):
    reported(1)
    escrow.claimPayout(rid, {"from": stranger})
    wait(DURATION)
    escrow.finalize(rid, {"from": stranger})

    with brownie.reverts(error("Escrow_RentalNotActive", rid, RentalStatus.EXPIRED)):
        escrow.claimPayout(rid, {"from": stranger})


def test_claim_of_unknown_rental_reverts(escrow, offer, rid, stranger):
    with brownie.reverts(error("Escrow_UnknownRental", rental_id(offer, 2))):
        escrow.claimPayout(rental_id(offer, 2), {"from": stranger})
