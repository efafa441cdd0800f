"""`gpuex offer create|update|pause|resume|close|list`: a provider's offers."""

from __future__ import annotations

import argparse
from decimal import Decimal

from pydantic import ValidationError

from offchain.cli import parse
from offchain.cli.args import ExitStatus, UsageError, add_command, add_group, invalid, price_units
from offchain.cli.gpus import add_gpu_options, local_gpus
from offchain.cli.network import open_context
from offchain.cli.offers import render_offers
from offchain.cli.output import Output, per_hour
from offchain.market.agentprobe import AgentProbe
from offchain.market.exchange import OfferResult, OfferTerms
from offchain.market.figures import OfferFigures, offer_figures
from offchain.market.offers import MIB_PER_GIB, SECONDS_PER_HOUR, OfferQuery, TokenInfo, search_offers
from offchain.protocol.messages import gpu_uuid_hash


def register(commands: argparse._SubParsersAction) -> None:
    group = add_group(commands, "offer", "a provider's offers")
    create_parser = add_command(
        group, "create", create, "list registered GPUs as one offer (default: every GPU NVML sees)"
    )
    create_parser.add_argument(
        "--price-per-hour",
        type=parse.price,
        required=True,
        metavar="PRICE",
        help="for the whole offer, in the payment token, e.g. 7.20",
    )
    create_parser.add_argument("--region", required=True, help="where the machine is, e.g. eu-west (16 bytes)")
    create_parser.add_argument("--model", help="the GPU model renters search for (default: the GPUs' NVML name)")
    create_parser.add_argument(
        "--vram", type=parse.gib, metavar="GIB", help="memory per GPU (default: the smallest GPU's, from NVML)"
    )
    create_parser.add_argument(
        "--min-duration",
        type=parse.duration,
        default=60,
        metavar="DURATION",
        help="shortest rental, e.g. 10m (default 1m)",
    )
    create_parser.add_argument(
        "--max-duration",
        type=parse.duration,
        default=86_400,
        metavar="DURATION",
        help="longest rental, e.g. 24h (default 1d)",
    )
    create_parser.add_argument(
        "--util-floor",
        type=parse.percent,
        default=100.0,
        metavar="PCT",
        help="100 (default): pay for time; lower: pay by GPU utilisation, at least this share",
    )
    create_parser.add_argument(
        "--egress",
        action="store_true",
        help="let jobs open outbound network connections when their spec asks (off by "
        "default; fixed for the offer's life)",
    )
    add_gpu_options(create_parser)
    update_parser = add_command(group, "update", update, "set the price of rentals opened from now on")
    update_parser.add_argument("offer_id", type=parse.positive_int, metavar="OFFER")
    update_parser.add_argument("--price-per-hour", type=parse.price, required=True, metavar="PRICE")
    for name, handler, text in (
        ("pause", pause, "stop new rentals (a live rental continues)"),
        ("resume", resume, "take new rentals again"),
        ("close", close, "delist for good and free the GPUs for other offers"),
    ):
        add_command(group, name, handler, text).add_argument("offer_id", type=parse.positive_int, metavar="OFFER")
    list_parser = add_command(group, "list", list_offers, "a provider's offers, in every status")
    list_parser.add_argument("--provider", type=parse.address, help="default: your key's account")


def _render_result(out: Output, result: OfferResult, token: TokenInfo, note: str | None = None) -> None:
    figures = OfferFigures.of(result.offer, token)

    def human() -> None:
        out.sent(result)
        render_offers(out, [figures])
        if note:
            out.print(note)

    out.emit({**result.model_dump(mode="json"), "offer": figures}, human)


async def create(args: argparse.Namespace) -> ExitStatus:
    out = Output(args)
    async with open_context(args, key=True) as ctx:
        gpus = local_gpus(args, ctx, ctx.client.address)
        model = args.model or gpus[0].name
        if not model:
            raise UsageError("--model is needed for GPUs given by UUID")
        if args.vram is not None:
            vram_mib = int(args.vram * MIB_PER_GIB)
        elif any(g.mem_total_mib for g in gpus):
            vram_mib = min(g.mem_total_mib for g in gpus)
        else:
            raise UsageError("--vram is needed for GPUs given by UUID")
        token = await ctx.client.payment_token()
        price = price_units(token, args.price_per_hour)
        try:
            terms = OfferTerms(
                gpu_model=model,
                vram_mib=vram_mib,
                price_per_second=price,
                min_duration=args.min_duration,
                max_duration=args.max_duration,
                region=args.region,
                util_floor_bps=round(args.util_floor * 100),
                egress=args.egress,
                gpu_uuid_hashes=[gpu_uuid_hash(g.uuid) for g in gpus],
            )
        except ValidationError as exc:
            raise invalid(exc, "offer terms") from None
        result = await ctx.client.create_offer(terms)
    _render_result(out, result, token, _rounding_note(args.price_per_hour, token, price))
    return ExitStatus.OK


def _rounding_note(asked: Decimal, token: TokenInfo, price_per_second: int) -> str | None:
    """Prices are per second on chain: says so when the price asked per hour is not a whole number of units/s."""
    effective = token.to_human(price_per_second * SECONDS_PER_HOUR)
    if effective == asked:
        return None
    return f"note: prices are per second on chain; {asked}/h is {per_hour(token, price_per_second)} in effect"


async def update(args: argparse.Namespace) -> ExitStatus:
    out = Output(args)
    async with open_context(args, key=True) as ctx:
        token = await ctx.client.payment_token()
        price = price_units(token, args.price_per_hour)
        result = await ctx.client.update_offer_price(args.offer_id, price)
    _render_result(out, result, token, _rounding_note(args.price_per_hour, token, price))
    return ExitStatus.OK


async def _status_change(args: argparse.Namespace, action: str) -> ExitStatus:
    out = Output(args)
    async with open_context(args, key=True) as ctx:
        token = await ctx.client.payment_token()
        result = await getattr(ctx.client, f"{action}_offer")(args.offer_id)
    _render_result(out, result, token)
    return ExitStatus.OK


async def pause(args: argparse.Namespace) -> ExitStatus:
    return await _status_change(args, "pause")


async def resume(args: argparse.Namespace) -> ExitStatus:
    return await _status_change(args, "resume")


async def close(args: argparse.Namespace) -> ExitStatus:
    return await _status_change(args, "close")


async def list_offers(args: argparse.Namespace) -> ExitStatus:
    out = Output(args)
    async with open_context(args, key=args.provider is None) as ctx:
        provider = args.provider or ctx.client.address
        token = await ctx.client.payment_token()
        offers = await offer_figures(
            search_offers(
                await ctx.client.offers(), OfferQuery(provider=provider, include_unavailable=True, sort="offer"), token
            ),
            token,
            AgentProbe(),
        )
    out.emit(offers, lambda: render_offers(out, offers))
    return ExitStatus.OK
