"""The market as a renter sees it: offers read from the registry's views, the provider's reputation
(`offchain.market.reputation`), and one search (filters and sort) shared by `gpuex offers search` and the web page.

Amounts stay in token units (`int`) everywhere; `TokenInfo` turns them into human units (USDC, $/h) at the edge.
"""

from __future__ import annotations

import asyncio
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from web3 import AsyncWeb3
from web3.types import BlockIdentifier

from offchain.chain.reads import ChainReader, Offer, Provider
from offchain.market.reputation import Reputation
from offchain.protocol.status import OfferStatus

SECONDS_PER_HOUR = 3600
MIB_PER_GIB = 1024


class TokenInfo(BaseModel):
    """The payment (or stake) token's display metadata."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str
    symbol: str
    decimals: int = Field(ge=0, le=36)

    def to_human(self, units: int) -> Decimal:
        """Token units as a decimal amount (1_500_000 units of a 6-decimal token -> 1.5)."""
        return Decimal(units).scaleb(-self.decimals)

    def to_units(self, amount: Decimal | str | int) -> int:
        """A human amount as token units; refuses amounts finer than the token's precision."""
        units = Decimal(amount).scaleb(self.decimals)
        if units != units.to_integral_value():
            raise ValueError(f"{amount} {self.symbol} is finer than {self.decimals} decimals")
        return int(units)

    def format(self, units: int) -> str:
        return f"{self.to_human(units):,.{min(self.decimals, 6)}f} {self.symbol}"

    def per_second(self, per_hour: Decimal | str | int, rounding: str = ROUND_HALF_UP) -> int:
        """A price per hour in human units as token units per second, rounded to the nearest unit by default (an
        offer's price is per second: `price_per_hour` of the result is the effective hourly price)."""
        units = Decimal(per_hour).scaleb(self.decimals) / SECONDS_PER_HOUR
        return int(units.to_integral_value(rounding=rounding))


async def read_token(reader: ChainReader, address: str) -> TokenInfo:
    """Symbol and decimals of an ERC-20 token."""
    return TokenInfo(**(await reader.token_metadata(address)).model_dump())


class ProviderRecord(Provider):
    """A provider's stake and the counters the registry keeps (`getProvider`), with its address, the URL of its
    agent's API (`agentUrlOf`) and the reputation its settled rentals give it (`track_record`: what the event index
    folded; empty when read from the registry's views alone)."""

    address: str
    agent_url: str | None  # as published, None when unset; check it with `offchain.protocol.agenturl.check_agent_url`
    track_record: Reputation = Reputation()

    @property
    def free(self) -> int:
        return self.staked - self.locked - self.unbonding

    @property
    def reliability(self) -> float | None:
        """Value-weighted share of its rentals by others that the provider delivered; None before any settled."""
        return self.track_record.reliability

    def established(self, token: TokenInfo) -> bool:
        """Enough value settled by other renters for its reliability to count (see `offchain.market.reputation`)."""
        return self.track_record.established(token.decimals)

    @classmethod
    def from_chain(cls, address: str, provider: Provider, agent_url: str | None) -> ProviderRecord:
        """From the registry's account of the provider and the agent URL it published (None when unset)."""
        return cls(address=address, **provider.model_dump(), agent_url=agent_url)


def unpack_text(raw: bytes) -> str:
    """A left-aligned, zero-padded bytesN field (gpuModel, region) as text; the inverse of `pack_text`."""
    return raw.rstrip(b"\0").decode("utf-8", errors="replace")


def pack_text(text: str, size: int) -> bytes:
    """The bytesN form of `text` (as `createOffer` takes gpuModel and region); refuses text that does not fit."""
    raw = text.encode("utf-8")
    if len(raw) > size:
        raise ValueError(f"{text!r} is longer than {size} bytes")
    return raw.ljust(size, b"\0")


class OfferRecord(BaseModel):
    """One offer with what a renter filters and sorts on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    offer_id: int
    provider: str
    status: OfferStatus
    gpu_model: str
    gpu_count: int
    vram_mib: int  # per GPU
    region: str
    price_per_second: int  # token units, whole offer
    min_duration: int
    max_duration: int
    util_floor_bps: int
    egress: bool  # jobs may open outbound network connections when their spec asks; fixed for the offer
    gpu_uuid_hashes: list[str]
    live_rental_id: int  # 0 when the offer is free
    reputation: ProviderRecord

    @property
    def rentable(self) -> bool:
        return self.status is OfferStatus.ACTIVE and self.live_rental_id == 0

    @property
    def price_per_hour(self) -> int:
        """Token units per hour for the whole offer."""
        return self.price_per_second * SECONDS_PER_HOUR

    @property
    def vram_gib(self) -> float:
        return self.vram_mib / MIB_PER_GIB

    @property
    def reliability(self) -> float | None:
        return self.reputation.reliability

    @classmethod
    def from_chain(cls, offer_id: int, offer: Offer, live_rental_id: int, reputation: ProviderRecord) -> OfferRecord:
        """From the registry's offer, the rental holding it (0 when free) and its provider's record."""
        return cls(
            offer_id=offer_id,
            provider=offer.provider,
            status=offer.status,
            gpu_model=unpack_text(offer.gpu_model),
            gpu_count=offer.gpu_count,
            vram_mib=offer.vram_mib,
            region=unpack_text(offer.region),
            price_per_second=offer.price_per_second,
            min_duration=offer.min_duration,
            max_duration=offer.max_duration,
            util_floor_bps=offer.util_floor_bps,
            egress=offer.egress,
            gpu_uuid_hashes=["0x" + bytes(h).hex() for h in offer.gpu_uuid_hashes],
            live_rental_id=live_rental_id,
            reputation=reputation,
        )


async def read_provider(reader: ChainReader, provider: str, block: BlockIdentifier = "latest") -> ProviderRecord:
    """The provider's account and agent URL, both read at `block`."""
    account, agent_url = await asyncio.gather(reader.provider(provider, block), reader.agent_url_of(provider, block))
    return ProviderRecord.from_chain(AsyncWeb3.to_checksum_address(provider), account, agent_url)


async def read_offer(
    reader: ChainReader, offer_id: int, providers: dict[str, ProviderRecord] | None = None
) -> OfferRecord:
    """One offer (reverts with `Registry_UnknownOffer` if there is none); `providers` caches reputations."""
    offer, live = await asyncio.gather(reader.offer(offer_id), reader.live_rental_of(offer_id))
    cache = providers if providers is not None else {}
    if offer.provider not in cache:
        cache[offer.provider] = await read_provider(reader, offer.provider)
    return OfferRecord.from_chain(offer_id, offer, live, cache[offer.provider])


async def read_offers(reader: ChainReader, concurrency: int = 16) -> list[OfferRecord]:
    """Every offer ever listed, by id; each provider's reputation is read once."""
    count = await reader.offer_count()
    providers: dict[str, ProviderRecord] = {}
    limit = asyncio.Semaphore(concurrency)

    async def one(offer_id: int) -> OfferRecord:
        async with limit:
            return await read_offer(reader, offer_id, providers)

    return list(await asyncio.gather(*(one(i) for i in range(1, count + 1))))


SortKey = Literal["price", "-price", "price_per_gpu", "reliability", "vram", "gpus", "offer"]


class OfferQuery(BaseModel):
    """Filters in the spirit of `vastai search offers`; amounts in human units of the payment token."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpu_model: str | None = None  # case-insensitive substring, "h100" matches "H100-80GB"
    min_gpus: int | None = Field(default=None, ge=1)
    min_vram_gib: float | None = Field(default=None, ge=0)
    max_price_per_hour: Decimal | None = Field(default=None, ge=0)  # whole offer, in token (e.g. USDC) per hour
    region: str | None = None  # case-insensitive prefix, "eu" matches "eu-west"
    min_reliability: float | None = Field(default=None, ge=0, le=1)  # value-weighted; excludes new providers...
    include_new: bool = False  # ...unless this is set: then new providers' offers pass it too (they show as new)
    min_duration: int | None = Field(default=None, ge=1)  # the offer must allow a rental this long
    provider: str | None = None  # only this provider's offers (an address, any case)
    egress: bool | None = None  # True: only offers whose jobs may open outbound connections; False: only others
    include_unavailable: bool = False  # also list paused, closed and rented offers
    sort: SortKey = "price"
    limit: int | None = Field(default=None, ge=1)


def search_offers(offers: list[OfferRecord], query: OfferQuery, token: TokenInfo) -> list[OfferRecord]:
    """The offers that pass every filter of `query`, in its sort order (ties broken by offer id)."""

    def passes(offer: OfferRecord) -> bool:
        if not query.include_unavailable and not offer.rentable:
            return False
        if query.gpu_model and query.gpu_model.lower() not in offer.gpu_model.lower():
            return False
        if query.min_gpus is not None and offer.gpu_count < query.min_gpus:
            return False
        if query.min_vram_gib is not None and offer.vram_gib < query.min_vram_gib:
            return False
        if query.max_price_per_hour is not None and token.to_human(offer.price_per_hour) > query.max_price_per_hour:
            return False
        if query.region and not offer.region.lower().startswith(query.region.lower()):
            return False
        if query.min_reliability is not None:
            if not offer.reputation.established(token):
                if not query.include_new:
                    return False
            elif (offer.reliability or 0.0) < query.min_reliability:
                return False
        if query.min_duration is not None and not offer.min_duration <= query.min_duration <= offer.max_duration:
            return False
        if query.provider is not None and offer.provider.lower() != query.provider.lower():
            return False
        if query.egress is not None and offer.egress is not query.egress:
            return False
        return True

    keys = {
        "price": lambda o: (o.price_per_second, o.offer_id),
        "-price": lambda o: (-o.price_per_second, o.offer_id),
        "price_per_gpu": lambda o: (o.price_per_second / o.gpu_count, o.offer_id),
        "reliability": lambda o: (
            not o.reputation.established(token),
            -(o.reliability if o.reliability is not None else -1.0),
            o.offer_id,
        ),
        "vram": lambda o: (-o.vram_mib, o.offer_id),
        "gpus": lambda o: (-o.gpu_count, o.offer_id),
        "offer": lambda o: (o.offer_id,),
    }
    found = sorted(filter(passes, offers), key=keys[query.sort])
    return found[: query.limit] if query.limit is not None else found
