"""A provider's reputation as the event index folds it (`offchain.market.reputation`): value settled by other renters
counts, self-rentals (by the provider or any agent key it set) do not, and a record of little value is new."""

from __future__ import annotations

import asyncio

from brownie import chain
from eth_utils import keccak

from offchain.market.offers import OfferQuery, TokenInfo, search_offers
from offchain.market.reputation import NEW_PROVIDER_VALUE
from offchain.protocol.messages import gpu_uuid_hash
from offchain.protocol.reports import Report, ReportStatus
from scripts.deploy import USDC
from tests.offchain.chain.helpers import report_args

JOB = keccak(text="reputation test job")
TOKEN = TokenInfo(address="0x" + "11" * 20, symbol="tUSD", decimals=6)


def list_offer(suite, provider, name: str, price: int) -> int:
    hashes = [gpu_uuid_hash(f"GPU-reputation-test-{name}")]
    suite.registry.registerGpus(hashes, {"from": provider})
    terms = (b"L4".ljust(32, b"\0"), 23_034, price, 60, 7_200, b"us-east".ljust(16, b"\0"), 10_000, False, hashes)
    return suite.registry.createOffer(terms, {"from": provider}).return_value


def completed_rental(suite, offer_id: int, price: int, renter, provider, relayer, covered: int, delivered: int) -> int:
    """A rental of `offer_id` by `renter` whose one report completes it after `covered` seconds."""
    rental_id = suite.escrow.openRental(offer_id, 3_600, price, JOB, {"from": renter}).return_value
    since = suite.escrow.start(rental_id, {"from": provider}).timestamp
    chain.sleep(covered)
    chain.mine()
    report = Report(
        rental_id=rental_id,
        seq=1,
        covered_until=since + covered,
        delivered_seconds=delivered,
        util_seconds=delivered,
        status=ReportStatus.COMPLETED,
    )
    suite.escrow.submitReports(*report_args(suite, [report]), {"from": relayer})
    return rental_id


def indexed(node, make_index, provider):
    async def scenario():
        async with node() as w3:
            index = make_index(w3)
            await index.sync()
            return index.provider(provider.address).record, index.offers()

    return asyncio.run(scenario())


def test_self_rentals_at_a_tiny_price_buy_no_reputation(
    node, make_index, suite, token, deployer, offer, provider, renter, relayer, agent
):
    cheap = list_offer(suite, provider, "cheap", price=1)
    suite.registry.setAgent(agent, {"from": provider})
    token.mint(agent, 1_000 * USDC, {"from": deployer})
    token.approve(suite.escrow, 2**256 - 1, {"from": agent})
    for self_renter in (provider, agent, provider, agent, provider):
        completed_rental(suite, cheap, 1, self_renter, provider, relayer, covered=3_000, delivered=3_000)
    completed_rental(suite, cheap, 1, renter, provider, relayer, covered=3_000, delivered=3_000)

    record, offers = indexed(node, make_index, provider)

    assert record.seconds_delivered == 6 * 3_000 and record.seconds_missed == 0  # the registry's counters: perfect
    track = record.track_record
    assert (track.rentals_settled, track.distinct_renters) == (1, 1)  # the other renter's rental alone
    assert (track.value_delivered, track.value_missed) == (3_000, 0)
    assert record.reliability == 1.0 and not record.established(TOKEN)
    assert search_offers(offers, OfferQuery(min_reliability=0.5), TOKEN) == []


def test_value_settled_by_other_renters_weighs_missed_seconds_at_their_price(
    node, make_index, suite, token, deployer, offer, provider, renter, renter2, relayer
):
    dear = list_offer(suite, provider, "dear", price=10_000)
    token.mint(renter2, 1_000 * USDC, {"from": deployer})
    token.approve(suite.escrow, 2**256 - 1, {"from": renter2})
    settled = []
    for someone, delivered in ((renter, 1_000), (renter2, 600)):
        rental_id = completed_rental(
            suite, dear, 10_000, someone, provider, relayer, covered=1_000, delivered=delivered
        )
        settled.append(suite.read(lambda r, i=rental_id: r.rental(i)))  # before the next rental replaces it

    record, offers = indexed(node, make_index, provider)

    track = record.track_record
    missed = record.seconds_missed
    assert missed > 0 and (track.rentals_settled, track.distinct_renters) == (2, 2)
    assert track.value_delivered == sum(r.earned for r in settled) == 1_600 * 10_000
    assert track.value_missed == missed * 10_000
    assert record.reliability == 1_600 / (1_600 + missed)
    assert record.established(TOKEN) and track.value_settled >= TOKEN.to_units(NEW_PROVIDER_VALUE)
    passing = search_offers(offers, OfferQuery(min_reliability=record.reliability), TOKEN)
    assert [o.offer_id for o in passing] == sorted([offer, dear])
    assert search_offers(offers, OfferQuery(min_reliability=record.reliability + 0.01), TOKEN) == []
