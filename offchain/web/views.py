"""The web API's JSON bodies: what the index holds, in human units.

Offers and rentals are `offchain.market.figures`' records, the same as `gpuex ... --json` prints; every figure is
written as `offchain.market.units` says (amounts as decimal strings of the token, shares as fractions, durations in
seconds, times in Unix seconds, rental ids as strings), and each record's `display` holds the strings the page shows.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from offchain.chain.events import (
    AgentSet,
    AgentUrlSet,
    EarningsClaimed,
    OfferClosed,
    OfferCreated,
    OfferPaused,
    OfferPriceUpdated,
    OfferResumed,
    RentalDeclined,
    RentalFinalized,
    RentalOpened,
    RentalStarted,
    RentalTerminated,
    Slashed,
    Staked,
    UnstakeRequested,
    UnstakeWithdrawn,
)
from offchain.market import units
from offchain.market.figures import OfferFigures, ProviderFigures, RentalRow
from offchain.market.index import HistoryEntry, IndexedProvider
from offchain.market.offers import OfferQuery, TokenInfo, unpack_text
from offchain.market.rentals import RentalHistory


class _View(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WebError(_View):
    """Every refusal: a reason code and a sentence for people."""

    error: str
    detail: str


class IndexStatus(_View):
    """How far the index is; sent on every change over the event stream."""

    ready: bool
    block: int | None
    version: int


class MarketInfo(_View):
    chain_id: int
    registry: str
    escrow: str
    payment_token: TokenInfo
    stake_token: TokenInfo
    index: IndexStatus


class DeployedContract(_View):
    address: str
    abi: list[dict[str, Any]]  # from Brownie's build artifact


class ContractsInfo(_View):
    """What the page needs to call the deployment through a browser wallet."""

    chain_id: int
    registry: DeployedContract
    escrow: DeployedContract
    payment_token: DeployedContract
    stake_token: DeployedContract


class OffersPage(_View):
    block: int | None
    token: TokenInfo
    query: OfferQuery
    offers: list[OfferFigures]


class RentalsPage(_View):
    block: int | None
    rentals: list[RentalRow]


class HistoryView(_View):
    block: int
    timestamp: int
    tx_hash: str
    event: str
    offer_id: int | None
    rental_id: str | None
    summary: str


class ProviderView(ProviderFigures):
    """The provider page: its figures, its offers, its rentals and its history."""

    offers: list[OfferFigures]
    rentals: list[RentalRow]
    history: list[HistoryView]  # the newest first


def provider_view(
    provider: IndexedProvider,
    offers: list[OfferFigures],
    rentals: list[RentalHistory],
    summaries: list[RentalRow],
    token: TokenInfo,
    stake_token: TokenInfo,
) -> ProviderView:
    """`provider` must have its record read (the index is ready); `summaries` are of its `rentals`."""
    record = provider.record
    assert record is not None
    claimable = sum(rental.claimable for rental in rentals)
    return ProviderView(
        **ProviderFigures.of(record, token, stake_token, claimable).model_dump(),
        offers=offers,
        rentals=summaries,
        history=[
            HistoryView(
                block=h.record.block_number,
                timestamp=h.timestamp,
                tx_hash=h.record.tx_hash,
                event=h.event,
                offer_id=h.offer_id,
                rental_id=None if h.rental_id is None else str(h.rental_id),
                summary=history_summary(h, token, stake_token),
            )
            for h in reversed(provider.history)
        ],
    )


def history_summary(entry: HistoryEntry, token: TokenInfo, stake_token: TokenInfo) -> str:
    """One sentence for a provider's history table."""
    offer = f"offer #{entry.offer_id}"
    match entry.record:
        case Staked(amount=amount):
            return f"staked {units.money(stake_token, amount)}"
        case UnstakeRequested(amount=amount, unbonding=unbonding):
            return (
                f"asked to unstake {units.money(stake_token, amount)} "
                f"({units.money(stake_token, unbonding)} unbonding in all)"
            )
        case UnstakeWithdrawn(amount=amount):
            return f"withdrew {units.money(stake_token, amount)} of unbonded stake"
        case AgentSet(agent=agent):
            return f"set its agent key to {agent}"
        case AgentUrlSet(url=url):
            return f"published its agent URL {url}" if url else "cleared its agent URL"
        case OfferCreated(terms=terms):
            return (
                f"listed {offer}: {len(terms.gpu_uuid_hashes)} x {unpack_text(terms.gpu_model)} at "
                f"{units.per_hour(token, terms.price_per_second)}" + (", egress allowed" if terms.egress else "")
            )
        case OfferPriceUpdated(price_per_second=price):
            return f"set the price of {offer} to {units.per_hour(token, price)}"
        case OfferPaused() | OfferResumed() | OfferClosed():
            return f"{entry.event.removeprefix('Offer').lower()} {offer}"
        case Slashed(amount=amount, renter=renter, reason=reason):
            return f"slashed {units.money(stake_token, amount)} to {renter} on {offer} ({_reason(reason)})"
        case RentalOpened(renter=renter, duration=duration, deposit=deposit):
            return f"{renter} rented {offer} for {units.duration(duration)}, deposit {units.money(token, deposit)}"
        case RentalStarted(by_report=by_report):
            return "rental started by its first report" if by_report else "rental started"
        case RentalTerminated(refund=refund):
            return f"the renter terminated the rental; {units.money(token, refund)} refunded"
        case EarningsClaimed(provider_payout=payout, fee=fee):
            return f"claimed {units.money(token, payout)} of the rental's earnings, fee {units.money(token, fee)}"
        case RentalDeclined(reason=reason):
            return f"declined the rental: {reason.describe()}"
        case RentalFinalized() as settled:
            text = (
                f"rental settled {_reason(settled.status)}: {units.money(token, settled.provider_payout)} to the "
                f"provider in all, {units.money(token, settled.refund)} refunded"
            )
            if settled.slashed:
                text += f", {units.money(stake_token, settled.slashed)} slashed ({_reason(settled.slash_reason)})"
            return text
    return entry.event


def _reason(value: IntEnum) -> str:
    """A status or reason in words: `SLA_BREACH` -> `sla breach`."""
    return units.label(value.name.lower())
