"""The one set of numbers: each figure written once, for JSON and for people."""

from __future__ import annotations

from decimal import Decimal

import pytest

from offchain.market import units
from offchain.market.offers import TokenInfo

USDC = TokenInfo(address="0x" + "00" * 20, symbol="tUSD", decimals=6)


@pytest.mark.parametrize(
    "mib, gib, shown",
    [(81_559, 79.6, "79.6 GiB"), (81_560, 79.6, "79.6 GiB"), (81_612, 79.7, "79.7 GiB"), (23_040, 22.5, "22.5 GiB")],
)
def test_vram_is_rounded_once_half_up_to_a_tenth(mib, gib, shown):
    assert (units.vram_gib(mib), units.gib(mib)) == (gib, shown)


def test_amounts_are_exact_decimal_strings_in_json_and_short_for_people():
    assert units.amount(USDC, 7_200_000) == Decimal("7.200000")
    assert str(units.amount(USDC, 7_200_000)) == "7.200000"
    assert units.money(USDC, 7_200_000) == "7.20 tUSD"
    assert units.money(USDC, 7_210_800) == "7.2108 tUSD"
    assert units.money(USDC, 1_000_000_000) == "1,000.00 tUSD"
    assert units.per_hour(USDC, 2_000) == "7.20 tUSD/h"
    assert units.hourly(USDC, 2_000, 3) == Decimal("2.400000")
    assert units.hourly(USDC, 1, 7) == Decimal("0.000514")  # 3600 / 7 units, rounded down


def test_shares_are_fractions_in_json_and_percentages_for_people():
    assert units.fraction_bps(8_125) == 0.8125 and units.fraction_bps(None) is None
    assert units.share(2 / 3) == 0.6667
    assert units.percent(0.8125) == "81.3%" and units.percent(1.0) == "100.0%" and units.percent(0) == "0.0%"
    assert units.percent(None) is None


@pytest.mark.parametrize(
    "seconds, shown", [(0, "0s"), (45, "45s"), (7_500, "2h 5m"), (86_400, "1d"), (90_061, "1d 1h 1m 1s")]
)
def test_durations_are_seconds_in_json_and_units_for_people(seconds, shown):
    assert units.duration(seconds) == shown
