"""The web API's JSON bodies: what the index holds, in human units.

Amounts are decimal strings of the token (`"3.600000"` for 3.6 USDC), prices are per hour, VRAM is in GiB,
utilisation in percent, times are Unix seconds; rental ids are strings (they exceed what a JavaScript number holds
exactly). Stake and slashes are in the stake token, everything a renter pays or is refunded in the payment token.
"""

from __future__ import annotations

from decimal import Decimal
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
from offchain.market.index import HistoryEntry, IndexedProvider
from offchain.market.offers import SECONDS_PER_HOUR, OfferQuery, OfferRecord, ProviderRecord, TokenInfo, unpack_text
from offchain.market.rentals import RentalHistory, ReportPeriod

BPS_PER_PERCENT = 100


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


class OfferView(_View):
    offer_id: int
    provider: str
    status: str  # active, paused, closed
    available: bool  # active and not rented
    rental_id: str | None  # the live rental
    gpu_model: str
    gpu_count: int
    vram_gib: float  # per GPU
    region: str
    price_per_hour: Decimal  # whole offer
    price_per_gpu_hour: Decimal
    min_duration: int
    max_duration: int
    util_floor_pct: float
    egress: bool  # jobs may open outbound network connections when their spec asks
    reliability: float | None  # value-weighted share delivered to other renters; None for a new provider
    value_settled: Decimal  # by other renters: delivered and missed, at their rentals' prices
    distinct_renters: int  # accounts other than the provider and its agent keys
    rentals_completed: int
    slashes: int
    declines: int

    @classmethod
    def of(cls, offer: OfferRecord, token: TokenInfo) -> OfferView:
        per_hour = token.to_human(offer.price_per_hour)
        provider = offer.reputation
        return cls(
            offer_id=offer.offer_id,
            provider=offer.provider,
            status=offer.status.name.lower(),
            available=offer.rentable,
            rental_id=str(offer.live_rental_id) if offer.live_rental_id else None,
            gpu_model=offer.gpu_model,
            gpu_count=offer.gpu_count,
            vram_gib=round(offer.vram_gib, 2),
            region=offer.region,
            price_per_hour=per_hour,
            price_per_gpu_hour=(per_hour / offer.gpu_count).quantize(Decimal(1).scaleb(-token.decimals)),
            min_duration=offer.min_duration,
            max_duration=offer.max_duration,
            util_floor_pct=offer.util_floor_bps / BPS_PER_PERCENT,
            egress=offer.egress,
            reliability=offer.reliability if provider.established(token) else None,
            value_settled=token.to_human(provider.track_record.value_settled),
            distinct_renters=provider.track_record.distinct_renters,
            rentals_completed=offer.reputation.rentals_completed,
            slashes=offer.reputation.slashes,
            declines=offer.reputation.declines,
        )


class OffersPage(_View):
    block: int | None
    token: TokenInfo
    query: OfferQuery
    offers: list[OfferView]


class ReportView(_View):
    """An applied report: what it added over its period, and the rental's totals it brought."""

    seq: int
    period_start: int
    covered_until: int
    delivered_seconds: int  # in the period
    util_pct: float | None  # over the period's delivered seconds; None when it delivered none
    earned: Decimal  # in the period, gross
    total_delivered_seconds: int

    @classmethod
    def of(cls, period: ReportPeriod, token: TokenInfo) -> ReportView:
        util = period.util_bps
        return cls(
            seq=period.seq,
            period_start=period.start,
            covered_until=period.covered_until,
            delivered_seconds=period.delivered_seconds,
            util_pct=None if util is None else util / BPS_PER_PERCENT,
            earned=token.to_human(period.earned),
            total_delivered_seconds=period.report.delivered_seconds,
        )


class SkippedView(_View):
    seq: int
    reason: str  # seq_not_increasing, totals_decreased, ...


class SettlementView(_View):
    status: str
    settled_at: int
    provider_payout: Decimal
    fee: Decimal
    refund: Decimal
    missed_seconds: int
    slashed: Decimal  # stake token
    slash_reason: str  # none, start_timeout, sla_breach


class RentalSummary(_View):
    """A row of a rentals table."""

    rental_id: str
    offer_id: int
    provider: str
    renter: str
    status: str
    live: bool  # open, running or terminated: it still holds its offer
    gpu_model: str
    gpu_count: int
    price_per_hour: Decimal
    opened_at: int
    since: int  # opening time while open, start time once started
    ends_at: int
    covered_until: int | None  # up to when the applied reports cover the rental
    delivered_seconds: int
    util_pct: float | None  # over every delivered second
    paid: Decimal  # earnings of the applied reports: what the renter pays, fee included
    claimed: Decimal  # of `paid`, what the provider claimed while the rental ran (gross)


class RentalsPage(_View):
    block: int | None
    rentals: list[RentalSummary]


class RentalDetail(RentalSummary):
    deposit: Decimal
    refunded: Decimal
    booked_duration: int
    duration: int
    started_at: int | None
    started_by_report: bool
    terminated_at: int | None
    decline_reason: str | None  # spec_missing, spec_invalid, ... when the provider declined it
    decline_detail: str | None  # what the reason means, for people
    job_spec_hash: str
    settlement: SettlementView | None
    claimable: Decimal  # gross earnings a claim would credit the provider now
    provider_paid: Decimal  # credited to the provider so far, after the fee
    reports: list[ReportView]
    skipped: list[SkippedView]


#: The provider's figures the page shows as the registry keeps them (amounts are converted to human units).
_PROVIDER_AS_READ = set(ProviderRecord.model_fields) - {"address", "staked", "locked", "unbonding", "track_record"}


def rental_summary(rental: RentalHistory, offer: OfferRecord, token: TokenInfo) -> RentalSummary:
    return RentalSummary(**_summary_fields(rental, offer, token))


def rental_detail(rental: RentalHistory, offer: OfferRecord, token: TokenInfo, stake_token: TokenInfo) -> RentalDetail:
    settlement, declined = rental.settlement, rental.decline_reason
    return RentalDetail(
        **_summary_fields(rental, offer, token),
        deposit=token.to_human(rental.deposit),
        refunded=token.to_human(rental.refunded),
        booked_duration=rental.booked_duration,
        duration=rental.duration,
        started_at=rental.started_at,
        started_by_report=rental.started_by_report,
        terminated_at=rental.terminated_at,
        decline_reason=None if declined is None else declined.name.lower(),
        decline_detail=None if declined is None else declined.describe(),
        job_spec_hash=rental.job_spec_hash,
        settlement=None
        if settlement is None
        else SettlementView(
            status=settlement.status.name.lower(),
            settled_at=rental.settled_at,
            provider_payout=token.to_human(settlement.provider_payout),
            fee=token.to_human(settlement.fee),
            refund=token.to_human(settlement.refund),
            missed_seconds=settlement.missed_seconds,
            slashed=stake_token.to_human(settlement.slashed),
            slash_reason=settlement.slash_reason.name.lower(),
        ),
        claimable=token.to_human(rental.claimable),
        provider_paid=token.to_human(rental.provider_paid),
        reports=[ReportView.of(period, token) for period in rental.periods],
        skipped=[SkippedView(seq=r.seq, reason=r.reason.name.lower()) for r in rental.skipped],
    )


def _summary_fields(rental: RentalHistory, offer: OfferRecord, token: TokenInfo) -> dict:
    return dict(
        rental_id=str(rental.rental_id),
        offer_id=rental.offer_id,
        provider=offer.provider,
        renter=rental.renter,
        status=rental.status.name.lower(),
        live=rental.status.is_live,
        gpu_model=offer.gpu_model,
        gpu_count=offer.gpu_count,
        price_per_hour=token.to_human(rental.price_per_second * SECONDS_PER_HOUR),
        opened_at=rental.opened_at,
        since=rental.since,
        ends_at=rental.ends_at,
        covered_until=rental.covered_until,
        delivered_seconds=rental.delivered_seconds,
        util_pct=None if rental.avg_util_bps is None else rental.avg_util_bps / BPS_PER_PERCENT,
        paid=token.to_human(rental.earned),
        claimed=token.to_human(rental.claimed),
    )


class HistoryView(_View):
    block: int
    timestamp: int
    tx_hash: str
    event: str
    offer_id: int | None
    rental_id: str | None
    summary: str


class ProviderView(_View):
    address: str
    staked: Decimal
    locked: Decimal
    unbonding: Decimal
    free: Decimal
    unbonding_ends_at: int
    agent: str
    agent_url: str | None  # as the provider published it: the chain does not vouch for it
    rentals_completed: int
    slashes: int
    declines: int
    seconds_delivered: int
    seconds_missed: int
    reliability: float | None  # value-weighted share delivered to other renters; None for a new provider
    value_settled: Decimal  # with other renters: delivered and missed, at their rentals' prices
    value_missed: Decimal
    distinct_renters: int
    claimable: Decimal  # earnings of its live rentals that a claim would credit now (gross)
    offers: list[OfferView]
    rentals: list[RentalSummary]
    history: list[HistoryView]  # the newest first


def provider_view(
    provider: IndexedProvider,
    offers: list[OfferView],
    rentals: list[RentalHistory],
    summaries: list[RentalSummary],
    token: TokenInfo,
    stake_token: TokenInfo,
) -> ProviderView:
    """`provider` must have its record read (the index is ready); `summaries` are of its `rentals`."""
    record = provider.record
    assert record is not None
    track = record.track_record
    return ProviderView(
        address=provider.address,
        staked=stake_token.to_human(record.staked),
        locked=stake_token.to_human(record.locked),
        unbonding=stake_token.to_human(record.unbonding),
        free=stake_token.to_human(record.free),
        **record.model_dump(include=_PROVIDER_AS_READ),
        reliability=record.reliability if record.established(token) else None,
        value_settled=token.to_human(track.value_settled),
        value_missed=token.to_human(track.value_missed),
        distinct_renters=track.distinct_renters,
        claimable=token.to_human(sum(rental.claimable for rental in rentals)),
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
            return f"staked {stake_token.format(amount)}"
        case UnstakeRequested(amount=amount, unbonding=unbonding):
            return f"asked to unstake {stake_token.format(amount)} ({stake_token.format(unbonding)} unbonding in all)"
        case UnstakeWithdrawn(amount=amount):
            return f"withdrew {stake_token.format(amount)} of unbonded stake"
        case AgentSet(agent=agent):
            return f"set its agent key to {agent}"
        case AgentUrlSet(url=url):
            return f"published its agent URL {url}" if url else "cleared its agent URL"
        case OfferCreated(terms=terms):
            return (
                f"listed {offer}: {len(terms.gpu_uuid_hashes)} x {unpack_text(terms.gpu_model)} at "
                f"{_per_hour(token, terms.price_per_second)}" + (", egress allowed" if terms.egress else "")
            )
        case OfferPriceUpdated(price_per_second=price):
            return f"set the price of {offer} to {_per_hour(token, price)}"
        case OfferPaused() | OfferResumed() | OfferClosed():
            return f"{entry.event.removeprefix('Offer').lower()} {offer}"
        case Slashed(amount=amount, renter=renter, reason=reason):
            return f"slashed {stake_token.format(amount)} to {renter} on {offer} ({_reason(reason)})"
        case RentalOpened(renter=renter, duration=duration, deposit=deposit):
            return f"{renter} rented {offer} for {duration_text(duration)}, deposit {token.format(deposit)}"
        case RentalStarted(by_report=by_report):
            return "rental started by its first report" if by_report else "rental started"
        case RentalTerminated(refund=refund):
            return f"the renter terminated the rental; {token.format(refund)} refunded"
        case EarningsClaimed(provider_payout=payout, fee=fee):
            return f"claimed {token.format(payout)} of the rental's earnings, fee {token.format(fee)}"
        case RentalDeclined(reason=reason):
            return f"declined the rental: {reason.describe()}"
        case RentalFinalized() as settled:
            text = (
                f"rental settled {_reason(settled.status)}: {token.format(settled.provider_payout)} to the "
                f"provider in all, {token.format(settled.refund)} refunded"
            )
            if settled.slashed:
                text += f", {stake_token.format(settled.slashed)} slashed ({_reason(settled.slash_reason)})"
            return text
    return entry.event


def duration_text(seconds: int) -> str:
    """`5400` -> `1h 30m`; `45` -> `45s`."""
    parts = [
        (seconds // 86_400, "d"),
        (seconds % 86_400 // 3_600, "h"),
        (seconds % 3_600 // 60, "m"),
        (seconds % 60, "s"),
    ]
    return " ".join(f"{n}{unit}" for n, unit in parts if n) or "0s"


def _reason(value: IntEnum) -> str:
    """A status or reason in words: `SLA_BREACH` -> `sla breach`."""
    return value.name.lower().replace("_", " ")


def _per_hour(token: TokenInfo, price_per_second: int) -> str:
    return f"{token.format(price_per_second * SECONDS_PER_HOUR)}/h"
