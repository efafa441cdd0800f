"""offchain.protocol.status mirrors the enums of contracts/types/DataTypes.sol, value for value."""

from __future__ import annotations

import re

import pytest

from offchain.chain.contracts import PROJECT_ROOT
from offchain.protocol.status import DeclineReason, RentalStatus, SkipReason, SlashReason

DATA_TYPES = PROJECT_ROOT / "contracts" / "types" / "DataTypes.sol"


def solidity_enum(name: str) -> list[str]:
    """The members of `enum name` in DataTypes.sol, in order, as UPPER_SNAKE names (TimedOut -> TIMED_OUT)."""
    source = re.sub(r"//[^\n]*", "", DATA_TYPES.read_text())
    body = re.search(rf"enum {name} \{{([^}}]*)\}}", source).group(1)
    return [re.sub(r"(?<!^)(?=[A-Z])", "_", member.strip()).upper() for member in body.split(",")]


@pytest.mark.parametrize("enum", [RentalStatus, SkipReason, SlashReason, DeclineReason], ids=lambda e: e.__name__)
def test_enum_mirrors_the_contracts(enum):
    assert [member.name for member in enum] == solidity_enum(enum.__name__)
    assert [member.value for member in enum] == list(range(len(enum)))


def test_declined_is_final_and_holds_no_offer():
    assert RentalStatus.DECLINED.is_final and not RentalStatus.DECLINED.is_live


def test_every_decline_reason_is_described():
    descriptions = [reason.describe() for reason in DeclineReason]
    assert all(descriptions) and len(set(descriptions)) == len(DeclineReason)
    assert DeclineReason.EXCEEDS_OFFER.describe() == "the job asks for more memory, CPUs or network than the offer has"
