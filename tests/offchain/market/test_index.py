"""The event index against the real registry and escrow on anvil: what it builds from events agrees with the
contracts' own views, it follows a rental to its settlement, and it resumes and starts over as the chain moves."""

from __future__ import annotations

import asyncio

from brownie import chain, web3
from eth_utils import keccak

from offchain.chain.reads import ChainReader
from offchain.market.offers import ProviderRecord, read_offers, read_provider
from offchain.protocol.messages import gpu_uuid_hash
from offchain.protocol.reports import Report
from offchain.protocol.status import DeclineReason, OfferStatus, RentalStatus, SkipReason, SlashReason
from scripts.deploy import USDC, SuiteParams
from tests.offchain.chain.helpers import report_args
from tests.offchain.conftest import PRICE

PARAMS = SuiteParams()  # what the `suite` fixture deployed with
DURATION = 3_600
JOB = keccak(text="index test job")


def run(coroutine):
    return asyncio.run(coroutine)


def open_rental(suite, offer_id: int, renter) -> int:
    return suite.escrow.openRental(offer_id, DURATION, PRICE, JOB, {"from": renter}).return_value


def apply_reports(suite, reports: list[Report], relayer) -> None:
    """Applies `reports` as two of the three oracles would, in one batch."""
    suite.escrow.submitReports(*report_args(suite, reports), {"from": relayer})


def as_registry_reads(record: ProviderRecord) -> ProviderRecord:
    """The provider's record without what the index folds from events: what `read_provider` reads."""
    return record.model_copy(update={"track_record": ProviderRecord.model_fields["track_record"].default})


def list_second_offer(suite, provider, price: int = 2 * PRICE) -> int:
    hashes = [gpu_uuid_hash("GPU-index-test-l4")]
    suite.registry.registerGpus(hashes, {"from": provider})
    terms = (b"L4".ljust(32, b"\0"), 23_034, price, 60, 7_200, b"us-east".ljust(16, b"\0"), 5_000, True, hashes)
    return suite.registry.createOffer(terms, {"from": provider}).return_value


def test_offers_agree_with_the_registry_views(node, make_index, chain_settings, suite, offer, provider, renter):
    second = list_second_offer(suite, provider)
    suite.registry.updateOfferPrice(second, 3 * PRICE, {"from": provider})
    suite.registry.pauseOffer(second, {"from": provider})
    rental_id = open_rental(suite, offer, renter)

    async def scenario():
        async with node() as w3:
            index = make_index(w3)
            assert not index.ready
            assert await index.sync()
            viewed = await read_offers(ChainReader(w3, chain_settings.registry, chain_settings.escrow))
            return index.ready, index.offers(), viewed

    ready, indexed, viewed = run(scenario())
    assert ready
    assert indexed == viewed
    first, paused = indexed
    assert (first.offer_id, first.gpu_model, first.gpu_count, first.region, first.live_rental_id) == (
        offer,
        "H100-80GB",
        2,
        "eu-west",
        rental_id,
    )
    assert (paused.status, paused.price_per_second, paused.util_floor_bps) == (OfferStatus.PAUSED, 3 * PRICE, 5_000)
    assert (first.egress, paused.egress) == (False, True)
    assert first.reputation.staked == 10_000 * USDC


def test_a_rental_is_followed_from_opening_to_settlement(node, make_index, suite, offer, provider, renter, relayer):
    rental_id = open_rental(suite, offer, renter)
    suite.escrow.start(rental_id, {"from": provider})
    since = suite.read(lambda r: r.rental(rental_id)).since
    chain.sleep(20)
    chain.mine()
    apply_reports(
        suite,
        [
            Report(rental_id=rental_id, seq=1, covered_until=since + 10, delivered_seconds=10, util_seconds=9),
            Report(rental_id=rental_id, seq=2, covered_until=since + 20, delivered_seconds=16, util_seconds=11),
            Report(rental_id=rental_id, seq=2, covered_until=since + 20, delivered_seconds=16, util_seconds=11),
        ],
        relayer,
    )
    suite.escrow.claimPayout(rental_id, {"from": relayer})
    terminated = suite.escrow.terminate(rental_id, {"from": renter})
    ends_at = terminated.events["RentalTerminated"]["endsAt"]

    async def during(index):
        await index.sync()
        return index.rental(rental_id), index.offer(offer).live_rental_id

    async def scenario():
        async with node() as w3:
            index = make_index(w3)
            running = await during(index)
            chain.sleep(PARAMS.report_grace + 1)
            suite.escrow.finalize(rental_id, {"from": relayer})
            await index.sync()
            return running, index.rental(rental_id), index.offer(offer), index.provider(provider.address)

    (running, live), final, offer_after, indexed_provider = run(scenario())
    assert running.status is RentalStatus.TERMINATED and live == rental_id
    assert (running.renter, running.price_per_second, running.deposit) == (renter.address, PRICE, PRICE * DURATION)
    assert (running.started_at, running.started_by_report, running.ends_at) == (since, False, ends_at)
    assert [(p.seq, p.covered_until, p.delivered_seconds, p.util_bps, p.earned) for p in running.periods] == [
        (1, since + 10, 10, 9_000, 10 * PRICE),
        (2, since + 20, 6, 3_333, 6 * PRICE),
    ]
    assert [(s.seq, s.reason) for s in running.skipped] == [(2, SkipReason.SEQ_NOT_INCREASING)]
    assert running.claimed == 16 * PRICE and running.claimable == 0
    assert running.refunded == PRICE * (since + DURATION - ends_at)

    on_chain = suite.read(lambda r: r.rental(rental_id))
    duration, delivered, earned = on_chain.duration, on_chain.delivered_seconds, on_chain.earned
    assert final.status is on_chain.status is RentalStatus.EXPIRED
    assert (final.duration, final.delivered_seconds, final.earned) == (duration, delivered, earned)
    fee = earned * PARAMS.fee_bps // 10_000
    settlement = final.settlement
    assert (settlement.provider_payout, settlement.fee, settlement.missed_seconds) == (
        earned - fee,
        fee,
        duration - delivered,
    )
    assert final.refunded == PRICE * DURATION - earned
    assert final.provider_paid == settlement.provider_payout
    assert offer_after.live_rental_id == 0
    rental_events = [h.event for h in indexed_provider.history if h.rental_id == rental_id]
    assert rental_events == [
        "RentalOpened",
        "RentalStarted",
        "EarningsClaimed",
        "RentalTerminated",
        "RentalFinalized",
    ]
    assert indexed_provider.rental_ids == [rental_id]
    assert indexed_provider.record.rentals_completed == 1


def test_a_start_timeout_slash_is_recorded_with_its_reason(
    node, make_index, chain_settings, suite, offer, provider, renter, relayer
):
    rental_id = open_rental(suite, offer, renter)
    chain.sleep(PARAMS.start_timeout + 1)
    suite.escrow.claimStartTimeout(rental_id, {"from": relayer})

    async def scenario():
        async with node() as w3:
            index = make_index(w3)
            await index.sync()
            on_chain = await read_provider(
                ChainReader(w3, chain_settings.registry, chain_settings.escrow), provider.address
            )
            return index.rental(rental_id), index.provider(provider.address), on_chain

    rental, indexed_provider, on_chain = run(scenario())
    assert rental.status is RentalStatus.TIMED_OUT and rental.started_at is None
    collateral = suite.read(lambda r: r.collateral_of(offer))
    assert (rental.settlement.slashed, rental.settlement.slash_reason) == (
        collateral * PARAMS.start_slash_bps // 10_000,
        SlashReason.START_TIMEOUT,
    )
    assert rental.refunded == rental.deposit
    (slash,) = [h for h in indexed_provider.history if h.event == "Slashed"]
    assert (slash.offer_id, slash.record.renter, slash.record.amount, slash.record.reason) == (
        offer,
        renter.address,
        rental.settlement.slashed,
        SlashReason.START_TIMEOUT,
    )
    assert as_registry_reads(indexed_provider.record) == on_chain
    assert indexed_provider.record.track_record.value_missed == rental.booked_duration * PRICE
    assert on_chain.slashes == 1 and on_chain.staked == 10_000 * USDC - rental.settlement.slashed


def test_a_declined_rental_is_final_with_its_reason_and_counted(
    node, make_index, chain_settings, suite, offer, provider, renter
):
    rental_id = open_rental(suite, offer, renter)
    suite.escrow.decline(rental_id, DeclineReason.IMAGE_UNAVAILABLE, {"from": provider})

    async def scenario():
        async with node() as w3:
            index = make_index(w3)
            await index.sync()
            on_chain = await read_provider(
                ChainReader(w3, chain_settings.registry, chain_settings.escrow), provider.address
            )
            return index.rental(rental_id), index.offer(offer), index.provider(provider.address), on_chain

    rental, indexed_offer, indexed_provider, on_chain = run(scenario())
    assert (rental.status, rental.decline_reason) == (RentalStatus.DECLINED, DeclineReason.IMAGE_UNAVAILABLE)
    assert rental.started_at is None
    assert (rental.settlement.refund, rental.settlement.slashed, rental.refunded) == (rental.deposit, 0, rental.deposit)
    assert indexed_offer.live_rental_id == 0
    assert [h.event for h in indexed_provider.history if h.rental_id == rental_id] == [
        "RentalOpened",
        "RentalDeclined",
        "RentalFinalized",
    ]
    assert indexed_provider.record == on_chain  # a declined rental settles no value: an empty track record
    assert (on_chain.declines, on_chain.slashes, on_chain.rentals_completed) == (1, 0, 0)


def test_the_agent_url_is_followed_as_the_provider_publishes_and_clears_it(
    node, make_index, chain_settings, suite, offer, provider
):
    url = "https://agent.example.net:8443"

    async def scenario():
        async with node() as w3:
            index = make_index(w3)
            await index.sync()
            unset = index.provider(provider.address).record.agent_url
            suite.registry.setAgentUrl(url, {"from": provider})
            assert await index.sync()
            published = index.provider(provider.address)
            on_chain = await read_provider(
                ChainReader(w3, chain_settings.registry, chain_settings.escrow), provider.address
            )
            suite.registry.setAgentUrl("", {"from": provider})
            assert await index.sync()
            return unset, published, on_chain, index.provider(provider.address)

    unset, published, on_chain, cleared = run(scenario())
    assert unset is None
    assert published.record.agent_url == url and published.record == on_chain
    assert cleared.record.agent_url is None
    assert [(h.event, h.record.provider, h.record.url) for h in cleared.history if h.event == "AgentUrlSet"] == [
        ("AgentUrlSet", provider.address, url),
        ("AgentUrlSet", provider.address, ""),
    ]


def test_indexing_in_small_ranges_resumes_where_it_stopped(node, make_index, suite, offer, provider, renter):
    async def scenario():
        async with node() as w3:
            stepwise, whole = make_index(w3, max_block_range=1), make_index(w3)
            await stepwise.sync()
            first = stepwise.block
            second = list_second_offer(suite, provider)
            suite.registry.closeOffer(second, {"from": provider})
            rental_id = open_rental(suite, offer, renter)
            assert await stepwise.sync()
            assert not await stepwise.sync()  # nothing new
            await whole.sync()
            return first, stepwise, whole, rental_id

    first, stepwise, whole, rental_id = run(scenario())
    assert stepwise.block == whole.block == web3.eth.block_number > first
    assert stepwise.offers() == whole.offers()
    assert [o.status for o in whole.offers()] == [OfferStatus.ACTIVE, OfferStatus.CLOSED]
    assert stepwise.rental(rental_id) == whole.rental(rental_id)
    assert stepwise.provider(provider.address) == whole.provider(provider.address)


def test_unconfirmed_blocks_are_not_indexed(node, make_index, suite, offer, renter):
    async def scenario():
        async with node() as w3:
            index = make_index(w3, confirmations=2)
            rental_id = open_rental(suite, offer, renter)
            await index.sync()
            unconfirmed = index.rental(rental_id)
            chain.mine(2)
            await index.sync()
            return unconfirmed, index.rental(rental_id), index.block

    unconfirmed, confirmed, block = run(scenario())
    assert unconfirmed is None
    assert confirmed is not None and block == web3.eth.block_number - 2


def test_a_chain_that_went_back_is_indexed_again(node, make_index, suite, offer, provider, caplog):
    def offer_ids(index) -> list[int]:
        return [o.offer_id for o in index.offers()]

    async def scenario():
        async with node() as w3:
            index = make_index(w3)
            chain.snapshot()
            second = list_second_offer(suite, provider)
            await index.sync()
            listed = offer_ids(index)
            chain.revert()  # the head is now below the indexed block
            await index.sync()
            after_revert = offer_ids(index)
            relisted_id = list_second_offer(suite, provider)
            await index.sync()
            relisted = offer_ids(index)
            chain.revert()
            chain.mine(5)  # the head passes the indexed block again, on other blocks
            await index.sync()
            return second, relisted_id, listed, after_revert, relisted, offer_ids(index)

    second, relisted_id, listed, after_revert, relisted, after_remine = run(scenario())
    assert second == relisted_id
    assert listed == relisted == [offer, second]
    assert after_revert == after_remine == [offer]
    assert sum("left the chain" in r.getMessage() for r in caplog.records) == 2


def test_waiters_wake_when_the_index_moves(node, make_index, suite, offer, renter):
    async def scenario():
        async with node() as w3:
            index = make_index(w3)
            await index.sync()
            version = index.version
            waiter = asyncio.create_task(index.wait_for_change(version, timeout=30))
            await asyncio.sleep(0.05)
            assert not waiter.done()
            open_rental(suite, offer, renter)
            await index.sync()
            moved = await asyncio.wait_for(waiter, 5)
            quiet = await index.wait_for_change(moved, timeout=0.1)
            sleeper = asyncio.create_task(index.wait_for_change(moved, timeout=30))
            await asyncio.sleep(0.05)
            await index.wake()  # as a server shutting down does
            woken = await asyncio.wait_for(sleeper, 5)
            return version, moved, quiet, woken

    version, moved, quiet, woken = run(scenario())
    assert moved == quiet == woken == version + 1
