"""An account's standing on the exchange, for `gpuex rentals`, `gpuex balance` and the web API's
`/api/accounts/<address>`: its rentals as renter and as provider (from the event index) and its balances (read from
the chain at the index's head): what it can withdraw from the escrow, its slash compensation, its stake, and the
earnings `claimPayout` would credit it now on its running rentals.

Figures are written as `offchain.market.units` says.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict
from web3 import AsyncWeb3
from web3.types import BlockIdentifier

from offchain.chain.reads import ChainReader
from offchain.market import units
from offchain.market.figures import RentalRow, rental_rows, stake_figures
from offchain.market.index import EventIndex
from offchain.market.offers import TokenInfo
from offchain.market.rentals import BPS, CLAIMABLE_STATUSES, RentalHistory
from offchain.protocol.status import RentalStatus

Role = Literal["renter", "provider"]


class AccountRental(RentalRow):
    """A rental of the account, with the side it is on."""

    role: Role


class Balances(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    withdrawable: Decimal  # the escrow's balance of the account: earnings, refunds (payment token)
    compensation: Decimal  # slashed stake credited to it as a renter (stake token)
    staked: Decimal  # stake token, as a provider; locked and unbonding included
    locked: Decimal  # collateral of its live rentals
    unbonding: Decimal
    free: Decimal  # staked less locked and unbonding
    unbonding_ends_at: int
    pending_earnings: Decimal  # what `claimPayout` would credit it now on its running rentals, after the fee
    display: dict[str, str]


class AccountSummary(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str
    block: int | None  # the index's head the figures are of
    balances: Balances
    rentals: list[AccountRental]  # the most recently opened first


def claim_payout(earned: int, claimed: int, fee_bps: int) -> int:
    """What `claimPayout` credits the provider: the earnings since the last claim less their fee, each fee rounded
    down as `RentalMath.fee` rounds it."""
    fee = earned * fee_bps // BPS - claimed * fee_bps // BPS
    return earned - claimed - fee


async def account_summary(
    index: EventIndex,
    reader: ChainReader,
    address: str,
    token: TokenInfo,
    stake_token: TokenInfo,
    *,
    role: Role | None = None,
    status: RentalStatus | None = None,
) -> AccountSummary:
    """`address`'s rentals (only those on `role`'s side, only those in `status`, when given) and its balances, read
    at the index's head; `index` must be synced. Raises `ValueError` for a malformed address."""
    if not AsyncWeb3.is_address(address):
        raise ValueError(f"not an address: {address!r}")
    address = AsyncWeb3.to_checksum_address(address)
    block: BlockIdentifier = index.block if index.block is not None else "latest"
    indexed = index.provider(address)
    provided = [r for i in (indexed.rental_ids if indexed else []) if (r := index.rental(i)) is not None]
    rented = [r for r in index.rentals() if r.renter.lower() == address.lower()]
    payable = [r for r in provided if r.status in CLAIMABLE_STATUSES and r.claimable]
    escrow, provider, on_chain = await asyncio.gather(
        reader.balances(address, block),
        reader.provider(address, block),
        asyncio.gather(*(reader.rental(r.rental_id, block) for r in payable)),
    )
    pending = sum(claim_payout(r.earned, r.claimed, r.fee_bps) for r in on_chain)
    stake, stake_shown = stake_figures(provider, stake_token)
    balances = Balances(
        withdrawable=units.amount(token, escrow.escrow),
        compensation=units.amount(stake_token, escrow.compensation),
        **stake,
        unbonding_ends_at=provider.unbonding_ends_at,
        pending_earnings=units.amount(token, pending),
        display={
            "withdrawable": units.money(token, escrow.escrow),
            "compensation": units.money(stake_token, escrow.compensation),
            **stake_shown,
            "pending_earnings": units.money(token, pending),
        },
    )
    sides: list[tuple[Role, list[RentalHistory]]] = [("renter", rented), ("provider", provided)]
    rows = []
    for side, rentals in sides:
        if role is not None and side != role:
            continue
        shown = [rental for rental in rentals if status is None or rental.status is status]
        rows += [AccountRental(**row.model_dump(), role=side) for row in rental_rows(shown, index.offer, token)]
    rows.sort(key=lambda row: (row.opened_at or 0, int(row.rental_id)), reverse=True)
    return AccountSummary(address=address, block=index.block, balances=balances, rentals=rows)
