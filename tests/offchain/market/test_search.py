"""`search_offers`: each filter, the sort orders, and the human-unit conversions they rely on."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from offchain.market.offers import OfferQuery, OfferRecord, ProviderRecord, TokenInfo, pack_text, search_offers
from offchain.market.reputation import NEW_PROVIDER_VALUE, Reputation
from offchain.protocol.status import OfferStatus

USDC = TokenInfo(address="0x" + "11" * 20, symbol="tUSD", decimals=6)


def provider(address: str, delivered: Decimal = Decimal(0), missed: Decimal = Decimal(0)) -> ProviderRecord:
    """A provider whose rentals by others settled `delivered` and `missed` tUSD of value."""
    return ProviderRecord(
        address=address,
        staked=1000,
        locked=0,
        unbonding=0,
        unbonding_ends_at=0,
        rentals_completed=1,
        slashes=0,
        declines=0,
        seconds_delivered=0,
        seconds_missed=0,
        agent="0x" + "00" * 20,
        agent_url=None,
        track_record=Reputation(
            value_delivered=USDC.to_units(delivered),
            value_missed=USDC.to_units(missed),
            rentals_settled=1,
            distinct_renters=1,
        ),
    )


RELIABLE = provider("0x" + "aa" * 20, delivered=Decimal(990), missed=Decimal(10))
SHAKY = provider("0x" + "bb" * 20, delivered=Decimal(800), missed=Decimal(200))
# A perfect record of too little value to count: new.
NEW = provider("0x" + "cc" * 20, delivered=NEW_PROVIDER_VALUE - Decimal("0.000001"))


def offer(
    offer_id: int,
    *,
    model="H100-80GB",
    gpus=1,
    vram_mib=81_559,
    region="eu-west",
    price=1_000,
    status=OfferStatus.ACTIVE,
    live=0,
    reputation=RELIABLE,
    min_duration=60,
    max_duration=86_400,
    egress=False,
):
    return OfferRecord(
        offer_id=offer_id,
        provider=reputation.address,
        status=status,
        gpu_model=model,
        gpu_count=gpus,
        vram_mib=vram_mib,
        region=region,
        price_per_second=price,
        min_duration=min_duration,
        max_duration=max_duration,
        util_floor_bps=10_000,
        egress=egress,
        gpu_uuid_hashes=["0x" + "00" * 32] * gpus,
        live_rental_id=live,
        reputation=reputation,
    )


OFFERS = [
    offer(1, price=2_000, gpus=8),
    offer(2, model="A100-40GB", vram_mib=40_960, region="us-east", price=500, reputation=SHAKY),
    offer(3, model="RTX4090", vram_mib=24_564, price=150, reputation=NEW),
    offer(4, price=900, status=OfferStatus.PAUSED),
    offer(5, price=800, live=(5 << 32) | 1),
    offer(6, model="H100-80GB", price=1_200, gpus=2, region="eu-central", reputation=SHAKY, egress=True),
]


def ids(query: OfferQuery) -> list[int]:
    return [o.offer_id for o in search_offers(OFFERS, query, USDC)]


def test_default_lists_rentable_offers_cheapest_first():
    assert ids(OfferQuery()) == [3, 2, 6, 1]


def test_unavailable_offers_only_on_request():
    assert ids(OfferQuery(include_unavailable=True, sort="offer")) == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize(
    "query, expected",
    [
        (OfferQuery(gpu_model="h100"), [6, 1]),
        (OfferQuery(min_gpus=2), [6, 1]),
        (OfferQuery(min_vram_gib=40), [2, 6, 1]),
        (OfferQuery(min_vram_gib=41), [6, 1]),
        (OfferQuery(max_price_per_hour=Decimal("1.8")), [3, 2]),  # 500 units/s = 1.80 tUSD/h
        (OfferQuery(max_price_per_hour=Decimal("1.79")), [3]),
        (OfferQuery(region="EU"), [3, 6, 1]),
        (OfferQuery(min_reliability=0.95), [1]),
        (OfferQuery(min_reliability=0.8), [2, 6, 1]),
        (OfferQuery(min_reliability=0.95, include_new=True), [3, 1]),  # new: shown, the shaky one still not
        (OfferQuery(include_new=True), [3, 2, 6, 1]),  # without a minimum it changes nothing
        (OfferQuery(min_duration=100_000), []),
        (OfferQuery(gpu_model="h100", region="eu-c"), [6]),
        (OfferQuery(egress=True), [6]),
        (OfferQuery(egress=False), [3, 2, 1]),
    ],
)
def test_each_filter(query, expected):
    assert ids(query) == expected


@pytest.mark.parametrize(
    "sort, expected",
    [
        ("-price", [1, 6, 2, 3]),
        ("price_per_gpu", [3, 1, 2, 6]),
        ("reliability", [1, 2, 6, 3]),
        ("vram", [1, 6, 2, 3]),
        ("gpus", [1, 6, 2, 3]),
    ],
)
def test_sort_orders(sort, expected):
    assert ids(OfferQuery(sort=sort)) == expected


def test_limit():
    assert ids(OfferQuery(limit=2)) == [3, 2]


@pytest.mark.parametrize(
    "bad",
    [
        dict(min_gpus=0),
        dict(min_reliability=1.5),
        dict(min_reliability=0.9, include_new="sometimes"),
        dict(sort="cheapest"),
        dict(max_price_per_hour=-1),
        dict(colour="red"),
    ],
)
def test_bad_queries_are_refused(bad):
    with pytest.raises(ValidationError):
        OfferQuery(**bad)


def test_reliability_is_unknown_before_any_value_settled_and_new_below_the_minimum():
    assert provider("0x" + "dd" * 20).reliability is None
    assert SHAKY.reliability == pytest.approx(0.8) and SHAKY.established(USDC)
    assert NEW.reliability == 1.0 and not NEW.established(USDC)
    assert provider("0x" + "dd" * 20, missed=NEW_PROVIDER_VALUE).established(USDC)


def test_token_units_round_trip_and_refuse_dust():
    assert USDC.to_units("7.2") == 7_200_000
    assert USDC.to_human(7_200_000) == Decimal("7.2")
    assert USDC.format(1_234_567_891) == "1,234.567891 tUSD"
    with pytest.raises(ValueError, match="finer than 6 decimals"):
        USDC.to_units("0.0000001")


def test_pack_text_pads_and_refuses_overflow():
    assert pack_text("eu-west", 16) == b"eu-west" + b"\0" * 9
    with pytest.raises(ValueError, match="longer than 16 bytes"):
        pack_text("a-region-name-that-is-long", 16)
