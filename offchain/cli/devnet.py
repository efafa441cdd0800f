"""`gpuex devnet up|down|status`: a local chain with the suite deployed and an oracle, in the background
(`offchain.ops.devnet`)."""

from __future__ import annotations

import argparse
import asyncio

import aiohttp
from web3.exceptions import Web3Exception

from offchain.chain.rpc import ChainUnreachable, connect
from offchain.cli.args import ExitStatus, add_command, add_group
from offchain.cli.network import devnet_dir
from offchain.cli.output import Output
from offchain.market.exchange import ExchangeClient, NotFound
from offchain.ops import devnet
from offchain.web.app import WEB_PREFIX


def register(commands: argparse._SubParsersAction) -> None:
    group = add_group(commands, "devnet")
    up_parser = add_command(group, "up", up, "start anvil and the oracle in the background, deploy and fund roles")
    up_parser.add_argument("--port", type=int, default=devnet.DEFAULT_PORT, help="anvil's port (default %(default)s)")
    up_parser.add_argument(
        "--oracle-port", type=int, default=devnet.DEFAULT_ORACLE_PORT, help="the oracle's port (default %(default)s)"
    )
    up_parser.add_argument(
        "--epoch-seconds",
        type=float,
        default=5.0,
        help="how often the oracle batches reports on chain (default %(default)s)",
    )
    add_command(
        group,
        "down",
        down,
        "stop the devnet (its chain is kept for the next `up`), and name the agents still running on it",
    )
    add_command(group, "status", status, "whether the devnet runs (exit status 1 when it does not)")


def _keys(state_dir, state: devnet.DevnetState) -> dict[str, dict[str, str]]:
    return {
        role: {"address": address, "key_file": str(devnet.key_path(state_dir, role))}
        for role, address in state.accounts.items()
    }


def _render_state(out: Output, state_dir, state: devnet.DevnetState) -> None:
    d = state.deployment
    out.fields(
        f"devnet in {state_dir}",
        [
            ("rpc", state.rpc_url),
            ("chain id", state.chain_id),
            ("oracle", state.oracle_url),
            ("web page", f"{state.oracle_url}{WEB_PREFIX}/"),
            ("registry", d.registry),
            ("escrow", d.escrow),
            ("payment token", d.payment_token),
        ],
    )
    out.fields(
        "roles (use one with GPUEX_KEY_FILE=<key file>)",
        [(role, f"{v['address']}  {v['key_file']}") for role, v in _keys(state_dir, state).items()],
    )


async def up(args: argparse.Namespace) -> ExitStatus:
    out = Output(args)
    state_dir = devnet_dir(args)
    state = await devnet.up(state_dir, args.port, args.oracle_port, epoch_seconds=args.epoch_seconds, say=out.note)
    out.emit(
        {"state_dir": str(state_dir), **state.model_dump(mode="json"), "keys": _keys(state_dir, state)},
        lambda: _render_state(out, state_dir, state),
    )
    return ExitStatus.OK


async def down(args: argparse.Namespace) -> ExitStatus:
    out = Output(args)
    state_dir = devnet_dir(args)
    state = devnet.read_state(state_dir)
    if state is None:
        raise NotFound(f"no devnet in {state_dir}")
    registered = await _registered_agents(state)
    left_running = devnet.running_agents(state_dir)
    stopped = devnet.down(state_dir, say=out.note)
    running_keys = {agent.agent for agent in left_running}
    for provider, agent in registered.items():
        if agent not in running_keys:
            out.note(
                f"agent for provider {provider} (key {agent}, set on the devnet's chain) was not started by devnet "
                "up; if it runs, stop it yourself"
            )
    out.emit(
        {
            "state_dir": str(state_dir),
            "stopped": stopped,
            "agents_left_running": [agent.model_dump() for agent in left_running],
            "agents_registered": [{"provider": p, "agent": a} for p, a in registered.items()],
        },
        lambda: None,
    )
    return ExitStatus.OK


async def _registered_agents(state: devnet.DevnetState) -> dict[str, str]:
    """The agent keys set on the devnet's chain by provider; none when its chain does not answer (it is down)."""
    w3 = connect(state.rpc_url, timeout=5)
    try:
        return await ExchangeClient(w3, state.deployment).agents()
    except (ChainUnreachable, aiohttp.ClientError, OSError, asyncio.TimeoutError, Web3Exception):
        return {}
    finally:
        await w3.provider.disconnect()


async def status(args: argparse.Namespace) -> ExitStatus:
    out = Output(args)
    current = await devnet.status(devnet_dir(args))

    def human() -> None:
        out.fields(
            f"devnet in {current.state_dir}: {'running' if current.running else 'not running'}",
            [
                ("anvil", "alive" if current.anvil_alive else "stopped"),
                ("block", current.block_number),
                ("oracle", "healthy" if current.oracle_healthy else "alive" if current.oracle_alive else "stopped"),
                ("rpc", current.state.rpc_url if current.state else None),
                ("oracle url", current.state.oracle_url if current.state else None),
            ],
        )

    out.emit(current, human)
    return ExitStatus.OK if current.running else ExitStatus.FAILED
