"""`gpuex offers search`: the market, filtered and sorted in the spirit of `vastai search offers`
(`offchain.market.offers.search_offers`, shared with the web page)."""

from __future__ import annotations

import argparse
import typing

from rich.table import Table

from offchain.cli import parse
from offchain.cli.args import ExitStatus, add_command, add_group
from offchain.cli.network import open_context
from offchain.cli.output import Output, format_duration, format_gib, money, per_hour, short
from offchain.market.offers import OfferQuery, OfferRecord, SortKey, TokenInfo, search_offers
from offchain.protocol.status import OfferStatus


def register(commands: argparse._SubParsersAction) -> None:
    group = add_group(commands, "offers", "the market as a renter sees it")
    search_parser = add_command(group, "search", search, "offers that pass every filter, cheapest first")
    search_parser.add_argument("--gpu-model", help="part of the GPU model, any case (h100 matches H100-80GB)")
    search_parser.add_argument("--gpus", type=parse.positive_int, metavar="N", help="at least N GPUs")
    search_parser.add_argument("--min-vram", type=parse.gib, metavar="GIB", help="at least this much memory per GPU")
    search_parser.add_argument(
        "--max-price-per-hour",
        type=parse.price,
        metavar="PRICE",
        help="at most this price per hour for the whole offer, in the payment token",
    )
    search_parser.add_argument("--region", help="region prefix, any case (eu matches eu-west)")
    search_parser.add_argument(
        "--min-reliability",
        type=parse.percent,
        metavar="PCT",
        help="providers that delivered at least this share of the value other renters settled with them "
        "(a new provider, with little value settled, fails unless --include-new)",
    )
    search_parser.add_argument(
        "--include-new",
        action="store_true",
        help="with --min-reliability: also new providers' offers (their reliability shows as new), as on a fresh "
        "deployment, where every provider is new",
    )
    search_parser.add_argument(
        "--min-duration", type=parse.duration, metavar="DURATION", help="offers that allow a rental this long (e.g. 2h)"
    )
    search_parser.add_argument(
        "--egress", action="store_true", help="only offers whose jobs may open outbound network connections"
    )
    search_parser.add_argument("--all", action="store_true", help="also paused, closed and rented offers")
    search_parser.add_argument(
        "--sort",
        default="price",
        choices=typing.get_args(SortKey),
        help="sort order (default %(default)s; --sort=-price for the dearest first; "
        "reliability, vram and gpus sort high first)",
    )
    search_parser.add_argument("--limit", type=parse.positive_int, metavar="N", help="at most N offers")


def availability(offer: OfferRecord) -> str:
    if offer.rentable:
        return "available"
    if offer.live_rental_id and offer.status is OfferStatus.ACTIVE:
        return f"rented ({offer.live_rental_id})"
    return offer.status.name.lower()


def render_offers(out: Output, token: TokenInfo, offers: list[OfferRecord]) -> None:
    if not offers:
        out.print("no offers match")
        return
    table = Table(title_justify="left")
    for column in (
        "id",
        "gpus",
        "vram/gpu",
        "price",
        "per gpu",
        "region",
        "durations",
        "egress",
        "reliability",
        "settled",
        "renters",
        "declines",
        "status",
        "provider",
    ):
        table.add_column(
            column,
            justify="right" if column in ("id", "price", "per gpu", "settled", "renters", "declines") else "left",
        )
    for o in offers:
        track = o.reputation.track_record
        reliability = "new" if not o.reputation.established(token) or o.reliability is None else f"{o.reliability:.1%}"
        durations = f"{format_duration(o.min_duration)}-{format_duration(o.max_duration)}"
        table.add_row(
            str(o.offer_id),
            f"{o.gpu_count}x {o.gpu_model}",
            format_gib(o.vram_mib),
            per_hour(token, o.price_per_second),
            per_hour(token, o.price_per_second // o.gpu_count),
            o.region or "-",
            durations,
            "yes" if o.egress else "no",
            reliability,
            money(token, track.value_settled),
            str(track.distinct_renters),
            str(o.reputation.declines),
            availability(o),
            short(o.provider),
        )
    out.print(table)


def offer_json(token: TokenInfo, offer: OfferRecord) -> dict:
    """An offer for scripts: the record (token units, status by name) plus its price per hour in the token and its
    provider's value-weighted reliability (None for a new provider)."""
    price_per_hour = format(token.to_human(offer.price_per_hour).normalize(), "f")
    return {
        **offer.model_dump(mode="json"),
        "status": offer.status.name,
        "price_per_hour": price_per_hour,
        "vram_gib": offer.vram_gib,
        "reliability": offer.reliability if offer.reputation.established(token) else None,
        "value_settled": offer.reputation.track_record.value_settled,
        "distinct_renters": offer.reputation.track_record.distinct_renters,
        "available": offer.rentable,
    }


async def search(args: argparse.Namespace) -> ExitStatus:
    out = Output(args)
    query = OfferQuery(
        gpu_model=args.gpu_model,
        min_gpus=args.gpus,
        min_vram_gib=float(args.min_vram) if args.min_vram is not None else None,
        max_price_per_hour=args.max_price_per_hour,
        region=args.region,
        min_reliability=None if args.min_reliability is None else args.min_reliability / 100,
        include_new=args.include_new,
        min_duration=args.min_duration,
        egress=True if args.egress else None,
        include_unavailable=args.all,
        sort=args.sort,
        limit=args.limit,
    )
    async with open_context(args, key=False) as ctx:
        token = await ctx.client.payment_token()
        found = search_offers(await ctx.client.offers(), query, token)
    out.emit([offer_json(token, o) for o in found], lambda: render_offers(out, token, found))
    return ExitStatus.OK
