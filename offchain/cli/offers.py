"""`gpuex offers search`: the market, filtered and sorted in the spirit of `vastai search offers`
(`offchain.market.offers.search_offers`, shared with the web page). Each offer is `offchain.market.figures`'
record, as the web API sends it, with whether its provider's agent answers now (`offchain.market.agentprobe`)."""

from __future__ import annotations

import argparse
import typing
from collections.abc import Callable

from rich.table import Table

from offchain.cli import parse
from offchain.cli.args import ExitStatus, add_command, add_group
from offchain.cli.network import open_context
from offchain.cli.output import Output, short
from offchain.market.agentprobe import AgentProbe
from offchain.market.figures import OfferFigures, offer_figures
from offchain.market.offers import OfferQuery, SortKey, search_offers


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


#: The table's columns: each a heading and what it shows of an offer's figures; numbers are right-aligned.
COLUMNS: tuple[tuple[str, Callable[[OfferFigures], str], bool], ...] = (
    ("id", lambda o: str(o.offer_id), True),
    ("gpus", lambda o: o.display["gpus"], False),
    ("vram/gpu", lambda o: o.display["vram_gib"], True),
    ("price", lambda o: o.display["price_per_hour"], True),
    ("per gpu", lambda o: o.display["price_per_gpu_hour"], True),
    ("region", lambda o: o.region or "-", False),
    ("durations", lambda o: o.display["durations"], False),
    ("util floor", lambda o: o.display["util_floor"], True),
    ("egress", lambda o: o.display["egress"], False),
    ("reliability", lambda o: o.display["reliability"], True),
    ("settled", lambda o: o.display["value_settled"], True),
    ("renters", lambda o: str(o.distinct_renters), True),
    ("declines", lambda o: f"{o.declines} ({o.display['decline_rate']})", True),
    ("agent", lambda o: o.display["agent"], False),
    ("status", lambda o: o.display["availability"], False),
    ("provider", lambda o: short(o.provider), False),
)


def render_offers(out: Output, offers: list[OfferFigures]) -> None:
    if not offers:
        out.print("no offers match")
        return
    table = Table(title_justify="left")
    for heading, _, numeric in COLUMNS:
        table.add_column(heading, justify="right" if numeric else "left")
    for offer in offers:
        table.add_row(*(show(offer) for _, show, _ in COLUMNS))
    out.print(table)


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
        found = await offer_figures(search_offers(await ctx.client.offers(), query, token), token, AgentProbe())
    out.emit(found, lambda: render_offers(out, found))
    return ExitStatus.OK
