"""`gpuex web`: the read-only marketplace page of the command's network (`offchain.web`) on its own server, until
SIGINT or SIGTERM. The devnet's oracle already serves the same page under `/web/`; this command serves it for any
network whose deployment record and RPC the command resolves, with no key."""

from __future__ import annotations

import argparse

from aiohttp import web

from offchain.cli import parse
from offchain.cli.args import ExitStatus, UsageError, add_command, stop_on_signals
from offchain.cli.network import open_context
from offchain.cli.output import Output
from offchain.web.app import WEB_PREFIX, create_standalone_app

DEFAULT_PORT = 8710


def register(commands: argparse._SubParsersAction) -> None:
    parser = add_command(commands, "web", serve)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    parser.add_argument(
        "--port", type=parse.positive_int, default=DEFAULT_PORT, help="port to listen on (default %(default)s)"
    )
    parser.add_argument(
        "--confirmations",
        type=int,
        default=0,
        metavar="N",
        help="blocks the page stays behind the head, against reorgs (default %(default)s)",
    )


async def serve(args: argparse.Namespace) -> ExitStatus:
    out = Output(args)
    if args.confirmations < 0:
        raise UsageError("--confirmations must not be negative")
    async with open_context(args, key=False) as ctx:
        rpc_url, deployment = ctx.rpc_url, ctx.deployment
    runner = web.AppRunner(create_standalone_app(rpc_url, deployment, confirmations=args.confirmations))
    await runner.setup()
    try:
        await web.TCPSite(runner, args.host, args.port).start()
        out.note(
            f"gpuex web: http://{args.host}:{args.port}{WEB_PREFIX}/ ({deployment.network}, chain "
            f"{deployment.chain_id}, indexed from block {deployment.start_block} through {rpc_url})"
        )
        await stop_on_signals().wait()
    finally:
        await runner.cleanup()
    return ExitStatus.OK
