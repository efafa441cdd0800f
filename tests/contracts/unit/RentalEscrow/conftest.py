"""Fixtures of the RentalEscrow unit tests: a listed offer, a rental of it and that rental started."""

import pytest

from tests.contracts.unit.RentalEscrow.escrow_helpers import DURATION


@pytest.fixture
def offer(list_offer, provider):
    return list_offer(provider)


@pytest.fixture
def rid(open_rental, renter, offer):
    return open_rental(renter, offer, duration=DURATION)


@pytest.fixture
def started(escrow, rid, provider):
    """Starts `rid` and returns its start time."""
    return escrow.start(rid, {"from": provider}).timestamp
