"""TestStablecoin: a 6-decimal test token with an owner mint, a rate-limited faucet and EIP-2612 permit."""

from __future__ import annotations

import brownie
import pytest
from brownie import chain
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak

from scripts.deploy import USDC

FAUCET_AMOUNT = 10_000 * USDC
FAUCET_COOLDOWN = 86_400
PERMIT_OWNER_KEY = keccak(text="gpuex test permit owner")
PERMIT_VALUE = 250 * USDC


def advance(seconds):
    """Moves chain time forward and mines a block, so views see the new time."""
    chain.sleep(seconds)
    chain.mine()


@pytest.fixture(scope="module")
def permit_owner(accounts):
    """A local key with no ETH: it only signs, and others relay its permits."""
    return accounts.add(PERMIT_OWNER_KEY)


@pytest.fixture
def sign_permit(token):
    """Signs an EIP-2612 permit of `permit_owner`'s tokens for `spender`; returns the `permit` arguments."""

    def _sign(owner, spender, value=PERMIT_VALUE, deadline=None, nonce=None, key=PERMIT_OWNER_KEY):
        deadline = chain.time() + 3_600 if deadline is None else deadline
        nonce = token.nonces(owner) if nonce is None else nonce
        signed = Account.sign_message(permit_message(token, owner, spender, value, nonce, deadline), key)
        return (owner, spender, value, deadline, signed.v, signed.r.to_bytes(32, "big"), signed.s.to_bytes(32, "big"))

    return _sign


def permit_message(token, owner, spender, value, nonce, deadline):
    return encode_typed_data(
        full_message={
            "types": {
                "EIP712Domain": [
                    {"name": "name", "type": "string"},
                    {"name": "version", "type": "string"},
                    {"name": "chainId", "type": "uint256"},
                    {"name": "verifyingContract", "type": "address"},
                ],
                "Permit": [
                    {"name": "owner", "type": "address"},
                    {"name": "spender", "type": "address"},
                    {"name": "value", "type": "uint256"},
                    {"name": "nonce", "type": "uint256"},
                    {"name": "deadline", "type": "uint256"},
                ],
            },
            "primaryType": "Permit",
            "domain": {
                "name": "gpuex Test USD",
                "version": "1",
                "chainId": chain.id,
                "verifyingContract": token.address,
            },
            "message": {
                "owner": str(owner),
                "spender": str(spender),
                "value": value,
                "nonce": nonce,
                "deadline": deadline,
            },
        }
    )


# ---------------------------------------------------------------------------------------------------------
# metadata and minting


def test_token_has_six_decimals(token):
    assert token.decimals() == 6


def test_token_names_itself_test_usd(token):
    assert (token.name(), token.symbol()) == ("gpuex Test USD", "tUSD")


def test_owner_is_the_account_the_constructor_names(token, deployer):
    assert token.owner() == deployer


def test_owner_mints_to_any_account(token, deployer, stranger):
    token.mint(stranger, 5 * USDC, {"from": deployer})

    assert token.balanceOf(stranger) == 5 * USDC


def test_mint_by_anyone_but_the_owner_reverts(token, stranger):
    with brownie.reverts(f"OwnableUnauthorizedAccount: {stranger.address.lower()}"):
        token.mint(stranger, 5 * USDC, {"from": stranger})


# ---------------------------------------------------------------------------------------------------------
# faucet


def test_faucet_amount_is_ten_thousand_tokens(token):
    assert token.FAUCET_AMOUNT() == FAUCET_AMOUNT
    assert token.FAUCET_COOLDOWN() == FAUCET_COOLDOWN


def test_faucet_mints_the_faucet_amount_to_the_caller_and_emits(token, stranger):
    supply = token.totalSupply()

    tx = token.faucet({"from": stranger})

    assert token.balanceOf(stranger) == FAUCET_AMOUNT
    assert token.totalSupply() == supply + FAUCET_AMOUNT
    assert dict(tx.events["FaucetClaimed"]) == {"account": stranger, "amount": FAUCET_AMOUNT}


def test_second_faucet_claim_within_the_cooldown_reverts(token, stranger):
    tx = token.faucet({"from": stranger})

    with brownie.reverts(
        f"TestStablecoin_FaucetCooldown: {stranger.address.lower()}, {tx.timestamp + FAUCET_COOLDOWN}"
    ):
        token.faucet({"from": stranger})


def test_faucet_claim_shortly_before_the_cooldown_ends_reverts(token, stranger):
    tx = token.faucet({"from": stranger})
    advance(FAUCET_COOLDOWN - 60)

    with brownie.reverts(
        f"TestStablecoin_FaucetCooldown: {stranger.address.lower()}, {tx.timestamp + FAUCET_COOLDOWN}"
    ):
        token.faucet({"from": stranger})


def test_faucet_works_again_after_the_cooldown(token, stranger):
    token.faucet({"from": stranger})
    advance(FAUCET_COOLDOWN)

    token.faucet({"from": stranger})

    assert token.balanceOf(stranger) == 2 * FAUCET_AMOUNT


def test_faucet_cooldown_is_per_account(token, stranger, agent):
    token.faucet({"from": stranger})

    token.faucet({"from": agent})

    assert token.balanceOf(agent) == FAUCET_AMOUNT


# ---------------------------------------------------------------------------------------------------------
# EIP-2612 permit


def test_domain_separator_is_the_eip712_domain_of_the_token(token, permit_owner, stranger):
    message = permit_message(token, permit_owner, stranger, 0, 0, 0)

    assert token.DOMAIN_SEPARATOR() == "0x" + message.header.hex()


def test_permit_sets_the_allowance_and_uses_the_nonce(token, permit_owner, stranger, sign_permit):
    token.permit(*sign_permit(permit_owner, stranger), {"from": stranger})

    assert token.allowance(permit_owner, stranger) == PERMIT_VALUE
    assert token.nonces(permit_owner) == 1


def test_permit_emits_approval(token, permit_owner, stranger, sign_permit):
    tx = token.permit(*sign_permit(permit_owner, stranger), {"from": stranger})

    assert dict(tx.events["Approval"]) == {"owner": permit_owner, "spender": stranger, "value": PERMIT_VALUE}


def test_permitted_spender_transfers_the_owners_tokens(token, deployer, permit_owner, stranger, agent, sign_permit):
    token.mint(permit_owner, PERMIT_VALUE, {"from": deployer})
    token.permit(*sign_permit(permit_owner, stranger), {"from": agent})

    token.transferFrom(permit_owner, stranger, PERMIT_VALUE, {"from": stranger})

    assert token.balanceOf(stranger) == PERMIT_VALUE
    assert token.balanceOf(permit_owner) == 0


def test_permit_signed_by_another_key_reverts(token, permit_owner, stranger, sign_permit):
    impostor_key = keccak(text="gpuex test impostor")
    impostor = Account.from_key(impostor_key).address

    with brownie.reverts(f"ERC2612InvalidSigner: {impostor.lower()}, {permit_owner.address.lower()}"):
        token.permit(*sign_permit(permit_owner, stranger, key=impostor_key), {"from": stranger})


def test_expired_permit_reverts(token, permit_owner, stranger, sign_permit):
    deadline = chain[-1].timestamp - 1

    with brownie.reverts(f"ERC2612ExpiredSignature: {deadline}"):
        token.permit(*sign_permit(permit_owner, stranger, deadline=deadline), {"from": stranger})


def test_replayed_permit_reverts(token, permit_owner, stranger, sign_permit):
    args = sign_permit(permit_owner, stranger)
    token.permit(*args, {"from": stranger})
    _, _, value, deadline, v, r, s = args
    replay_signer = Account.recover_message(
        permit_message(token, permit_owner, stranger, value, 1, deadline), vrs=(v, r, s)
    )

    with brownie.reverts(f"ERC2612InvalidSigner: {replay_signer.lower()}, {permit_owner.address.lower()}"):
        token.permit(*args, {"from": stranger})
