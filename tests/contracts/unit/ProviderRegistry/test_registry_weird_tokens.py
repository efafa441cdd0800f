"""ProviderRegistry with non-standard stake tokens: it rejects tokens that fail silently or deliver less than
asked, and accounts exactly with tokens that return nothing (as USDT does)."""

from __future__ import annotations

import brownie
import pytest
from brownie import chain

from scripts.deploy import USDC, deploy_suite
from tests.contracts.helpers import PRICE, new_gpu_hashes

STAKE = 1_000 * USDC


def advance(seconds):
    """Moves chain time forward and mines a block, so views see the new time."""
    chain.sleep(seconds)
    chain.mine()


def registry_staking(stake_token, deployer, treasury, payment_token, params, provider):
    """A suite paid in tUSD whose stake token is `stake_token`; `provider` holds and has approved STAKE."""
    suite = deploy_suite(deployer, payment_token, stake_token, treasury, params=params)
    stake_token.mint(provider, STAKE, {"from": deployer})
    stake_token.approve(suite.registry, STAKE, {"from": provider})
    return suite


@pytest.fixture(scope="module")
def return_false_token(ERC20ReturnFalseMock, deployer):
    return ERC20ReturnFalseMock.deploy({"from": deployer})


@pytest.fixture(scope="module")
def no_return_token(ERC20NoReturnMock, deployer):
    return ERC20NoReturnMock.deploy({"from": deployer})


@pytest.fixture(scope="module")
def fee_on_transfer_token(ERC20FeeOnTransferMock, deployer):
    return ERC20FeeOnTransferMock.deploy({"from": deployer})


@pytest.fixture(scope="module")
def return_false_suite(return_false_token, deployer, treasury, token, params, provider):
    return registry_staking(return_false_token, deployer, treasury, token, params, provider)


@pytest.fixture(scope="module")
def no_return_suite(no_return_token, deployer, treasury, token, params, provider, renter):
    suite = registry_staking(no_return_token, deployer, treasury, token, params, provider)
    token.approve(suite.escrow, 2**256 - 1, {"from": renter})
    return suite


@pytest.fixture(scope="module")
def fee_on_transfer_suite(fee_on_transfer_token, deployer, treasury, token, params, provider):
    return registry_staking(fee_on_transfer_token, deployer, treasury, token, params, provider)


# ---------------------------------------------------------------------------------------------------------
# a token that returns false instead of reverting


def test_stake_of_a_token_that_returns_false_reverts(return_false_suite, return_false_token, provider):
    with brownie.reverts(f"SafeERC20FailedOperation: {return_false_token.address.lower()}"):
        return_false_suite.registry.stake(STAKE, {"from": provider})


# ---------------------------------------------------------------------------------------------------------
# a token whose transfers return nothing


def test_stake_of_a_no_return_token_is_accounted_exactly(no_return_suite, no_return_token, provider):
    registry = no_return_suite.registry

    registry.stake(STAKE, {"from": provider})

    assert registry.getProvider(provider)["staked"] == STAKE
    assert no_return_token.balanceOf(registry) == STAKE
    assert no_return_token.balanceOf(provider) == 0


def test_unstake_of_a_no_return_token_pays_back_exactly(no_return_suite, no_return_token, provider, params):
    registry = no_return_suite.registry
    registry.stake(STAKE, {"from": provider})
    registry.requestUnstake(STAKE // 4, {"from": provider})
    advance(params.unbonding_period)

    registry.withdrawUnstaked({"from": provider})

    assert no_return_token.balanceOf(provider) == STAKE // 4
    assert no_return_token.balanceOf(registry) == STAKE - STAKE // 4
    assert registry.getProvider(provider)["staked"] == STAKE - STAKE // 4


def test_compensation_in_a_no_return_token_is_paid_exactly(no_return_suite, no_return_token, provider, renter, params):
    registry, escrow = no_return_suite.registry, no_return_suite.escrow
    gpus = new_gpu_hashes(1)
    registry.stake(STAKE, {"from": provider})
    registry.registerGpus(gpus, {"from": provider})
    offer = registry.createOffer(
        (b"\0" * 32, 81_559, PRICE, 60, 86_400, b"\0" * 16, 10_000, False, gpus), {"from": provider}
    ).return_value
    rental = escrow.openRental(offer, 3_600, PRICE, b"\0" * 32, {"from": renter}).return_value
    advance(params.start_timeout + 1)
    escrow.claimStartTimeout(rental, {"from": renter})

    registry.withdrawCompensation({"from": renter})

    slashed = params.min_stake_per_gpu * params.start_slash_bps // 10_000
    assert no_return_token.balanceOf(renter) == slashed
    assert no_return_token.balanceOf(registry) == STAKE - slashed
    assert registry.getProvider(provider)["staked"] == STAKE - slashed


# ---------------------------------------------------------------------------------------------------------
# a token that takes a fee on every transfer


def test_stake_of_a_fee_on_transfer_token_reverts(fee_on_transfer_suite, provider):
    with brownie.reverts(f"Registry_TransferAmountMismatch: {STAKE}, {STAKE - STAKE // 100}"):
        fee_on_transfer_suite.registry.stake(STAKE, {"from": provider})
