"""EIP-1559 fees: what a first send pays, what a replacement pays, and what the node suggests."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from web3 import AsyncWeb3
from web3.exceptions import Web3RPCError

#: The tip when the node has no `eth_maxPriorityFeePerGas`, in wei.
DEFAULT_TIP = 10**9
#: The highest max fee per gas a transaction is signed with unless its sender says otherwise, in wei.
DEFAULT_MAX_FEE_CAP = 500 * 10**9


@dataclass(frozen=True)
class Fees:
    """EIP-1559 fee caps of one attempt, in wei."""

    max_fee: int
    tip: int


def initial_fees(base_fee: int, suggested_tip: int, max_fee_cap: int) -> Fees:
    """Fees for a first send: room for the base fee to double, plus the node's suggested tip, capped."""
    max_fee = min(2 * base_fee + suggested_tip, max_fee_cap)
    return Fees(max_fee=max_fee, tip=min(suggested_tip, max_fee))


def bumped_fees(
    previous: Fees, base_fee: int, suggested_tip: int, bump_percent: float, max_fee_cap: int
) -> Fees | None:
    """Fees for a replacement: both caps raised by at least `bump_percent` (nodes refuse smaller replacements)
    and to at least what a first send would pay now. None when the cap leaves no room to raise both."""
    factor = 1 + Fraction(str(bump_percent)) / 100

    def raised(value: int) -> int:
        return max(math.ceil(value * factor), value + 1)

    tip = max(raised(previous.tip), suggested_tip)
    max_fee = min(max(raised(previous.max_fee), 2 * base_fee + tip), max_fee_cap)
    tip = min(tip, max_fee)
    if max_fee <= previous.max_fee or tip <= previous.tip:
        return None
    return Fees(max_fee=max_fee, tip=tip)


async def base_fee(w3: AsyncWeb3[Any]) -> int:
    """The latest block's base fee (0 on chains without EIP-1559)."""
    block = await w3.eth.get_block("latest")
    return int(block.get("baseFeePerGas", 0))


async def suggested_tip(w3: AsyncWeb3[Any], default: int = DEFAULT_TIP) -> int:
    """The node's suggested priority fee, or `default` from nodes without `eth_maxPriorityFeePerGas`."""
    try:
        return int(await w3.eth.max_priority_fee)
    except Web3RPCError:
        return default
