"""`gpuex`: the exchange's command line, a thin layer over the library (`offchain.market.exchange`,
`offchain.market.offers`, `offchain.ops.devnet`, the agent and oracle services). Each command parses its arguments
(`offchain.cli.args`, `offchain.cli.parse`), resolves the network (`offchain.cli.network`) and key
(`offchain.cli.keys`), calls the library and renders the result (`offchain.cli.output`) for people or, with
`--json`, for scripts.

Exit status (`ExitStatus`): 0 done; 1 the action failed (a revert, named after its custom error; a transaction
failure; not found; an unreachable RPC); 2 bad input (usage, a missing key or setting, the wrong network); 130
interrupted. Every error is one line on stderr: `gpuex: error: ...`.

Each top-level command has a line in `offchain.cli.commands.COMMANDS` naming the module whose `register(commands)`
adds it; a new command is one more line there. Only the named command's module is imported (and the library with
it), so `gpuex --help` and a usage error answer at once.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import os
import sys
from typing import NoReturn, Sequence

from offchain.cli.args import CliParser, ExitStatus, UsageError, add_common_options, invalid
from offchain.cli.commands import COMMANDS


def build_parser(command: str | None = None, *, every: bool = True) -> CliParser:
    """The parser of `gpuex`, with every command in full; with `every=False`, only `command` (a top-level command's
    name, or None for none) has its module imported to register it in full, and the others are there by name and
    help alone, which is all `gpuex --help` and argparse's "invalid choice" need."""
    parser = CliParser(prog="gpuex", description="gpuex: a GPU compute exchange settled on chain")
    add_common_options(parser, top_level=True)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    wanted = {entry.module for name, entry in COMMANDS.items() if every or name == command}
    for name, entry in COMMANDS.items():
        if entry.module in wanted:
            importlib.import_module(f"offchain.cli.{entry.module}").register(commands)
            wanted.discard(entry.module)
        elif name not in commands.choices:
            stand_in = commands.add_parser(name, help=entry.help, add_help=False)
            stand_in.add_argument("words", nargs=argparse.REMAINDER)  # parsed again in full (see `main`)
            stand_in.set_defaults(handler=None)
    return parser


class _ProbeError(Exception):
    pass


class _CommandProbe(argparse.ArgumentParser):
    """Finds which command a command line names, without the commands' parsers: the common options are skipped
    with their values, and the first word left is the command."""

    def __init__(self) -> None:
        super().__init__(add_help=False)
        add_common_options(self, top_level=True)
        self.add_argument("command", nargs="?")

    def error(self, message: str) -> NoReturn:
        raise _ProbeError(message)


def _command_named(argv: Sequence[str]) -> str | None:
    try:
        known, _ = _CommandProbe().parse_known_args(list(argv))
    except _ProbeError:  # the full parser reports it
        return None
    return known.command if known.command in COMMANDS else None


def _failures() -> tuple[type[BaseException], ...]:
    """Errors of an action that could not be done: `ExitStatus.FAILED`. A node that does not answer is
    `ChainUnreachable` wherever the package meets it; the transport errors after it are those of other endpoints
    (an agent, an oracle). Imported only when an error is being reported, like the library that raises them."""
    import aiohttp
    from web3.exceptions import Web3Exception

    from offchain.chain.contracts import ArtifactMissing
    from offchain.chain.rpc import ChainUnreachable
    from offchain.chain.tx.oneshot import TxFailed
    from offchain.market.exchange import ExchangeError
    from offchain.market.renterclient import RenterApiError
    from offchain.ops.deploy import DeployError
    from offchain.ops.devnet import DevnetError
    from offchain.oracle.metrics import MetricsFormatError
    from offchain.telemetry.source import TelemetryError

    return (
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


def _report(exc: Exception) -> ExitStatus:
    """Says what went wrong in one line and returns the exit status it means; re-raises an error no command should
    meet (a bug, with its traceback)."""
    from pydantic import ValidationError

    from offchain.config import KeyConfigError
    from offchain.market.exchange import InsufficientAllowance

    if isinstance(exc, InsufficientAllowance):
        _error(f"{exc} (re-run with --approve)")
        return ExitStatus.FAILED
    if isinstance(exc, (UsageError, KeyConfigError)):
        _error(exc)
        return ExitStatus.USAGE
    if isinstance(exc, ValidationError):
        _error(invalid(exc, "settings"))
        return ExitStatus.USAGE
    if isinstance(exc, _failures()):
        _error(exc)
        return ExitStatus.FAILED
    raise exc


def _error(message: object) -> None:
    lines = str(message).strip().splitlines() or [type(message).__name__]
    print(f"gpuex: error: {lines[0]}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Runs one `gpuex` command and returns its exit status (an `ExitStatus`, or what argparse exited with)."""
    command_line = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser(_command_named(command_line), every=False).parse_args(command_line)
        if args.handler is None:  # the probe missed the command: parse again with every command in full
            args = build_parser().parse_args(command_line)
    except SystemExit as exc:  # --help, or a usage error argparse already reported
        return exc.code if isinstance(exc.code, int) else ExitStatus.OK
    args.command_line = command_line  # as given, for `--print-unit`
    try:
        status = args.handler(args)
        if inspect.iscoroutine(status):
            status = asyncio.run(status)
        return status or ExitStatus.OK
    except BrokenPipeError:  # the reader went away (`gpuex ... | head`): nothing more to say, and nowhere to say it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitStatus.FAILED
    except KeyboardInterrupt:
        return ExitStatus.INTERRUPTED
    except Exception as exc:
        return _report(exc)
