"""The records of an offer, a provider, a rental and a rental's reports as `gpuex ... --json` and the web API both
send them:
one builder each, so that the same key carries the same value in both. Every figure is written as
`offchain.market.units` says; each record's `display` holds the strings for people that the CLI's tables and the
web page show (the page shows them as they are).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict

from offchain.chain.reads import Provider
from offchain.market import units
from offchain.market.agentprobe import AgentProbe
from offchain.market.offers import OfferRecord, ProviderRecord, TokenInfo
from offchain.market.rentals import RentalHistory, ReportPeriod
from offchain.protocol.agenturl import AgentUrlInvalid, check_agent_url
from offchain.protocol.status import OfferStatus

#: What `display` shows for a figure that has no value yet.
NONE_SHOWN = "—"


class Figures(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _shown(text: str | None) -> str:
    return NONE_SHOWN if text is None else text


def decline_rate(declines: int, rentals_completed: int) -> float | None:
    """Of the rentals that ended with a decline or after a start, the share the provider declined; None before
    any."""
    ended = declines + rentals_completed
    return units.share(declines / ended) if ended else None


def reputation_figures(provider: ProviderRecord, token: TokenInfo) -> tuple[dict[str, Any], dict[str, str]]:
    """The provider's reputation that offers and the provider's own record both carry (`token` is the payment
    token), and the `display` strings of its reliability, value settled and decline rate."""
    track = provider.track_record
    reliability = units.share(provider.reliability) if provider.established(token) else None
    rate = decline_rate(provider.declines, provider.rentals_completed)
    figures = {
        "reliability": reliability,
        "value_settled": units.amount(token, track.value_settled),
        "distinct_renters": track.distinct_renters,
        "rentals_completed": provider.rentals_completed,
        "slashes": provider.slashes,
        "declines": provider.declines,
        "decline_rate": rate,
    }
    shown = {
        "reliability": "new" if reliability is None else _shown(units.percent(reliability)),
        "value_settled": units.money(token, track.value_settled),
        "decline_rate": _shown(units.percent(rate)),
    }
    return figures, shown


def published_agent_url(offer: OfferRecord) -> str | None:
    """The agent URL of the offer's provider when it has an agent key and published a usable URL; else None."""
    provider = offer.reputation
    if not int(provider.agent, 16) or provider.agent_url is None:
        return None
    try:
        return check_agent_url(provider.agent_url)
    except AgentUrlInvalid:
        return None


class OfferFigures(Figures):
    """An offer as both front ends list it."""

    offer_id: int
    provider: str
    status: str  # active, paused, closed
    available: bool  # active and not rented
    rental_id: str | None  # the live rental
    gpu_model: str
    gpu_count: int
    vram_mib: int  # per GPU
    vram_gib: float
    region: str
    price_per_hour: Decimal  # whole offer
    price_per_gpu_hour: Decimal
    min_duration: int
    max_duration: int
    util_floor: float
    egress: bool  # jobs may open outbound network connections when their spec asks
    reliability: float | None  # value-weighted share delivered to other renters; None for a new provider
    value_settled: Decimal  # by other renters: delivered and missed, at their rentals' prices
    distinct_renters: int  # accounts other than the provider and its agent keys
    rentals_completed: int
    slashes: int
    declines: int
    decline_rate: float | None
    agent_set: bool  # the provider has an agent key and a usable agent URL on chain
    agent_online: bool | None  # its agent answered `GET /v1/agent` lately; None when none is set or not probed
    display: dict[str, str]

    @classmethod
    def of(cls, offer: OfferRecord, token: TokenInfo, agent_online: bool | None = None) -> OfferFigures:
        """`agent_online` is what a probe of the provider's agent found (None: not probed; ignored when no agent is
        set)."""
        reputation, reputation_shown = reputation_figures(offer.reputation, token)
        agent_set = published_agent_url(offer) is not None
        online = agent_online if agent_set else None
        if not agent_set:
            agent = "not set"
        else:
            agent = "set" if online is None else "online" if online else "offline"
        if offer.rentable:
            availability = "available"
        elif offer.live_rental_id and offer.status is OfferStatus.ACTIVE:
            availability = f"rented ({offer.live_rental_id})"
        else:
            availability = offer.status.name.lower()
        return cls(
            offer_id=offer.offer_id,
            provider=offer.provider,
            status=offer.status.name.lower(),
            available=offer.rentable,
            rental_id=str(offer.live_rental_id) if offer.live_rental_id else None,
            gpu_model=offer.gpu_model,
            gpu_count=offer.gpu_count,
            vram_mib=offer.vram_mib,
            vram_gib=units.vram_gib(offer.vram_mib),
            region=offer.region,
            price_per_hour=units.hourly(token, offer.price_per_second),
            price_per_gpu_hour=units.hourly(token, offer.price_per_second, offer.gpu_count),
            min_duration=offer.min_duration,
            max_duration=offer.max_duration,
            util_floor=units.fraction_bps(offer.util_floor_bps),
            egress=offer.egress,
            **reputation,
            agent_set=agent_set,
            agent_online=online,
            display={
                "gpus": f"{offer.gpu_count}x {offer.gpu_model}",
                "vram_gib": units.gib(offer.vram_mib),
                "price_per_hour": units.per_hour(token, offer.price_per_second),
                "price_per_gpu_hour": units.per_hour(token, offer.price_per_second, offer.gpu_count),
                "durations": f"{units.duration(offer.min_duration)} – {units.duration(offer.max_duration)}",
                "util_floor": _shown(units.percent(units.fraction_bps(offer.util_floor_bps))),
                "egress": "yes" if offer.egress else "no",
                **reputation_shown,
                "agent": agent,
                "availability": availability,
            },
        )


def stake_figures(provider: Provider, stake_token: TokenInfo) -> tuple[dict[str, Decimal], dict[str, str]]:
    """A provider's stake (staked, locked, unbonding and free) as amounts of the stake token, and as the `display`
    strings of each."""
    stake = {
        "staked": provider.staked,
        "locked": provider.locked,
        "unbonding": provider.unbonding,
        "free": provider.staked - provider.locked - provider.unbonding,
    }
    amounts = {name: units.amount(stake_token, value) for name, value in stake.items()}
    return amounts, {name: units.money(stake_token, value) for name, value in stake.items()}


class ProviderFigures(Figures):
    """A provider's stake, counters and reputation as both front ends show them."""

    address: str
    staked: Decimal  # in the stake token, as are locked, unbonding and free
    locked: Decimal  # collateral of its live rentals
    unbonding: Decimal
    unbonding_ends_at: int  # Unix seconds; 0 when nothing unbonds
    free: Decimal
    agent: str  # the zero address when none is set
    agent_url: str | None  # as the provider published it: the chain does not vouch for it
    rentals_completed: int
    slashes: int
    declines: int
    decline_rate: float | None
    seconds_delivered: int
    seconds_missed: int
    established: bool  # enough value settled by other renters for its reliability to count
    reliability: float | None  # value-weighted share delivered to other renters; None for a new provider
    value_settled: Decimal  # in the payment token, as are value_missed and claimable
    value_missed: Decimal
    distinct_renters: int  # accounts other than the provider and its agent keys
    claimable: Decimal  # earnings of its live rentals that a claim would credit now (gross)
    display: dict[str, str]

    @classmethod
    def of(cls, provider: ProviderRecord, token: TokenInfo, stake_token: TokenInfo, claimable: int) -> ProviderFigures:
        """`token` is the payment token, `claimable` the sum over its live rentals in its units."""
        missed = provider.track_record.value_missed
        stake, stake_shown = stake_figures(provider, stake_token)
        reputation, reputation_shown = reputation_figures(provider, token)
        return cls(
            address=provider.address,
            **stake,
            unbonding_ends_at=provider.unbonding_ends_at,
            agent=provider.agent,
            agent_url=provider.agent_url,
            **reputation,
            seconds_delivered=provider.seconds_delivered,
            seconds_missed=provider.seconds_missed,
            established=provider.established(token),
            value_missed=units.amount(token, missed),
            claimable=units.amount(token, claimable),
            display={
                **stake_shown,
                **reputation_shown,
                "agent": provider.agent if int(provider.agent, 16) else "not set",
                "agent_url": provider.agent_url or "not set",
                "seconds_delivered": units.duration(provider.seconds_delivered),
                "seconds_missed": units.duration(provider.seconds_missed),
                "value_missed": units.money(token, missed),
                "claimable": units.money(token, claimable),
            },
        )


class ReportFigures(Figures):
    """An applied report: what it added over its period, and the rental's total of delivered seconds it brought."""

    seq: int
    period_start: int
    covered_until: int
    delivered_seconds: int  # in the period
    utilisation: float | None  # over the period's delivered seconds; None when it delivered none
    earned: Decimal  # in the period, gross
    total_delivered_seconds: int
    display: dict[str, str]

    @classmethod
    def of(cls, period: ReportPeriod, token: TokenInfo) -> ReportFigures:
        utilisation = units.fraction_bps(period.util_bps)
        return cls(
            seq=period.seq,
            period_start=period.start,
            covered_until=period.covered_until,
            delivered_seconds=period.delivered_seconds,
            utilisation=utilisation,
            earned=units.amount(token, period.earned),
            total_delivered_seconds=period.report.delivered_seconds,
            display={
                "delivered_seconds": units.duration(period.delivered_seconds),
                "period": units.duration(period.covered_until - period.start),
                "utilisation": _shown(units.percent(utilisation)),
                "earned": units.money(token, period.earned),
            },
        )


class SkippedFigures(Figures):
    seq: int
    reason: str  # seq_not_increasing, totals_decreased, ...


class SettlementFigures(Figures):
    status: str
    settled_at: int | None
    provider_payout: Decimal  # in all, after the fee
    fee: Decimal
    refund: Decimal
    delivered_seconds: int
    missed_seconds: int
    slashed: Decimal  # stake token
    slash_reason: str  # none, start_timeout, sla_breach
    display: dict[str, str]


class RentalRow(Figures):
    """A rental as a row of a rentals table (the web's recent rentals, `gpuex rentals`, an account's rentals)."""

    rental_id: str
    offer_id: int
    provider: str
    renter: str
    status: str
    live: bool  # open, running or terminated: it still holds its offer
    final: bool  # settled: nothing about it changes any more
    gpu_model: str
    gpu_count: int
    price_per_hour: Decimal
    opened_at: int | None
    since: int | None  # opening time while open, start time once started
    ends_at: int | None
    covered_until: int | None  # up to when the applied reports cover the rental
    delivered_seconds: int
    utilisation: float | None  # over every delivered second of the applied reports
    paid: Decimal  # earnings of the applied reports: what the renter pays, fee included
    claimed: Decimal  # of `paid`, what the provider claimed while the rental ran (gross)
    display: dict[str, str]

    @classmethod
    def of(cls, rental: RentalHistory, offer: OfferRecord, token: TokenInfo) -> RentalRow:
        return cls(**_row_fields(rental, offer, token))


def _row_fields(rental: RentalHistory, offer: OfferRecord, token: TokenInfo) -> dict:
    utilisation = units.fraction_bps(rental.avg_util_bps)
    return dict(
        rental_id=str(rental.rental_id),
        offer_id=rental.offer_id,
        provider=offer.provider,
        renter=rental.renter,
        status=rental.status.name.lower(),
        live=rental.status.is_live,
        final=rental.status.is_final,
        gpu_model=offer.gpu_model,
        gpu_count=offer.gpu_count,
        price_per_hour=units.hourly(token, rental.price_per_second),
        opened_at=rental.opened_at,
        since=rental.since,
        ends_at=rental.ends_at,
        covered_until=rental.covered_until,
        delivered_seconds=rental.delivered_seconds,
        utilisation=utilisation,
        paid=units.amount(token, rental.earned),
        claimed=units.amount(token, rental.claimed),
        display={
            "gpus": f"{offer.gpu_count}x {offer.gpu_model}",
            "status": units.label(rental.status.name.lower()),
            "price_per_hour": units.per_hour(token, rental.price_per_second),
            "delivered_seconds": units.duration(rental.delivered_seconds),
            "utilisation": _shown(units.percent(utilisation)),
            "paid": units.money(token, rental.earned),
            "claimed": units.money(token, rental.claimed),
        },
    )


def rental_rows(
    rentals: Iterable[RentalHistory], offer_of: Callable[[int], OfferRecord | None], token: TokenInfo
) -> list[RentalRow]:
    """Rows for the rentals, with their offers from `offer_of` (the event index's), leaving out any whose offer it
    has not read yet (for a moment, while it indexes a provider's first events)."""
    return [
        RentalRow.of(rental, offer, token) for rental in rentals if (offer := offer_of(rental.offer_id)) is not None
    ]


class RentalFigures(RentalRow):
    """A rental with its amounts, settlement and reports (`gpuex rental status --json`, the web's rental page)."""

    deposit: Decimal
    refunded: Decimal  # at a termination and at the settlement
    booked_duration: int  # paid for at the opening
    duration: int  # from `since`, shortened by a termination
    started_at: int | None
    started_by_report: bool
    terminated_at: int | None
    decline_reason: str | None  # spec_missing, spec_invalid, ... when the provider declined it
    decline_detail: str | None  # what the reason means, for people
    job_spec_hash: str
    util_floor: float
    last_seq: int
    covered_seconds: int  # after the start, by the applied reports
    claimable: Decimal  # gross earnings a claim would credit the provider now
    provider_paid: Decimal  # credited to the provider so far, after the fee
    settlement: SettlementFigures | None
    reports: list[ReportFigures]
    skipped: list[SkippedFigures]

    @classmethod
    def of_rental(
        cls, rental: RentalHistory, offer: OfferRecord, token: TokenInfo, stake_token: TokenInfo
    ) -> RentalFigures:
        row = _row_fields(rental, offer, token)
        settled, declined = rental.settlement, rental.decline_reason
        settlement = None
        if settled is not None:
            settlement = SettlementFigures(
                status=settled.status.name.lower(),
                settled_at=rental.settled_at,
                provider_payout=units.amount(token, settled.provider_payout),
                fee=units.amount(token, settled.fee),
                refund=units.amount(token, settled.refund),
                delivered_seconds=settled.delivered_seconds,
                missed_seconds=settled.missed_seconds,
                slashed=units.amount(stake_token, settled.slashed),
                slash_reason=settled.slash_reason.name.lower(),
                display={
                    "status": units.label(settled.status.name.lower()),
                    "provider_payout": units.money(token, settled.provider_payout),
                    "fee": units.money(token, settled.fee),
                    "refund": units.money(token, settled.refund),
                    "missed_seconds": units.duration(settled.missed_seconds),
                    "slashed": units.money(stake_token, settled.slashed),
                    "slash_reason": units.label(settled.slash_reason.name.lower()),
                },
            )
        display = {
            **row.pop("display"),
            "deposit": units.money(token, rental.deposit),
            "refunded": units.money(token, rental.refunded),
            "booked_duration": units.duration(rental.booked_duration),
            "duration": units.duration(rental.duration),
            "covered_seconds": units.duration(rental.covered_seconds),
            "util_floor": _shown(units.percent(units.fraction_bps(rental.util_floor_bps))),
            "claimable": units.money(token, rental.claimable),
            "provider_paid": units.money(token, rental.provider_paid),
        }
        return cls(
            **row,
            display=display,
            deposit=units.amount(token, rental.deposit),
            refunded=units.amount(token, rental.refunded),
            booked_duration=rental.booked_duration,
            duration=rental.duration,
            started_at=rental.started_at,
            started_by_report=rental.started_by_report,
            terminated_at=rental.terminated_at,
            decline_reason=None if declined is None else declined.name.lower(),
            decline_detail=None if declined is None else declined.describe(),
            job_spec_hash=rental.job_spec_hash,
            util_floor=units.fraction_bps(rental.util_floor_bps),
            last_seq=rental.last_seq,
            covered_seconds=rental.covered_seconds,
            claimable=units.amount(token, rental.claimable),
            provider_paid=units.amount(token, rental.provider_paid),
            settlement=settlement,
            reports=[ReportFigures.of(period, token) for period in rental.periods],
            skipped=[SkippedFigures(seq=s.seq, reason=s.reason.name.lower()) for s in rental.skipped],
        )


async def offer_figures(offers: list[OfferRecord], token: TokenInfo, probe: AgentProbe | None) -> list[OfferFigures]:
    """The offers' records, with whether each provider's agent answers as `probe` finds it (without a probe,
    `agent_online` is None)."""
    urls = {offer.offer_id: url for offer in offers if (url := published_agent_url(offer)) is not None}
    online = await probe.online(urls.values()) if probe is not None else {}
    return [OfferFigures.of(offer, token, online.get(urls.get(offer.offer_id, ""))) for offer in offers]
