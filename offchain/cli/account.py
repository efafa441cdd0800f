"""`gpuex rentals` and `gpuex balance`: an account's rentals (as renter and as provider) and what it holds on the
exchange, from `offchain.market.accounts.account_summary` (the web API's `/api/accounts/<address>` too). The
account is the key's, or `--address`'s (no key needed then)."""

from __future__ import annotations

import argparse
import typing

from rich.table import Table

from offchain.cli import parse
from offchain.cli.args import ExitStatus, add_command
from offchain.cli.network import Context, open_context
from offchain.cli.output import Output, when
from offchain.market.accounts import AccountSummary, Role, account_summary
from offchain.protocol.status import RentalStatus

#: `--status` names: the rental statuses but NONE, in lower case.
STATUS_NAMES = tuple(status.name.lower() for status in RentalStatus if status is not RentalStatus.NONE)


def register(commands: argparse._SubParsersAction) -> None:
    rentals_parser = add_command(
        commands, "rentals", rentals, "your rentals, as renter and as provider, the most recently opened first"
    )
    rentals_parser.add_argument(
        "--as", dest="role", choices=typing.get_args(Role), help="only the rentals on this side (default: both)"
    )
    rentals_parser.add_argument("--status", choices=STATUS_NAMES, help="only the rentals in this status")
    balance_parser = add_command(
        commands,
        "balance",
        balance,
        "what you can withdraw (escrow balance, slash compensation), your stake, and the earnings a claim of your "
        "running rentals would credit you",
    )
    for parser in (rentals_parser, balance_parser):
        parser.add_argument("--address", type=parse.address, help="another account's (default: your key's account)")


async def _summary(ctx: Context, address: str, **filters: typing.Any) -> AccountSummary:
    token, stake_token = await ctx.client.payment_token(), await ctx.client.stake_token()
    index = await ctx.client.market()
    return await account_summary(index, ctx.client.reader, address, token, stake_token, **filters)


async def rentals(args: argparse.Namespace) -> ExitStatus:
    out = Output(args)
    status = None if args.status is None else RentalStatus[args.status.upper()]
    async with open_context(args, key=args.address is None) as ctx:
        summary = await _summary(ctx, args.address or ctx.client.address, role=args.role, status=status)

    def human() -> None:
        if not summary.rentals:
            out.print(f"{summary.address} has no rentals" + (" that match" if args.role or status else ""))
            return
        table = Table(title_justify="left")
        for heading in ("rental", "as", "offer", "gpus", "status", "price", "opened", "delivered", "util", "paid"):
            table.add_column(heading, justify="right" if heading in ("delivered", "util", "paid", "price") else "left")
        for row in summary.rentals:
            table.add_row(
                row.rental_id,
                row.role,
                str(row.offer_id),
                row.display["gpus"],
                row.display["status"],
                row.display["price_per_hour"],
                when(row.opened_at) or "-",
                row.display["delivered_seconds"],
                row.display["utilisation"],
                row.display["paid"],
            )
        out.print(table)

    out.emit({"address": summary.address, "block": summary.block, "rentals": summary.rentals}, human)
    return ExitStatus.OK


async def balance(args: argparse.Namespace) -> ExitStatus:
    out = Output(args)
    async with open_context(args, key=args.address is None) as ctx:
        summary = await _summary(ctx, args.address or ctx.client.address)
    shown = summary.balances.display

    def human() -> None:
        live = sum(1 for row in summary.rentals if row.live)
        out.fields(
            f"account {summary.address} (block {summary.block})",
            [
                ("withdrawable", f"{shown['withdrawable']} (`gpuex withdraw`)"),
                ("compensation", shown["compensation"]),
                ("pending earnings", f"{shown['pending_earnings']} (`gpuex rental claim RENTAL`)"),
                ("staked", shown["staked"]),
                ("locked", shown["locked"]),
                ("unbonding", shown["unbonding"]),
                ("free", shown["free"]),
                ("unbonding ends", when(summary.balances.unbonding_ends_at) if summary.balances.unbonding else None),
                ("live rentals", f"{live} of {len(summary.rentals)}"),
            ],
        )

    out.emit({"address": summary.address, "block": summary.block, "balances": summary.balances}, human)
    return ExitStatus.OK
