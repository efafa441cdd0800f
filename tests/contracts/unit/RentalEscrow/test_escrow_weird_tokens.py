"""RentalEscrow with non-standard payment tokens: it rejects tokens that fail silently or skim transfers and
survives tokens that return nothing. Providers stake the conftest's TestStablecoin.

Each test names its payment token through indirect parametrisation of the module-scoped `payment_token`, so
the conftest's `suite` (and with it `registry`, `escrow` and every helper fixture) is redeployed per token.
"""

import brownie
import pytest

from offchain.protocol.reports import ReportStatus
from scripts.deploy import USDC, deploy_suite
from tests.contracts.helpers import ORACLES, PRICE, error, report, wait
from tests.contracts.unit.RentalEscrow.escrow_helpers import DURATION, fee_of

DEPOSIT = PRICE * DURATION
RENTER_FUNDS = 1_000 * USDC


def payment_token_is(name):
    return pytest.mark.parametrize("payment_token", [name], indirect=True)


@pytest.fixture(scope="module")
def payment_token(request, deployer):
    return request.getfixturevalue(request.param).deploy({"from": deployer})


@pytest.fixture(scope="module")
def suite(deployer, treasury, token, payment_token, params):
    return deploy_suite(deployer, payment_token, token, treasury, [o.address for o in ORACLES], 2, params)


@pytest.fixture(scope="module", autouse=True)
def renter_holds_payment_token(payment_token, suite, renter):
    payment_token.mint(renter, RENTER_FUNDS, {"from": renter})
    payment_token.approve(suite.escrow, 2**256 - 1, {"from": renter})


@payment_token_is("ERC20ReturnFalseMock")
def test_open_rental_with_token_returning_false_reverts(escrow, payment_token, provider, renter, list_offer):
    offer = list_offer(provider)

    with brownie.reverts(error("SafeERC20FailedOperation", payment_token)):
        escrow.openRental(offer, DURATION, PRICE, b"\x11" * 32, {"from": renter})


@payment_token_is("ERC20FeeOnTransferMock")
def test_open_rental_with_fee_on_transfer_token_reverts(escrow, provider, renter, list_offer):
    offer = list_offer(provider)

    with brownie.reverts(error("Escrow_TransferAmountMismatch", DEPOSIT, DEPOSIT - DEPOSIT // 100)):
        escrow.openRental(offer, DURATION, PRICE, b"\x11" * 32, {"from": renter})


@payment_token_is("ERC20NoReturnMock")
def test_open_rental_with_token_returning_nothing_pulls_the_deposit(
    escrow, payment_token, provider, renter, list_offer, open_rental
):
    open_rental(renter, list_offer(provider), duration=DURATION)

    assert payment_token.balanceOf(escrow) == DEPOSIT
    assert payment_token.balanceOf(renter) == RENTER_FUNDS - DEPOSIT


@payment_token_is("ERC20NoReturnMock")
def test_rental_in_token_returning_nothing_settles_and_withdraws_exactly(
    escrow, payment_token, provider, renter, treasury, list_offer, open_rental, submit, params
):
    rid = open_rental(renter, list_offer(provider), duration=DURATION)
    started = escrow.start(rid, {"from": provider}).timestamp
    wait(600)
    submit([report(rid, 1, started + 600, 600, status=ReportStatus.COMPLETED)])

    for account in (provider, renter, treasury):
        escrow.withdraw({"from": account})

    earned = PRICE * 600
    fee = fee_of(earned, params.fee_bps)
    assert escrow.getRental(rid)["earned"] == earned
    assert payment_token.balanceOf(provider) == earned - fee
    assert payment_token.balanceOf(treasury) == fee
    assert payment_token.balanceOf(renter) == RENTER_FUNDS - earned
    assert payment_token.balanceOf(escrow) == 0
