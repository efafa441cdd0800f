"""Fee arithmetic of first sends and replacements."""

from __future__ import annotations

from offchain.chain.tx.fees import Fees, bumped_fees, initial_fees

GWEI = 10**9


def test_initial_fees_leave_room_for_the_base_fee_to_double():
    assert initial_fees(base_fee=10 * GWEI, suggested_tip=2 * GWEI, max_fee_cap=500 * GWEI) == Fees(22 * GWEI, 2 * GWEI)


def test_initial_fees_are_capped():
    fees = initial_fees(base_fee=300 * GWEI, suggested_tip=2 * GWEI, max_fee_cap=100 * GWEI)
    assert fees == Fees(100 * GWEI, 2 * GWEI)


def test_bump_raises_tip_and_max_fee_by_the_bump_percentage():
    assert bumped_fees(Fees(40 * GWEI, 2 * GWEI), 0, GWEI, 12.5, 500 * GWEI) == Fees(45 * GWEI, 2_250_000_000)


def test_bump_follows_a_risen_base_fee():
    bumped = bumped_fees(
        Fees(3 * GWEI, GWEI), base_fee=50 * GWEI, suggested_tip=GWEI, bump_percent=12.5, max_fee_cap=500 * GWEI
    )
    assert bumped == Fees(2 * 50 * GWEI + 1_125_000_000, 1_125_000_000)


def test_bump_raises_zero_fees_by_at_least_one_wei():
    assert bumped_fees(Fees(0, 0), 0, 0, 12.5, GWEI) == Fees(1, 1)


def test_bump_stops_at_the_cap():
    assert bumped_fees(Fees(90 * GWEI, GWEI), 0, GWEI, 12.5, 100 * GWEI) == Fees(100 * GWEI, 1_125_000_000)
    assert bumped_fees(Fees(100 * GWEI, GWEI), 0, GWEI, 12.5, 100 * GWEI) is None
