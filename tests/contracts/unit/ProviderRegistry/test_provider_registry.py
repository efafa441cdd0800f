"""ProviderRegistry: stake and unbonding, GPU identities, offers, rental collateral and reputation counters."""

from __future__ import annotations

import brownie
import pytest
from brownie import ZERO_ADDRESS, chain, history

from offchain.protocol.reports import ReportStatus
from scripts.deploy import USDC
from tests.contracts.helpers import PRICE, DeclineReason, RentalStatus, error, new_gpu_hashes, report

ACTIVE, PAUSED, CLOSED = 1, 2, 3
SLASH_NONE, SLASH_START_TIMEOUT, SLASH_SLA_BREACH = 0, 1, 2
MAX_GPUS_PER_OFFER = 64
MAX_AGENT_URL_BYTES = 256
AGENT_URL = "https://agent.example.net:8443"
# 68 bytes: over 31, so its bytes take slots of their own (a short string shares one slot with its length).
LONG_AGENT_URL = "https://gpu-provider-machine-07.eu-west.example.net:8443/gpuex/agent"
STAKE = 1_000 * USDC
GPU_MODEL = b"H100-80GB".ljust(32, b"\0")
REGION = b"eu-west".ljust(16, b"\0")
VRAM_MIB = 81_559


def hexstr(value: bytes) -> str:
    """Brownie decodes bytesN as HexString, which compares equal to hex text but not to raw bytes."""
    return "0x" + value.hex()


def offer_terms(hashes, price=PRICE, min_duration=60, max_duration=86_400, util_floor_bps=10_000, egress=False):
    return (GPU_MODEL, VRAM_MIB, price, min_duration, max_duration, REGION, util_floor_bps, egress, hashes)


def offer_gpus(registry, offer_id):
    return [bytes(h) for h in registry.getOffer(offer_id)["gpuUuidHashes"]]


def counters(registry, provider):
    """The provider's reputation counters: rentals completed, slashes, declines, seconds delivered and missed."""
    account = registry.getProvider(provider)
    return [account[k] for k in ("rentalsCompleted", "slashes", "declines", "secondsDelivered", "secondsMissed")]


def advance(seconds):
    """Moves chain time forward and mines a block, so views see the new time."""
    chain.sleep(seconds)
    chain.mine()


@pytest.fixture
def register(registry):
    """Registers `count` fresh GPU hashes to `account`; returns the hashes."""

    def _register(account, count=2):
        hashes = new_gpu_hashes(count)
        registry.registerGpus(hashes, {"from": account})
        return hashes

    return _register


@pytest.fixture
def collateral(params):
    """Collateral a rental of a two-GPU offer (the `list_offer` default) locks."""
    return 2 * params.min_stake_per_gpu


@pytest.fixture
def complete_rental(escrow, submit):
    """Lets an open rental run `seconds` and has the oracles report it completed with `delivered` seconds."""

    def _complete(rental, seconds=300, delivered=300):
        start = escrow.getRental(rental)["since"]
        advance(seconds)
        return submit([report(rental, 1, start + seconds, delivered, status=ReportStatus.COMPLETED)])

    return _complete


@pytest.fixture
def slashed_renter(escrow, provider, renter, list_offer, open_rental, params, collateral):
    """`renter` holds the start-timeout slash of a two-GPU offer as compensation; returns the amount."""
    rental = open_rental(renter, list_offer(provider))
    advance(params.start_timeout + 1)
    escrow.claimStartTimeout(rental, {"from": renter})
    return collateral * params.start_slash_bps // 10_000


# ---------------------------------------------------------------------------------------------------------
# stake


def test_stake_credits_the_provider_and_emits_staked(registry, provider):
    tx = registry.stake(STAKE, {"from": provider})

    assert registry.getProvider(provider)["staked"] == STAKE
    assert registry.freeStake(provider) == STAKE
    assert tx.events["Staked"]["provider"] == provider
    assert tx.events["Staked"]["amount"] == STAKE


def test_stake_pulls_the_tokens_into_the_registry(registry, token, provider):
    balance = token.balanceOf(provider)

    registry.stake(STAKE, {"from": provider})

    assert token.balanceOf(provider) == balance - STAKE
    assert token.balanceOf(registry) == STAKE


def test_stakes_accumulate(registry, provider):
    registry.stake(STAKE, {"from": provider})
    registry.stake(3, {"from": provider})

    assert registry.getProvider(provider)["staked"] == STAKE + 3


def test_stake_of_zero_reverts(registry, provider):
    with brownie.reverts(error("Registry_ZeroAmount")):
        registry.stake(0, {"from": provider})


def test_stake_beyond_the_allowance_reverts(registry, token, deployer, stranger):
    token.mint(stranger, STAKE, {"from": deployer})

    with brownie.reverts(error("ERC20InsufficientAllowance", registry, 0, STAKE)):
        registry.stake(STAKE, {"from": stranger})


# ---------------------------------------------------------------------------------------------------------
# requestUnstake


def test_request_unstake_moves_free_stake_to_unbonding(registry, provider):
    registry.stake(STAKE, {"from": provider})

    registry.requestUnstake(STAKE // 4, {"from": provider})

    account = registry.getProvider(provider)
    assert account["staked"] == STAKE
    assert account["unbonding"] == STAKE // 4
    assert registry.freeStake(provider) == STAKE - STAKE // 4


def test_request_unstake_emits_amount_total_and_end_of_period(registry, provider, params):
    registry.stake(STAKE, {"from": provider})

    tx = registry.requestUnstake(STAKE // 4, {"from": provider})

    ends_at = tx.timestamp + params.unbonding_period
    assert dict(tx.events["UnstakeRequested"]) == {
        "provider": provider,
        "amount": STAKE // 4,
        "unbonding": STAKE // 4,
        "endsAt": ends_at,
    }
    assert registry.getProvider(provider)["unbondingEndsAt"] == ends_at


def test_second_unstake_request_restarts_the_period_for_everything_unbonding(registry, provider, params):
    registry.stake(STAKE, {"from": provider})
    registry.requestUnstake(100, {"from": provider})
    advance(params.unbonding_period // 2)

    tx = registry.requestUnstake(50, {"from": provider})

    ends_at = tx.timestamp + params.unbonding_period
    assert tx.events["UnstakeRequested"]["unbonding"] == 150
    assert tx.events["UnstakeRequested"]["endsAt"] == ends_at
    advance(params.unbonding_period // 2 + 10)
    with brownie.reverts(error("Registry_UnbondingNotOver", provider, ends_at)):
        registry.withdrawUnstaked({"from": provider})


def test_request_unstake_of_zero_reverts(registry, provider):
    registry.stake(STAKE, {"from": provider})

    with brownie.reverts(error("Registry_ZeroAmount")):
        registry.requestUnstake(0, {"from": provider})


def test_request_unstake_above_free_stake_reverts(registry, provider):
    registry.stake(STAKE, {"from": provider})

    with brownie.reverts(error("Registry_InsufficientFreeStake", provider, STAKE, STAKE + 1)):
        registry.requestUnstake(STAKE + 1, {"from": provider})


def test_request_unstake_cannot_take_stake_already_unbonding(registry, provider):
    registry.stake(STAKE, {"from": provider})
    registry.requestUnstake(STAKE, {"from": provider})

    with brownie.reverts(error("Registry_InsufficientFreeStake", provider, 0, 1)):
        registry.requestUnstake(1, {"from": provider})


def test_request_unstake_cannot_take_locked_collateral(registry, provider, renter, list_offer, open_rental, collateral):
    open_rental(renter, list_offer(provider, stake=STAKE))
    free = STAKE - collateral

    with brownie.reverts(error("Registry_InsufficientFreeStake", provider, free, free + 1)):
        registry.requestUnstake(free + 1, {"from": provider})


def test_request_unstake_takes_all_free_stake_beside_locked_collateral(
    registry, provider, renter, list_offer, open_rental, collateral
):
    open_rental(renter, list_offer(provider, stake=STAKE))

    registry.requestUnstake(STAKE - collateral, {"from": provider})

    account = registry.getProvider(provider)
    assert (account["staked"], account["locked"], account["unbonding"]) == (STAKE, collateral, STAKE - collateral)
    assert registry.freeStake(provider) == 0


# ---------------------------------------------------------------------------------------------------------
# withdrawUnstaked


def test_withdraw_unstaked_before_the_period_ends_reverts(registry, provider, params):
    registry.stake(STAKE, {"from": provider})
    tx = registry.requestUnstake(STAKE, {"from": provider})
    advance(params.unbonding_period - 60)

    ends_at = tx.timestamp + params.unbonding_period
    with brownie.reverts(error("Registry_UnbondingNotOver", provider, ends_at)):
        registry.withdrawUnstaked({"from": provider})


def test_withdraw_unstaked_after_the_period_sends_the_unbonded_tokens(registry, token, provider, params):
    registry.stake(STAKE, {"from": provider})
    registry.requestUnstake(STAKE // 4, {"from": provider})
    advance(params.unbonding_period)
    balance = token.balanceOf(provider)

    tx = registry.withdrawUnstaked({"from": provider})

    assert token.balanceOf(provider) == balance + STAKE // 4
    assert token.balanceOf(registry) == STAKE - STAKE // 4
    assert tx.events["UnstakeWithdrawn"]["provider"] == provider
    assert tx.events["UnstakeWithdrawn"]["amount"] == STAKE // 4


def test_withdraw_unstaked_removes_the_withdrawn_stake(registry, provider, params):
    registry.stake(STAKE, {"from": provider})
    registry.requestUnstake(STAKE // 4, {"from": provider})
    advance(params.unbonding_period)

    registry.withdrawUnstaked({"from": provider})

    account = registry.getProvider(provider)
    assert (account["staked"], account["unbonding"]) == (STAKE - STAKE // 4, 0)
    assert registry.freeStake(provider) == STAKE - STAKE // 4


def test_withdraw_unstaked_with_nothing_unbonding_reverts(registry, provider):
    registry.stake(STAKE, {"from": provider})

    with brownie.reverts(error("Registry_NothingUnbonding", provider)):
        registry.withdrawUnstaked({"from": provider})


def test_withdraw_unstaked_twice_reverts(registry, provider, params):
    registry.stake(STAKE, {"from": provider})
    registry.requestUnstake(STAKE, {"from": provider})
    advance(params.unbonding_period)
    registry.withdrawUnstaked({"from": provider})

    with brownie.reverts(error("Registry_NothingUnbonding", provider)):
        registry.withdrawUnstaked({"from": provider})


def test_unstaked_stake_withdrawn_after_a_slash_pays_exactly_the_unbonded_amount(
    registry, token, escrow, provider, renter, list_offer, open_rental, params, collateral
):
    rental = open_rental(renter, list_offer(provider, stake=STAKE))
    registry.requestUnstake(STAKE - collateral, {"from": provider})
    advance(params.start_timeout + 1)
    escrow.claimStartTimeout(rental, {"from": renter})
    advance(params.unbonding_period)
    balance = token.balanceOf(provider)

    registry.withdrawUnstaked({"from": provider})

    slashed = collateral * params.start_slash_bps // 10_000
    assert token.balanceOf(provider) == balance + STAKE - collateral
    assert registry.getProvider(provider)["staked"] == collateral - slashed
    assert registry.freeStake(provider) == collateral - slashed


# ---------------------------------------------------------------------------------------------------------
# agent


def test_set_agent_records_the_agent_and_emits(registry, provider, agent):
    tx = registry.setAgent(agent, {"from": provider})

    assert registry.agentOf(provider) == agent
    assert registry.getProvider(provider)["agent"] == agent
    assert tx.events["AgentSet"]["provider"] == provider
    assert tx.events["AgentSet"]["agent"] == agent


def test_set_agent_to_zero_unsets_it(registry, provider, agent):
    registry.setAgent(agent, {"from": provider})

    tx = registry.setAgent(ZERO_ADDRESS, {"from": provider})

    assert registry.agentOf(provider) == ZERO_ADDRESS
    assert tx.events["AgentSet"]["agent"] == ZERO_ADDRESS


def test_agent_of_an_unknown_account_is_zero(registry, stranger):
    assert registry.agentOf(stranger) == ZERO_ADDRESS


# ---------------------------------------------------------------------------------------------------------
# agent URL


def test_set_agent_url_records_the_url_and_emits(registry, provider):
    tx = registry.setAgentUrl(AGENT_URL, {"from": provider})

    assert registry.agentUrlOf(provider) == AGENT_URL
    assert dict(tx.events["AgentUrlSet"]) == {"provider": provider, "url": AGENT_URL}


def test_set_agent_url_replaces_the_previous_url(registry, provider):
    registry.setAgentUrl(LONG_AGENT_URL, {"from": provider})

    tx = registry.setAgentUrl(AGENT_URL, {"from": provider})

    assert registry.agentUrlOf(provider) == AGENT_URL
    assert tx.events["AgentUrlSet"]["url"] == AGENT_URL


def test_set_agent_url_to_empty_clears_it(registry, provider):
    registry.setAgentUrl(LONG_AGENT_URL, {"from": provider})

    tx = registry.setAgentUrl("", {"from": provider})

    assert registry.agentUrlOf(provider) == ""
    assert dict(tx.events["AgentUrlSet"]) == {"provider": provider, "url": ""}


def test_agent_url_of_an_unknown_account_is_empty(registry, stranger):
    assert registry.agentUrlOf(stranger) == ""


def test_agent_url_of_exactly_the_maximum_length_is_accepted(registry, provider):
    url = "https://" + "a" * (MAX_AGENT_URL_BYTES - len("https://"))

    registry.setAgentUrl(url, {"from": provider})

    assert registry.MAX_AGENT_URL_BYTES() == MAX_AGENT_URL_BYTES
    assert registry.agentUrlOf(provider) == url


def test_agent_url_one_byte_over_the_maximum_reverts(registry, provider):
    url = "https://" + "a" * (MAX_AGENT_URL_BYTES + 1 - len("https://"))

    with brownie.reverts(error("Registry_AgentUrlTooLong", MAX_AGENT_URL_BYTES + 1, MAX_AGENT_URL_BYTES)):
        registry.setAgentUrl(url, {"from": provider})


def test_agent_url_length_is_counted_in_bytes_not_characters(registry, provider):
    url = "https://" + "\u00e9" * 125  # 8 + 250 bytes of UTF-8

    with brownie.reverts(error("Registry_AgentUrlTooLong", 258, MAX_AGENT_URL_BYTES)):
        registry.setAgentUrl(url, {"from": provider})


def test_a_provider_sets_only_its_own_agent_url(registry, provider, provider2):
    registry.setAgentUrl(AGENT_URL, {"from": provider})

    registry.setAgentUrl(LONG_AGENT_URL, {"from": provider2})
    registry.setAgentUrl("", {"from": provider2})

    assert registry.agentUrlOf(provider) == AGENT_URL
    assert registry.agentUrlOf(provider2) == ""


def test_set_agent_url_leaves_the_provider_account_alone(registry, provider, agent):
    registry.stake(STAKE, {"from": provider})
    registry.setAgent(agent, {"from": provider})
    before = registry.getProvider(provider)

    registry.setAgentUrl(AGENT_URL, {"from": provider})

    assert registry.getProvider(provider) == before
    assert registry.agentOf(provider) == agent


# ---------------------------------------------------------------------------------------------------------
# registerGpus / deregisterGpus


def test_register_gpus_records_the_owner_and_emits(registry, provider):
    hashes = new_gpu_hashes(3)

    tx = registry.registerGpus(hashes, {"from": provider})

    assert [registry.gpuOwner(h) for h in hashes] == [provider] * 3
    assert tx.events["GpusRegistered"]["provider"] == provider
    assert tx.events["GpusRegistered"]["uuidHashes"] == [hexstr(h) for h in hashes]


def test_register_no_gpus_reverts(registry, provider):
    with brownie.reverts(error("Registry_NoGpus")):
        registry.registerGpus([], {"from": provider})


def test_register_a_gpu_twice_reverts(registry, provider, register):
    [gpu] = register(provider, 1)

    with brownie.reverts(error("Registry_GpuAlreadyRegistered", gpu, provider)):
        registry.registerGpus([gpu], {"from": provider})


def test_register_a_gpu_of_another_provider_reverts(registry, provider, provider2, register):
    [gpu] = register(provider, 1)

    with brownie.reverts(error("Registry_GpuAlreadyRegistered", gpu, provider)):
        registry.registerGpus([gpu], {"from": provider2})


def test_register_the_same_gpu_twice_in_one_call_reverts(registry, provider):
    [gpu] = new_gpu_hashes(1)

    with brownie.reverts(error("Registry_GpuAlreadyRegistered", gpu, provider)):
        registry.registerGpus([gpu, gpu], {"from": provider})


def test_deregister_gpus_releases_them_and_emits(registry, provider, register):
    hashes = register(provider, 2)

    tx = registry.deregisterGpus(hashes, {"from": provider})

    assert [registry.gpuOwner(h) for h in hashes] == [ZERO_ADDRESS] * 2
    assert tx.events["GpusDeregistered"]["provider"] == provider
    assert tx.events["GpusDeregistered"]["uuidHashes"] == [hexstr(h) for h in hashes]


def test_deregistered_gpu_can_be_registered_by_another_provider(registry, provider, provider2, register):
    [gpu] = register(provider, 1)
    registry.deregisterGpus([gpu], {"from": provider})

    registry.registerGpus([gpu], {"from": provider2})

    assert registry.gpuOwner(gpu) == provider2


def test_deregister_no_gpus_reverts(registry, provider):
    with brownie.reverts(error("Registry_NoGpus")):
        registry.deregisterGpus([], {"from": provider})


def test_deregister_a_gpu_of_another_provider_reverts(registry, provider, provider2, register):
    [gpu] = register(provider, 1)

    with brownie.reverts(error("Registry_GpuNotOwned", gpu, provider2)):
        registry.deregisterGpus([gpu], {"from": provider2})


def test_deregister_an_unregistered_gpu_reverts(registry, provider):
    [gpu] = new_gpu_hashes(1)

    with brownie.reverts(error("Registry_GpuNotOwned", gpu, provider)):
        registry.deregisterGpus([gpu], {"from": provider})


def test_deregister_a_gpu_in_an_open_offer_reverts(registry, provider, list_offer):
    offer = list_offer(provider)
    gpu = offer_gpus(registry, offer)[0]

    with brownie.reverts(error("Registry_GpuInOffer", gpu, offer)):
        registry.deregisterGpus([gpu], {"from": provider})


def test_deregister_a_gpu_of_a_paused_offer_reverts(registry, provider, list_offer):
    offer = list_offer(provider)
    registry.pauseOffer(offer, {"from": provider})
    gpu = offer_gpus(registry, offer)[0]

    with brownie.reverts(error("Registry_GpuInOffer", gpu, offer)):
        registry.deregisterGpus([gpu], {"from": provider})


def test_deregister_gpus_of_a_closed_offer_works(registry, provider, list_offer):
    offer = list_offer(provider)
    registry.closeOffer(offer, {"from": provider})
    gpus = offer_gpus(registry, offer)

    registry.deregisterGpus(gpus, {"from": provider})

    assert [registry.gpuOwner(h) for h in gpus] == [ZERO_ADDRESS] * 2


# ---------------------------------------------------------------------------------------------------------
# createOffer


def test_create_offer_stores_the_terms(registry, provider, register):
    hashes = register(provider, 2)

    offer = registry.createOffer(offer_terms(hashes, 777, 120, 7_200, 6_000), {"from": provider}).return_value

    assert registry.getOffer(offer).dict() == {
        "provider": provider,
        "gpuCount": 2,
        "utilFloorBps": 6_000,
        "status": ACTIVE,
        "minDuration": 120,
        "egress": False,
        "pricePerSecond": 777,
        "maxDuration": 7_200,
        "vramMiB": VRAM_MIB,
        "region": hexstr(REGION),
        "gpuModel": hexstr(GPU_MODEL),
        "gpuUuidHashes": tuple(hexstr(h) for h in hashes),
    }


def test_create_offer_emits_offer_created_with_the_terms(registry, provider, register):
    hashes = register(provider, 2)

    tx = registry.createOffer(offer_terms(hashes), {"from": provider})

    event = tx.events["OfferCreated"]
    assert (event["offerId"], event["provider"]) == (tx.return_value, provider)
    assert event["terms"] == (
        hexstr(GPU_MODEL),
        VRAM_MIB,
        PRICE,
        60,
        86_400,
        hexstr(REGION),
        10_000,
        False,
        [hexstr(h) for h in hashes],
    )


@pytest.mark.parametrize("egress", [True, False])
def test_create_offer_stores_the_egress_flag(registry, provider, register, egress):
    offer = registry.createOffer(offer_terms(register(provider), egress=egress), {"from": provider}).return_value

    assert registry.getOffer(offer)["egress"] is egress


def test_offer_created_carries_the_egress_flag(registry, provider, register):
    tx = registry.createOffer(offer_terms(register(provider), egress=True), {"from": provider})

    assert tx.events["OfferCreated"]["terms"]["egress"] is True


def test_egress_flag_of_an_offer_outlives_price_and_status_changes(registry, provider, register):
    offer = registry.createOffer(offer_terms(register(provider), egress=True), {"from": provider}).return_value

    registry.updateOfferPrice(offer, 2 * PRICE, {"from": provider})
    registry.pauseOffer(offer, {"from": provider})
    registry.resumeOffer(offer, {"from": provider})

    assert registry.getOffer(offer)["egress"] is True


def test_create_offer_numbers_offers_from_one(registry, provider, provider2, register):
    assert registry.offerCount() == 0

    first = registry.createOffer(offer_terms(register(provider)), {"from": provider}).return_value
    second = registry.createOffer(offer_terms(register(provider2)), {"from": provider2}).return_value

    assert (first, second) == (1, 2)
    assert registry.offerCount() == 2


def test_create_offer_lists_its_gpus(registry, provider, register):
    hashes = register(provider, 2)

    offer = registry.createOffer(offer_terms(hashes), {"from": provider}).return_value

    assert [registry.gpuOffer(h) for h in hashes] == [offer, offer]


def test_create_offer_without_gpus_reverts(registry, provider):
    with brownie.reverts(error("Registry_NoGpus")):
        registry.createOffer(offer_terms([]), {"from": provider})


def test_create_offer_with_the_most_gpus_allowed_works(registry, provider, register):
    hashes = register(provider, MAX_GPUS_PER_OFFER)

    offer = registry.createOffer(offer_terms(hashes), {"from": provider}).return_value

    assert registry.getOffer(offer)["gpuCount"] == MAX_GPUS_PER_OFFER
    assert registry.MAX_GPUS_PER_OFFER() == MAX_GPUS_PER_OFFER


def test_create_offer_with_too_many_gpus_reverts(registry, provider):
    hashes = new_gpu_hashes(MAX_GPUS_PER_OFFER + 1)

    with brownie.reverts(error("Registry_TooManyGpus", MAX_GPUS_PER_OFFER + 1, MAX_GPUS_PER_OFFER)):
        registry.createOffer(offer_terms(hashes), {"from": provider})


@pytest.mark.parametrize(
    "terms",
    [
        {"price": 0},
        {"min_duration": 0},
        {"min_duration": 3_601, "max_duration": 3_600},
        {"util_floor_bps": 10_001},
    ],
    ids=["zero-price", "zero-min-duration", "min-above-max-duration", "util-floor-above-10000"],
)
def test_create_offer_with_invalid_terms_reverts(registry, provider, register, terms):
    hashes = register(provider)

    with brownie.reverts(error("Registry_InvalidTerms")):
        registry.createOffer(offer_terms(hashes, **terms), {"from": provider})


@pytest.mark.parametrize(
    "terms",
    [{"min_duration": 3_600, "max_duration": 3_600}, {"util_floor_bps": 0}, {"util_floor_bps": 10_000}],
    ids=["min-equals-max-duration", "util-floor-0", "util-floor-10000"],
)
def test_create_offer_accepts_boundary_terms(registry, provider, register, terms):
    hashes = register(provider)

    offer = registry.createOffer(offer_terms(hashes, **terms), {"from": provider}).return_value

    assert registry.getOffer(offer)["status"] == ACTIVE


def test_create_offer_with_an_unregistered_gpu_reverts(registry, provider, register):
    [unregistered] = new_gpu_hashes(1)
    hashes = register(provider, 1) + [unregistered]

    with brownie.reverts(error("Registry_GpuNotOwned", unregistered, provider)):
        registry.createOffer(offer_terms(hashes), {"from": provider})


def test_create_offer_with_a_gpu_of_another_provider_reverts(registry, provider, provider2, register):
    [gpu] = register(provider2, 1)

    with brownie.reverts(error("Registry_GpuNotOwned", gpu, provider)):
        registry.createOffer(offer_terms([gpu]), {"from": provider})


def test_create_offer_with_a_gpu_in_another_open_offer_reverts(registry, provider, list_offer):
    offer = list_offer(provider)
    gpu = offer_gpus(registry, offer)[0]

    with brownie.reverts(error("Registry_GpuInOffer", gpu, offer)):
        registry.createOffer(offer_terms([gpu]), {"from": provider})


def test_create_offer_listing_the_same_gpu_twice_reverts(registry, provider, register):
    [gpu] = register(provider, 1)

    with brownie.reverts(error("Registry_GpuInOffer", gpu, 1)):
        registry.createOffer(offer_terms([gpu, gpu]), {"from": provider})


def test_gpus_of_a_closed_offer_can_be_listed_again(registry, provider, list_offer):
    offer = list_offer(provider)
    registry.closeOffer(offer, {"from": provider})
    gpus = offer_gpus(registry, offer)

    relisted = registry.createOffer(offer_terms(gpus), {"from": provider}).return_value

    assert [registry.gpuOffer(h) for h in gpus] == [relisted, relisted]


# ---------------------------------------------------------------------------------------------------------
# updateOfferPrice


def test_update_offer_price_sets_the_price_and_emits(registry, provider, list_offer):
    offer = list_offer(provider)

    tx = registry.updateOfferPrice(offer, 2 * PRICE, {"from": provider})

    assert registry.getOffer(offer)["pricePerSecond"] == 2 * PRICE
    assert tx.events["OfferPriceUpdated"]["offerId"] == offer
    assert tx.events["OfferPriceUpdated"]["pricePerSecond"] == 2 * PRICE


def test_update_offer_price_keeps_the_price_of_a_live_rental(
    registry, escrow, provider, renter, list_offer, open_rental
):
    offer = list_offer(provider)
    rental = open_rental(renter, offer)

    registry.updateOfferPrice(offer, 2 * PRICE, {"from": provider})

    assert escrow.getRental(rental)["pricePerSecond"] == PRICE


def test_update_offer_price_of_a_paused_offer_works(registry, provider, list_offer):
    offer = list_offer(provider)
    registry.pauseOffer(offer, {"from": provider})

    registry.updateOfferPrice(offer, 2 * PRICE, {"from": provider})

    assert registry.getOffer(offer)["pricePerSecond"] == 2 * PRICE


def test_update_offer_price_of_a_closed_offer_reverts(registry, provider, list_offer):
    offer = list_offer(provider)
    registry.closeOffer(offer, {"from": provider})

    with brownie.reverts(error("Registry_OfferClosed", offer)):
        registry.updateOfferPrice(offer, 2 * PRICE, {"from": provider})


def test_update_offer_price_to_zero_reverts(registry, provider, list_offer):
    offer = list_offer(provider)

    with brownie.reverts(error("Registry_InvalidTerms")):
        registry.updateOfferPrice(offer, 0, {"from": provider})


def test_update_offer_price_above_uint64_reverts(registry, provider, list_offer):
    offer = list_offer(provider)

    with brownie.reverts(error("SafeCastOverflowedUintDowncast", 64, 2**64)):
        registry.updateOfferPrice(offer, 2**64, {"from": provider})


def test_update_offer_price_by_its_agent_reverts(registry, provider, agent, list_offer):
    offer = list_offer(provider)
    registry.setAgent(agent, {"from": provider})

    with brownie.reverts(error("Registry_NotOfferProvider", offer, agent)):
        registry.updateOfferPrice(offer, 2 * PRICE, {"from": agent})


def test_update_price_of_an_unknown_offer_reverts(registry, provider):
    with brownie.reverts(error("Registry_UnknownOffer", 1)):
        registry.updateOfferPrice(1, PRICE, {"from": provider})


# ---------------------------------------------------------------------------------------------------------
# pauseOffer / resumeOffer


def test_pause_offer_pauses_it_and_emits(registry, provider, list_offer):
    offer = list_offer(provider)

    tx = registry.pauseOffer(offer, {"from": provider})

    assert registry.getOffer(offer)["status"] == PAUSED
    assert tx.events["OfferPaused"]["offerId"] == offer


def test_paused_offer_cannot_be_rented(provider, renter, list_offer, open_rental, registry):
    offer = list_offer(provider)
    registry.pauseOffer(offer, {"from": provider})

    with brownie.reverts(error("Registry_OfferNotActive", offer)):
        open_rental(renter, offer)


def test_pausing_an_offer_keeps_its_live_rental(registry, escrow, provider, renter, list_offer, open_rental):
    offer = list_offer(provider)
    rental = open_rental(renter, offer)

    registry.pauseOffer(offer, {"from": provider})
    escrow.start(rental, {"from": provider})

    assert escrow.liveRentalOf(offer) == rental


def test_pause_a_paused_offer_reverts(registry, provider, list_offer):
    offer = list_offer(provider)
    registry.pauseOffer(offer, {"from": provider})

    with brownie.reverts(error("Registry_OfferNotActive", offer)):
        registry.pauseOffer(offer, {"from": provider})


def test_pause_a_closed_offer_reverts(registry, provider, list_offer):
    offer = list_offer(provider)
    registry.closeOffer(offer, {"from": provider})

    with brownie.reverts(error("Registry_OfferNotActive", offer)):
        registry.pauseOffer(offer, {"from": provider})


def test_pause_an_offer_of_another_provider_reverts(registry, provider, provider2, list_offer):
    offer = list_offer(provider)

    with brownie.reverts(error("Registry_NotOfferProvider", offer, provider2)):
        registry.pauseOffer(offer, {"from": provider2})


def test_pause_an_unknown_offer_reverts(registry, provider):
    with brownie.reverts(error("Registry_UnknownOffer", 7)):
        registry.pauseOffer(7, {"from": provider})


def test_resume_offer_reactivates_it_and_emits(registry, provider, list_offer):
    offer = list_offer(provider)
    registry.pauseOffer(offer, {"from": provider})

    tx = registry.resumeOffer(offer, {"from": provider})

    assert registry.getOffer(offer)["status"] == ACTIVE
    assert tx.events["OfferResumed"]["offerId"] == offer


def test_resumed_offer_can_be_rented(registry, escrow, provider, renter, list_offer, open_rental):
    offer = list_offer(provider)
    registry.pauseOffer(offer, {"from": provider})
    registry.resumeOffer(offer, {"from": provider})

    rental = open_rental(renter, offer)

    assert escrow.liveRentalOf(offer) == rental


def test_resume_an_active_offer_reverts(registry, provider, list_offer):
    offer = list_offer(provider)

    with brownie.reverts(error("Registry_OfferNotPaused", offer)):
        registry.resumeOffer(offer, {"from": provider})


def test_resume_a_closed_offer_reverts(registry, provider, list_offer):
    offer = list_offer(provider)
    registry.pauseOffer(offer, {"from": provider})
    registry.closeOffer(offer, {"from": provider})

    with brownie.reverts(error("Registry_OfferNotPaused", offer)):
        registry.resumeOffer(offer, {"from": provider})


def test_resume_an_offer_of_another_provider_reverts(registry, provider, provider2, list_offer):
    offer = list_offer(provider)
    registry.pauseOffer(offer, {"from": provider})

    with brownie.reverts(error("Registry_NotOfferProvider", offer, provider2)):
        registry.resumeOffer(offer, {"from": provider2})


# ---------------------------------------------------------------------------------------------------------
# closeOffer


def test_close_offer_closes_it_and_emits(registry, provider, list_offer):
    offer = list_offer(provider)

    tx = registry.closeOffer(offer, {"from": provider})

    assert registry.getOffer(offer)["status"] == CLOSED
    assert tx.events["OfferClosed"]["offerId"] == offer


def test_close_offer_frees_its_gpus_and_keeps_their_owner(registry, provider, list_offer):
    offer = list_offer(provider)
    gpus = offer_gpus(registry, offer)

    registry.closeOffer(offer, {"from": provider})

    assert [registry.gpuOffer(h) for h in gpus] == [0, 0]
    assert [registry.gpuOwner(h) for h in gpus] == [provider, provider]


def test_close_a_paused_offer_works(registry, provider, list_offer):
    offer = list_offer(provider)
    registry.pauseOffer(offer, {"from": provider})

    registry.closeOffer(offer, {"from": provider})

    assert registry.getOffer(offer)["status"] == CLOSED


def test_closed_offer_cannot_be_rented(registry, provider, renter, list_offer, open_rental):
    offer = list_offer(provider)
    registry.closeOffer(offer, {"from": provider})

    with brownie.reverts(error("Registry_OfferNotActive", offer)):
        open_rental(renter, offer)


def test_close_a_closed_offer_reverts(registry, provider, list_offer):
    offer = list_offer(provider)
    registry.closeOffer(offer, {"from": provider})

    with brownie.reverts(error("Registry_OfferClosed", offer)):
        registry.closeOffer(offer, {"from": provider})


def test_close_an_offer_with_a_live_rental_reverts(registry, provider, renter, list_offer, open_rental):
    offer = list_offer(provider)
    open_rental(renter, offer)

    with brownie.reverts(error("Registry_OfferRented", offer)):
        registry.closeOffer(offer, {"from": provider})


def test_close_an_offer_with_a_running_rental_reverts(registry, escrow, provider, renter, list_offer, open_rental):
    offer = list_offer(provider)
    escrow.start(open_rental(renter, offer), {"from": provider})

    with brownie.reverts(error("Registry_OfferRented", offer)):
        registry.closeOffer(offer, {"from": provider})


def test_close_an_offer_after_its_rental_settled_works(registry, escrow, provider, renter, list_offer, open_rental):
    offer = list_offer(provider)
    escrow.terminate(open_rental(renter, offer), {"from": renter})

    registry.closeOffer(offer, {"from": provider})

    assert registry.getOffer(offer)["status"] == CLOSED


def test_close_an_offer_of_another_provider_reverts(registry, provider, provider2, list_offer):
    offer = list_offer(provider)

    with brownie.reverts(error("Registry_NotOfferProvider", offer, provider2)):
        registry.closeOffer(offer, {"from": provider2})


def test_close_an_unknown_offer_reverts(registry, provider):
    with brownie.reverts(error("Registry_UnknownOffer", 0)):
        registry.closeOffer(0, {"from": provider})


# ---------------------------------------------------------------------------------------------------------
# escrow hooks


@pytest.mark.parametrize("caller", ["deployer", "provider", "stranger"])
def test_reserve_by_anyone_but_the_escrow_reverts(registry, provider, list_offer, request, caller):
    offer = list_offer(provider)
    account = request.getfixturevalue(caller)

    with brownie.reverts(error("Registry_CallerNotEscrow", account)):
        registry.reserve(offer, 3_600, {"from": account})


@pytest.mark.parametrize("caller", ["deployer", "provider", "stranger"])
def test_settle_by_anyone_but_the_escrow_reverts(registry, provider, renter, list_offer, open_rental, request, caller):
    offer = list_offer(provider)
    open_rental(renter, offer)
    account = request.getfixturevalue(caller)

    with brownie.reverts(error("Registry_CallerNotEscrow", account)):
        registry.settle(offer, account, RentalStatus.COMPLETED, 3_600, 0, 0, SLASH_NONE, {"from": account})


# ---------------------------------------------------------------------------------------------------------
# collateral locking


def test_opening_a_rental_locks_the_collateral(registry, provider, renter, list_offer, open_rental, collateral):
    offer = list_offer(provider, stake=STAKE)

    open_rental(renter, offer)

    account = registry.getProvider(provider)
    assert (account["staked"], account["locked"]) == (STAKE, collateral)
    assert registry.freeStake(provider) == STAKE - collateral


def test_opening_a_rental_emits_collateral_locked(provider, renter, list_offer, open_rental, collateral):
    offer = list_offer(provider)

    open_rental(renter, offer)

    assert dict(history[-1].events["CollateralLocked"]) == {
        "provider": provider,
        "offerId": offer,
        "amount": collateral,
    }


def test_collateral_is_min_stake_per_gpu_times_the_offers_gpus(registry, provider, list_offer, params):
    offer = list_offer(provider, gpus=3)

    assert registry.collateralOf(offer) == 3 * params.min_stake_per_gpu


def test_renting_with_exactly_the_collateral_free_locks_all_of_it(
    registry, provider, renter, list_offer, open_rental, collateral
):
    open_rental(renter, list_offer(provider, stake=collateral))

    assert registry.getProvider(provider)["locked"] == collateral
    assert registry.freeStake(provider) == 0


def test_renting_with_free_stake_short_of_the_collateral_reverts(provider, renter, list_offer, open_rental, collateral):
    offer = list_offer(provider, stake=collateral - 1)

    with brownie.reverts(error("Registry_InsufficientFreeStake", provider, collateral - 1, collateral)):
        open_rental(renter, offer)


def test_unbonding_stake_is_not_free_for_collateral(registry, provider, renter, list_offer, open_rental, collateral):
    offer = list_offer(provider, stake=collateral)
    registry.requestUnstake(1, {"from": provider})

    with brownie.reverts(error("Registry_InsufficientFreeStake", provider, collateral - 1, collateral)):
        open_rental(renter, offer)


def test_collateral_locked_by_one_rental_is_not_free_for_another(
    registry, provider, renter, renter2, list_offer, open_rental, register, collateral
):
    open_rental(renter, list_offer(provider, stake=collateral))
    second = registry.createOffer(offer_terms(register(provider)), {"from": provider}).return_value

    with brownie.reverts(error("Registry_InsufficientFreeStake", provider, 0, collateral)):
        open_rental(renter2, second)


@pytest.mark.parametrize("duration", [59, 30 * 86_400 + 1], ids=["below-min", "above-max"])
def test_renting_for_a_duration_outside_the_offers_range_reverts(provider, renter, list_offer, open_rental, duration):
    offer = list_offer(provider, min_duration=60, max_duration=30 * 86_400)

    with brownie.reverts(error("Registry_DurationOutOfRange", offer, duration, 60, 30 * 86_400)):
        open_rental(renter, offer, duration=duration)


@pytest.mark.parametrize("duration", [60, 30 * 86_400], ids=["min", "max"])
def test_renting_for_a_duration_at_the_offers_bounds_works(escrow, provider, renter, list_offer, open_rental, duration):
    offer = list_offer(provider, min_duration=60, max_duration=30 * 86_400)

    rental = open_rental(renter, offer, duration=duration)

    assert escrow.getRental(rental)["duration"] == duration


def test_renting_an_unknown_offer_reverts(renter, open_rental):
    with brownie.reverts(error("Registry_OfferNotActive", 5)):
        open_rental(renter, 5)


# ---------------------------------------------------------------------------------------------------------
# settlement: collateral release and reputation counters


def test_cancelled_rental_releases_all_collateral(
    registry, escrow, provider, renter, list_offer, open_rental, collateral
):
    offer = list_offer(provider, stake=STAKE)

    tx = escrow.terminate(open_rental(renter, offer), {"from": renter})

    assert dict(tx.events["CollateralReleased"]) == {"provider": provider, "offerId": offer, "amount": collateral}
    assert "Slashed" not in tx.events
    account = registry.getProvider(provider)
    assert (account["staked"], account["locked"]) == (STAKE, 0)
    assert registry.freeStake(provider) == STAKE


def test_cancelled_rental_leaves_the_reputation_counters_alone(
    registry, escrow, provider, renter, list_offer, open_rental
):
    escrow.terminate(open_rental(renter, list_offer(provider)), {"from": renter})

    assert counters(registry, provider) == [0] * 5


def test_declined_rental_releases_all_collateral(
    registry, escrow, provider, renter, list_offer, open_rental, collateral
):
    offer = list_offer(provider, stake=STAKE)

    tx = escrow.decline(open_rental(renter, offer), DeclineReason.SPEC_MISSING, {"from": provider})

    assert dict(tx.events["CollateralReleased"]) == {"provider": provider, "offerId": offer, "amount": collateral}
    assert "Slashed" not in tx.events
    account = registry.getProvider(provider)
    assert (account["staked"], account["locked"]) == (STAKE, 0)
    assert registry.freeStake(provider) == STAKE
    assert registry.compensationOf(renter) == 0


def test_declined_rental_counts_a_decline_and_nothing_else(registry, escrow, provider, renter, list_offer, open_rental):
    escrow.decline(open_rental(renter, list_offer(provider)), DeclineReason.IMAGE_UNAVAILABLE, {"from": provider})

    assert counters(registry, provider) == [0, 0, 1, 0, 0]


def test_declines_add_up_beside_the_other_counters(
    registry, escrow, provider, renter, list_offer, open_rental, complete_rental
):
    offer = list_offer(provider)
    escrow.decline(open_rental(renter, offer), DeclineReason.EXCEEDS_OFFER, {"from": provider})
    complete_rental(open_rental(renter, offer), seconds=300, delivered=300)

    escrow.decline(open_rental(renter, offer), DeclineReason.AGENT_FAILURE, {"from": provider})

    assert counters(registry, provider) == [1, 0, 2, 300, 0]


def test_start_timeout_slashes_collateral_to_the_renter_and_releases_the_rest(
    registry, escrow, provider, renter, list_offer, open_rental, params, collateral
):
    offer = list_offer(provider)
    rental = open_rental(renter, offer)
    advance(params.start_timeout + 1)

    tx = escrow.claimStartTimeout(rental, {"from": renter})

    slashed = collateral * params.start_slash_bps // 10_000
    assert dict(tx.events["Slashed"]) == {
        "provider": provider,
        "offerId": offer,
        "renter": renter,
        "amount": slashed,
        "reason": SLASH_START_TIMEOUT,
    }
    assert tx.events["CollateralReleased"]["amount"] == collateral - slashed


def test_slash_moves_stake_to_the_renters_compensation(
    registry, escrow, provider, renter, list_offer, open_rental, params, collateral
):
    rental = open_rental(renter, list_offer(provider, stake=STAKE))
    advance(params.start_timeout + 1)

    escrow.claimStartTimeout(rental, {"from": renter})

    slashed = collateral * params.start_slash_bps // 10_000
    account = registry.getProvider(provider)
    assert (account["staked"], account["locked"]) == (STAKE - slashed, 0)
    assert registry.freeStake(provider) == STAKE - slashed
    assert registry.compensationOf(renter) == slashed


def test_start_timeout_counts_a_slash_but_no_completed_rental(
    registry, escrow, provider, renter, list_offer, open_rental, params
):
    rental = open_rental(renter, list_offer(provider))
    advance(params.start_timeout + 1)

    escrow.claimStartTimeout(rental, {"from": renter})

    assert counters(registry, provider) == [0, 1, 0, 0, 3_600]


def test_completed_rental_releases_all_collateral(
    registry, provider, renter, list_offer, open_rental, complete_rental, collateral
):
    offer = list_offer(provider, stake=STAKE)

    tx = complete_rental(open_rental(renter, offer))

    assert tx.events["CollateralReleased"]["amount"] == collateral
    assert "Slashed" not in tx.events
    account = registry.getProvider(provider)
    assert (account["staked"], account["locked"]) == (STAKE, 0)


def test_completed_rental_counts_as_completed_with_its_delivered_seconds(
    registry, provider, renter, list_offer, open_rental, complete_rental
):
    complete_rental(open_rental(renter, list_offer(provider)), seconds=300, delivered=300)

    assert counters(registry, provider) == [
        1,
        0,
        0,
        300,
        0,
    ]


def test_completed_rental_that_missed_the_sla_is_slashed_and_counts_missed_seconds(
    registry, provider, renter, list_offer, open_rental, complete_rental, params, collateral
):
    offer = list_offer(provider)

    tx = complete_rental(open_rental(renter, offer), seconds=300, delivered=200)

    slashed = collateral * (params.sla_slash_bps * 100 // 300) // 10_000
    assert tx.events["Slashed"]["amount"] == slashed
    assert tx.events["Slashed"]["reason"] == SLASH_SLA_BREACH
    assert counters(registry, provider) == [
        1,
        1,
        0,
        200,
        100,
    ]


def test_expired_rental_counts_its_unreported_time_as_missed(
    registry, escrow, provider, renter, list_offer, open_rental, params
):
    rental = open_rental(renter, list_offer(provider), duration=3_600)
    escrow.start(rental, {"from": provider})
    advance(3_600 + params.report_grace)

    escrow.finalize(rental, {"from": renter})

    assert counters(registry, provider) == [
        1,
        1,
        0,
        0,
        3_600,
    ]


def test_reputation_counters_add_up_over_rentals(registry, provider, renter, list_offer, open_rental, complete_rental):
    offer = list_offer(provider)
    complete_rental(open_rental(renter, offer), seconds=300, delivered=300)

    complete_rental(open_rental(renter, offer), seconds=400, delivered=390)

    assert counters(registry, provider) == [
        2,
        0,
        0,
        690,
        10,
    ]


# ---------------------------------------------------------------------------------------------------------
# withdrawCompensation


def test_withdraw_compensation_sends_it_to_the_renter_and_emits(registry, token, renter, slashed_renter):
    balance = token.balanceOf(renter)

    tx = registry.withdrawCompensation({"from": renter})

    assert token.balanceOf(renter) == balance + slashed_renter
    assert dict(tx.events["CompensationWithdrawn"]) == {"account": renter, "amount": slashed_renter}


def test_withdraw_compensation_empties_it(registry, renter, slashed_renter):
    registry.withdrawCompensation({"from": renter})

    assert registry.compensationOf(renter) == 0
    with brownie.reverts(error("Registry_NothingToWithdraw", renter)):
        registry.withdrawCompensation({"from": renter})


def test_withdraw_compensation_leaves_the_providers_stake_whole(
    registry, token, provider, renter, slashed_renter, collateral
):
    registry.withdrawCompensation({"from": renter})

    assert registry.getProvider(provider)["staked"] == collateral - slashed_renter
    assert token.balanceOf(registry) == collateral - slashed_renter


def test_withdraw_compensation_with_nothing_credited_reverts(registry, stranger):
    with brownie.reverts(error("Registry_NothingToWithdraw", stranger)):
        registry.withdrawCompensation({"from": stranger})


# ---------------------------------------------------------------------------------------------------------
# views


def test_views_return_the_deployment_parameters(registry, escrow, token, params):
    assert registry.stakeToken() == token
    assert registry.escrow() == escrow
    assert registry.minStakePerGpu() == params.min_stake_per_gpu
    assert registry.unbondingPeriod() == params.unbonding_period


def test_unknown_account_has_an_empty_provider_record(registry, stranger):
    assert registry.getProvider(stranger).dict() == {
        "staked": 0,
        "locked": 0,
        "unbonding": 0,
        "unbondingEndsAt": 0,
        "rentalsCompleted": 0,
        "slashes": 0,
        "declines": 0,
        "secondsDelivered": 0,
        "secondsMissed": 0,
        "agent": ZERO_ADDRESS,
    }
    assert registry.freeStake(stranger) == 0
    assert registry.compensationOf(stranger) == 0


@pytest.mark.parametrize("offer_id", [0, 2])
def test_get_offer_of_an_unknown_id_reverts(registry, provider, list_offer, offer_id):
    list_offer(provider)

    with brownie.reverts(error("Registry_UnknownOffer", offer_id)):
        registry.getOffer(offer_id)


def test_collateral_of_an_unknown_offer_is_zero(registry):
    assert registry.collateralOf(1) == 0


def test_unregistered_gpu_has_no_owner_and_no_offer(registry):
    [gpu] = new_gpu_hashes(1)

    assert registry.gpuOwner(gpu) == ZERO_ADDRESS
    assert registry.gpuOffer(gpu) == 0


def test_is_provider_or_agent_accepts_the_provider_and_its_agent(registry, provider, agent, list_offer):
    offer = list_offer(provider)
    registry.setAgent(agent, {"from": provider})

    assert registry.isProviderOrAgent(offer, provider)
    assert registry.isProviderOrAgent(offer, agent)


def test_is_provider_or_agent_rejects_other_accounts(registry, provider, provider2, agent, stranger, list_offer):
    offer = list_offer(provider)
    registry.setAgent(agent, {"from": provider})

    assert not registry.isProviderOrAgent(offer, provider2)
    assert not registry.isProviderOrAgent(offer, stranger)


def test_is_provider_or_agent_rejects_a_replaced_agent(registry, provider, agent, stranger, list_offer):
    offer = list_offer(provider)
    registry.setAgent(agent, {"from": provider})

    registry.setAgent(stranger, {"from": provider})

    assert not registry.isProviderOrAgent(offer, agent)


def test_is_provider_or_agent_rejects_the_zero_address_when_no_agent_is_set(registry, provider, list_offer):
    offer = list_offer(provider)

    assert not registry.isProviderOrAgent(offer, ZERO_ADDRESS)
    assert not registry.isProviderOrAgent(offer + 1, ZERO_ADDRESS)
