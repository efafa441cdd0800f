"""Fixtures of the oracle tests, on top of tests/offchain/conftest.py: a running rental of `offer` and oracle
settings per test (each with its own SQLite file). Every test starts from the same chain state."""

from __future__ import annotations

import pytest
from brownie import chain
from eth_utils import keccak
from pydantic import SecretStr

from offchain.config import OracleSettings
from tests.offchain.conftest import ORACLE_KEYS
from tests.offchain.oracle.helpers import RENTAL_SECONDS, Rental


@pytest.fixture(autouse=True)
def isolation(fn_isolation):
    pass


@pytest.fixture
def open_rental(suite, offer, renter):
    """A rental of `offer` that the provider has not started."""
    rental_id = suite.escrow.openRental(offer, RENTAL_SECONDS, 10**9, keccak(text="job"), {"from": renter}).return_value
    return Rental(rental_id, suite.read(lambda r: r.rental(rental_id)).since)


@pytest.fixture
def rental(suite, open_rental, provider):
    """A running rental of `offer`, started by its provider; `since` is its start time."""
    suite.escrow.start(open_rental.rental_id, {"from": provider})
    return Rental(open_rental.rental_id, suite.read(lambda r: r.rental(open_rental.rental_id)).since)


@pytest.fixture
def make_settings(chain_settings, tmp_path):
    """OracleSettings for oracle `index` of the set (keys from the offchain conftest), each with its own state."""

    def make(index: int = 0, key: bytes | None = None, **overrides) -> OracleSettings:
        values = dict(
            chain=chain_settings,
            key=SecretStr("0x" + (key or ORACLE_KEYS[index]).hex()),
            state_dir=tmp_path / f"oracle{index}",
            max_clock_skew_seconds=30,
        )
        values.update(overrides)
        return OracleSettings(**values)

    return make


@pytest.fixture
def settings(make_settings):
    return make_settings(0)


@pytest.fixture
def clock():
    """The oracle's clock in tests: the chain's time, which `chain.sleep` moves ahead of the wall clock."""
    return chain.time
