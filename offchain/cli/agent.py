"""`gpuex agent run`: the provider agent (`offchain.agent.service.ProviderAgent`) on this machine, until SIGINT or
SIGTERM.

Settings are `GPUEX_AGENT_*` (`ProviderAgentSettings`); the key is `GPUEX_AGENT_KEY` or `GPUEX_AGENT_KEY_FILE`,
else the selected profile's `agent_key_file`. What the command line resolves fills the rest unless the environment
sets it: the chain from the deployment record, the provider from the registry (the provider whose agent this key
is), the oracles from the profile's `oracle_url` or else the devnet's oracle, and on
the devnet the spec directory (where `gpuex rent` puts specs), a state directory per agent key and the busybox job
image (built here if missing) for specs that name no image. On a live network the agent fetches specs it does not
hold from `GPUEX_AGENT_SPEC_URL` (a URL template with `{hash}`).

Every job runs in a hardened podman (or docker) container. `--unsafe-bare-process` runs jobs as bare processes of
the agent's own user instead, with no isolation; the agent refuses it on every chain but a local development one.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

from eth_account import Account
from pydantic import ValidationError

from offchain.agent.service import ProviderAgent
from offchain.agent.settings import ProviderAgentSettings
from offchain.cli import parse, profiles
from offchain.cli.args import ExitStatus, UsageError, add_command, add_group, env_sets, invalid
from offchain.cli.gpus import add_gpu_options, telemetry_source
from offchain.cli.keys import load_key
from offchain.cli.network import open_context
from offchain.cli.unit import add_unit_options, print_unit
from offchain.market.exchange import ExchangeError
from offchain.ops import devnet
from offchain.telemetry.source import TelemetrySource

PREFIX = "GPUEX_AGENT_"


def register(commands: argparse._SubParsersAction) -> None:
    group = add_group(commands, "agent")
    run_parser = add_command(group, "run", run, "run the agent until interrupted (NVML telemetry by default)")
    run_parser.add_argument(
        "--provider",
        type=parse.address,
        help=f"the provider (${PREFIX}PROVIDER; default: the provider whose agent the key is)",
    )
    run_parser.add_argument(
        "--oracle",
        dest="oracles",
        action="append",
        metavar="URL",
        help=f"an oracle's base URL; repeat for more (${PREFIX}ORACLES; default on the devnet: its oracle)",
    )
    run_parser.add_argument(
        "--unsafe-bare-process",
        action="store_true",
        help="run jobs as bare processes of this user, unisolated (local dev chains only; "
        f"${PREFIX}UNSAFE_BARE_PROCESS)",
    )
    add_gpu_options(run_parser, by_uuid=False)
    add_unit_options(run_parser, "agent")


async def _settings(args: argparse.Namespace) -> tuple[ProviderAgentSettings, TelemetrySource]:
    """The agent's settings and its telemetry source."""
    key = load_key(f"{PREFIX}KEY", f"{PREFIX}KEY_FILE", profiles.selected(args), "agent_key_file")
    agent = Account.from_key(key.get_secret_value()).address
    async with open_context(args, key=False) as ctx:
        provider = args.provider or os.environ.get(f"{PREFIX}PROVIDER") or await ctx.client.provider_of_agent(agent)
        if provider is None:
            raise ExchangeError(
                f"the key {agent} is no provider's agent: the provider runs `gpuex provider set-agent {agent}` first"
            )
        registered = (await ctx.client.provider(provider)).agent
        if registered != agent:
            raise ExchangeError(f"provider {provider}'s agent is {registered}, not this key {agent}")
        values: dict = {"provider": provider}
        if not env_sets(f"{PREFIX}KEY") and not env_sets(f"{PREFIX}KEY_FILE"):
            values["key"] = key
        if not env_sets(f"{PREFIX}CHAIN"):
            values["chain"] = ctx.deployment.chain_settings(ctx.rpc_url)
        if args.oracles:
            values["oracles"] = args.oracles
        elif not env_sets(f"{PREFIX}ORACLES"):
            oracles = ctx.profile.values.get("oracle_url")
            if oracles is not None:
                values["oracles"] = [oracles] if isinstance(oracles, str) else oracles
            elif ctx.devnet is None:
                raise UsageError(f"no oracle: pass --oracle URL or set {PREFIX}ORACLES")
            else:
                values["oracles"] = [ctx.devnet.oracle_url]
        if ctx.devnet is not None:
            if not env_sets(f"{PREFIX}SPEC_DIR"):
                values["spec_dir"] = devnet.spec_dir(ctx.devnet_dir)
            if not env_sets(f"{PREFIX}STATE_DIR"):
                values["state_dir"] = devnet.agent_dir(ctx.devnet_dir, agent)
            if not args.unsafe_bare_process and not env_sets(f"{PREFIX}CONTAINER__DEFAULT_IMAGE"):
                devnet.build_job_image()
                values["container"] = {"default_image": devnet.DEV_JOB_IMAGE}
        if args.unsafe_bare_process:
            if ctx.devnet is None:
                raise UsageError(
                    "--unsafe-bare-process is for the devnet only: everywhere else every job runs in a container"
                )
            values["unsafe_bare_process"] = True
        if args.simulated is not None:
            values["allow_simulated"] = True
        source = telemetry_source(args, ctx, provider)
    try:
        return ProviderAgentSettings(**values), source
    except ValidationError as exc:
        source.close()
        raise invalid(exc, f"{PREFIX}* settings") from None


async def run(args: argparse.Namespace) -> ExitStatus:
    if args.print_unit:
        print_unit(args, "gpuex provider agent", runs_containers=not args.unsafe_bare_process)
        return ExitStatus.OK
    settings, source = await _settings(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s agent %(levelname)s %(message)s")
    logging.getLogger(__name__).info(
        "agent for provider %s on %s, reporting to %s",
        settings.provider,
        settings.chain.rpc_url,
        ", ".join(settings.oracles),
    )
    agent = Account.from_key(settings.private_key.get_secret_value()).address
    async with source:
        with devnet.agent_pid_file(settings.state_dir, agent, settings.provider):
            await run_until_signal(ProviderAgent(settings, source).run())
    return ExitStatus.OK


async def run_until_signal(service) -> None:
    """Runs the coroutine `service` until it returns, or until SIGINT or SIGTERM cancel it (a clean stop)."""
    task = asyncio.ensure_future(service)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        if not task.cancelled():
            raise
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
