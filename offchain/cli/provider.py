"""`gpuex provider stake|unstake|withdraw|set-agent|set-agent-url|register-gpus|show`: a provider's stake, agent key,
agent URL and GPUs."""

from __future__ import annotations

import argparse

from offchain.cli import parse
from offchain.cli.args import ExitStatus, add_command, add_group, amount_units
from offchain.cli.gpus import add_gpu_options, local_gpus
from offchain.cli.network import Context, open_context
from offchain.cli.output import Output, money, when
from offchain.market.exchange import ProviderResult
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


def render_provider(out: Output, token: TokenInfo, p: ProviderRecord, payment_token: TokenInfo) -> None:
    """`token` is the stake token; the track record's values are in `payment_token`."""
    track = p.track_record
    reliability = f"{p.reliability:.2%}" if p.established(payment_token) and p.reliability is not None else "new"
    unbonding = money(token, p.unbonding) + (f" (until {when(p.unbonding_ends_at)})" if p.unbonding else "")
    out.fields(
        f"provider {p.address}",
        [
            ("staked", money(token, p.staked)),
            ("locked", money(token, p.locked)),
            ("unbonding", unbonding),
            ("free", money(token, p.free)),
            ("agent", p.agent if int(p.agent, 16) else "not set"),
            ("agent URL", p.agent_url or "not set"),
            ("rentals completed", p.rentals_completed),
            ("slashes", p.slashes),
            ("declines", p.declines),
            ("seconds delivered", f"{p.seconds_delivered:,}"),
            ("seconds missed", f"{p.seconds_missed:,}"),
            (
                "value settled",
                f"{money(payment_token, track.value_settled)} ({money(payment_token, track.value_missed)} missed)",
            ),
            ("distinct renters", track.distinct_renters),
            ("reliability", reliability),
        ],
    )


async def _provider_action(args: argparse.Namespace, act) -> ExitStatus:
    out = Output(args)
    async with open_context(args, key=True) as ctx:
        token = await ctx.client.stake_token()
        payment_token = await ctx.client.payment_token()
        result: ProviderResult = await act(ctx, token)

    def human() -> None:
        out.sent(result)
        render_provider(out, token, result.provider, payment_token)

    out.emit(result, human)
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
        claimable = await ctx.client.claimable_rentals(record.address)

    def human() -> None:
        render_provider(out, token, record, payment_token)
        for rental in claimable:
            out.print(
                f"rental {rental.rental_id}: {money(payment_token, rental.claimable)} claimable "
                f"(`gpuex rental claim {rental.rental_id}`)"
            )

    body = {
        **record.model_dump(mode="json"),
        "reliability": record.reliability,
        "established": record.established(payment_token),
        "value_settled": record.track_record.value_settled,
        "claimable": {str(r.rental_id): r.claimable for r in claimable},
    }
    out.emit(body, human)
    return ExitStatus.OK
