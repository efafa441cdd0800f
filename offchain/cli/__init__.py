"""`gpuex`: the exchange's command line, a thin layer over the library (`offchain.market.exchange`,
`offchain.market.offers`, `offchain.ops.devnet`, the agent and oracle services). Each command parses its arguments
(`offchain.cli.args`, `offchain.cli.parse`), resolves the network (`offchain.cli.network`) and key
(`offchain.cli.keys`), calls the library and renders the result (`offchain.cli.output`) for people or, with
`--json`, for scripts.

Exit status (`ExitStatus`): 0 done; 1 the action failed (a revert, named after its custom error; a transaction
failure; not found; an unreachable RPC); 2 bad input (usage, a missing key or setting, the wrong network); 130
interrupted. Every error is one line on stderr: `gpuex: error: ...`.

Each module named in `COMMAND_MODULES` has `register(subparsers)` adding its commands; a new command group is one
more name there.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import sys

import aiohttp
from pydantic import ValidationError
from web3.exceptions import Web3Exception

from offchain.chain.contracts import ArtifactMissing
from offchain.chain.rpc import ChainUnreachable
from offchain.chain.tx.oneshot import TxFailed
from offchain.cli.args import CliParser, ExitStatus, UsageError, add_common_options, invalid
from offchain.config import KeyConfigError
from offchain.market.exchange import ExchangeError, InsufficientAllowance
from offchain.market.renterclient import RenterApiError
from offchain.ops.deploy import DeployError
from offchain.ops.devnet import DevnetError
from offchain.oracle.metrics import MetricsFormatError
from offchain.telemetry.source import TelemetryError

COMMAND_MODULES = ("devnet", "provider", "listing", "offers", "rental", "agent", "oracle", "web", "account")

#: Errors of an action that could not be done: `ExitStatus.FAILED`. A node that does not answer is `ChainUnreachable`
#: wherever the package meets it; the transport errors after it are those of other endpoints (an agent, an oracle).
FAILURES = (
    ExchangeError,
    TxFailed,
    DevnetError,
    DeployError,
    TelemetryError,
    ArtifactMissing,
    ChainUnreachable,
    aiohttp.ClientError,
    OSError,
    asyncio.TimeoutError,
    Web3Exception,
    RenterApiError,
    MetricsFormatError,
)


def build_parser() -> CliParser:
    parser = CliParser(prog="gpuex", description="gpuex: a GPU compute exchange settled on chain")
    add_common_options(parser, top_level=True)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"offchain.cli.{name}").register(commands)
    return parser


def _error(message: object) -> None:
    lines = str(message).strip().splitlines() or [type(message).__name__]
    print(f"gpuex: error: {lines[0]}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Runs one `gpuex` command and returns its exit status (an `ExitStatus`, or what argparse exited with)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse already reported
        return exc.code if isinstance(exc.code, int) else ExitStatus.OK
    try:
        status = args.handler(args)
        if inspect.iscoroutine(status):
            status = asyncio.run(status)
        return status or ExitStatus.OK
    except BrokenPipeError:  # the reader went away (`gpuex ... | head`): nothing more to say, and nowhere to say it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitStatus.FAILED
    except InsufficientAllowance as exc:
        _error(f"{exc} (re-run with --approve)")
        return ExitStatus.FAILED
    except (UsageError, KeyConfigError) as exc:
        _error(exc)
        return ExitStatus.USAGE
    except ValidationError as exc:
        _error(invalid(exc, "settings"))
        return ExitStatus.USAGE
    except FAILURES as exc:
        _error(exc)
        return ExitStatus.FAILED
    except KeyboardInterrupt:
        return ExitStatus.INTERRUPTED
