"""`gpuex provider stake|unstake|withdraw|set-agent|set-agent-url|register-gpus|show`: a provider's stake, agent key,
agent URL and GPUs."""

from __future__ import annotations

import argparse

from offchain.cli import parse
from offchain.cli.args import ExitStatus, add_command, add_group, amount_units
from offchain.cli.gpus import add_gpu_options, local_gpus
from offchain.cli.network import Context, open_context
from offchain.cli.output import Output, when
from offchain.market import units
from offchain.market.exchange import ProviderResult
from offchain.market.figures import ProviderFigures
from offchain.market.offers import ProviderRecord, TokenInfo
from offchain.protocol.messages import gpu_uuid_hash


def register(commands: argparse._SubParsersAction) -> None:
    group = add_group(commands, "provider")
    stake_parser = add_command(group, "stake", stake, "add stake (collateral for rentals of your offers)")
    stake_parser.add_argument("--amount", type=parse.amount, required=True, help="in the stake token, e.g. 500")
    stake_parser.add_argument(
        "--approve",
        action="store_true",
        help="approve the registry to take exactly the amount if the allowance falls short",
    )
    unstake_parser = add_command(
        group, "unstake", unstake, "start unbonding free stake (withdraw it after the unbonding period)"
    )
    unstake_parser.add_argument("--amount", type=parse.amount, required=True, help="in the stake token")
    add_command(group, "withdraw", withdraw, "withdraw stake whose unbonding period has ended")
    agent_parser = add_command(
        group, "set-agent", set_agent, "set the key your provider machine's agent signs telemetry with"
    )
    agent_parser.add_argument("agent", type=parse.address, help="the agent key's address")
    url_parser = add_command(
        group,
        "set-agent-url",
        set_agent_url,
        "publish the public URL of your agent's API, where renters reach the agent",
    )
    url_choice = url_parser.add_mutually_exclusive_group(required=True)
    url_choice.add_argument(
        "url",
        type=parse.agent_url,
        nargs="?",
        help="http(s)://host[:port][/path], at most 256 bytes; an empty string clears it",
    )
    url_choice.add_argument("--clear", action="store_true", help="clear the published URL")
    gpus_parser = add_command(
        group, "register-gpus", register_gpus, "claim this machine's GPUs (NVML UUIDs) so that offers can list them"
    )
    add_gpu_options(gpus_parser)
    show_parser = add_command(group, "show", show, "a provider's stake, reputation, agent key and agent URL")
    show_parser.add_argument("provider", type=parse.address, nargs="?", help="default: your key's account")


def render_provider(out: Output, p: ProviderFigures) -> None:
    shown = p.display
    unbonding = shown["unbonding"] + (f" (until {when(p.unbonding_ends_at)})" if p.unbonding else "")
    out.fields(
        f"provider {p.address}",
        [
            ("staked", shown["staked"]),
            ("locked", shown["locked"]),
            ("unbonding", unbonding),
            ("free", shown["free"]),
            ("agent", shown["agent"]),
            ("agent URL", shown["agent_url"]),
            ("rentals completed", p.rentals_completed),
            ("slashes", p.slashes),
            (
                "declines",
                f"{p.declines}" + ("" if p.decline_rate is None else f" ({shown['decline_rate']} of rentals ended)"),
            ),
            ("delivered", f"{shown['seconds_delivered']} ({p.seconds_delivered:,} s)"),
            ("missed", f"{shown['seconds_missed']} ({p.seconds_missed:,} s)"),
            ("value settled", f"{shown['value_settled']} ({shown['value_missed']} missed)"),
            ("distinct renters", p.distinct_renters),
            ("reliability", shown["reliability"]),
            ("claimable", shown["claimable"]),
        ],
    )


async def _figures(ctx: Context, provider: ProviderRecord, token: TokenInfo) -> tuple[ProviderFigures, list]:
    """The provider's record as `--json` and the web API show it, and its rentals with earnings to claim."""
    payment_token = await ctx.client.payment_token()
    claimable = await ctx.client.claimable_rentals(provider.address)
    total = sum(rental.claimable for rental in claimable)
    return ProviderFigures.of(provider, payment_token, token, total), claimable


async def _provider_action(args: argparse.Namespace, act) -> ExitStatus:
    out = Output(args)
    async with open_context(args, key=True) as ctx:
        token = await ctx.client.stake_token()
        result: ProviderResult = await act(ctx, token)
        figures, _ = await _figures(ctx, result.provider, token)

    def human() -> None:
        out.sent(result)
        render_provider(out, figures)

    out.emit({**result.model_dump(mode="json", exclude={"provider"}), "provider": figures}, human)
    return ExitStatus.OK


async def stake(args: argparse.Namespace) -> ExitStatus:
    async def act(ctx: Context, token: TokenInfo) -> ProviderResult:
        return await ctx.client.stake(amount_units(token, args.amount), approve=args.approve)

    return await _provider_action(args, act)


async def unstake(args: argparse.Namespace) -> ExitStatus:
    async def act(ctx: Context, token: TokenInfo) -> ProviderResult:
        return await ctx.client.request_unstake(amount_units(token, args.amount))

    return await _provider_action(args, act)


async def withdraw(args: argparse.Namespace) -> ExitStatus:
    async def act(ctx: Context, token: TokenInfo) -> ProviderResult:
        return await ctx.client.withdraw_unstaked()

    return await _provider_action(args, act)


async def set_agent(args: argparse.Namespace) -> ExitStatus:
    async def act(ctx: Context, token: TokenInfo) -> ProviderResult:
        return await ctx.client.set_agent(args.agent)

    return await _provider_action(args, act)


async def set_agent_url(args: argparse.Namespace) -> ExitStatus:
    async def act(ctx: Context, token: TokenInfo) -> ProviderResult:
        return await ctx.client.set_agent_url("" if args.clear else args.url)

    return await _provider_action(args, act)


async def register_gpus(args: argparse.Namespace) -> ExitStatus:
    out = Output(args)
    async with open_context(args, key=True) as ctx:
        gpus = local_gpus(args, ctx, ctx.client.address)
        result = await ctx.client.register_gpus([gpu_uuid_hash(g.uuid) for g in gpus])
    names = {"0x" + gpu_uuid_hash(g.uuid).hex(): g for g in gpus}

    def human() -> None:
        out.sent(result)
        for label, hashes in (("registered", result.registered), ("already yours", result.already_registered)):
            for h in hashes:
                out.print(f"{label}: {names[h].uuid} ({names[h].name}, hash {h})")

    out.emit({**result.model_dump(mode="json"), "gpus": [g.model_dump(mode="json") for g in gpus]}, human)
    return ExitStatus.OK


async def show(args: argparse.Namespace) -> ExitStatus:
    out = Output(args)
    async with open_context(args, key=args.provider is None) as ctx:
        token = await ctx.client.stake_token()
        payment_token = await ctx.client.payment_token()
        record = await ctx.client.provider(args.provider)
        figures, claimable = await _figures(ctx, record, token)

    def human() -> None:
        render_provider(out, figures)
        for rental in claimable:
            out.print(
                f"rental {rental.rental_id}: {units.money(payment_token, rental.claimable)} claimable "
                f"(`gpuex rental claim {rental.rental_id}`)"
            )

    by_rental = {str(r.rental_id): str(units.amount(payment_token, r.claimable)) for r in claimable}
    out.emit({**figures.model_dump(mode="json"), "claimable_by_rental": by_rental}, human)
    return ExitStatus.OK
