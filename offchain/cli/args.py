"""The command line's parser and what every command shares in it: the common options, command registration, the
exit statuses, usage errors, and human amounts and prices turned into token units."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NoReturn, Sequence

from offchain.cli.commands import COMMANDS
from offchain.ops.devnetdir import DEFAULT_DIR as DEFAULT_DEVNET_DIR

if TYPE_CHECKING:  # imported where used: `gpuex --help` imports no more than this module and the standard library
    from pydantic import ValidationError

    from offchain.market.offers import TokenInfo

NETWORK_ENV = "GPUEX_NETWORK"
RPC_URL_ENV = "GPUEX_RPC_URL"
DEVNET_DIR_ENV = "GPUEX_DEVNET_DIR"


class ExitStatus(IntEnum):
    """What `gpuex` exits with."""

    OK = 0
    FAILED = 1  # the action failed: a revert, a transaction failure, not found, an unreachable RPC
    USAGE = 2  # bad input: usage, a missing key or setting, the wrong network
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it)


class UsageError(Exception):
    """Bad input: an argument, a missing setting, the wrong network. `gpuex` exits with `ExitStatus.USAGE`."""


class CliParser(argparse.ArgumentParser):
    """Reports a usage error as one line, `gpuex: error: ...`, and exits with `ExitStatus.USAGE`."""

    def error(self, message: str) -> NoReturn:
        self.exit(ExitStatus.USAGE, f"gpuex: error: {message} (see `{self.prog} --help`)\n")

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        """Everything after the first `--` is a job's command (`args.job_command`), for the commands that take one
        (`add_job_command`); argparse would take its words for options or for earlier positionals."""
        words = list(sys.argv[1:] if args is None else args)
        command: list[str] = []
        if "--" in words:
            split = words.index("--")
            words, command = words[:split], words[split + 1 :]
        parsed = super().parse_args(words, namespace)
        if command and not hasattr(parsed, "job_command"):
            self.error(f"this command takes nothing after `--`: {' '.join(command)}")
        if hasattr(parsed, "job_command"):
            parsed.job_command = command
        return parsed


def add_common_options(parser: argparse.ArgumentParser, top_level: bool) -> None:
    """The options every command takes. They are defined on the top-level parser (with defaults) and on every
    command (suppressed when absent), so `gpuex --json offers search` and `gpuex offers search --json` agree."""
    default = (lambda value: value) if top_level else (lambda value: argparse.SUPPRESS)
    group = parser.add_argument_group("common options")
    group.add_argument(
        "--network",
        default=default(None),
        help=f"'devnet', or a network name or chain id with a deployment record (${NETWORK_ENV})",
    )
    group.add_argument("--rpc-url", default=default(None), help=f"the chain's JSON-RPC URL (${RPC_URL_ENV})")
    group.add_argument(
        "--state-dir",
        type=Path,
        default=default(None),
        help=f"the devnet's state directory (${DEVNET_DIR_ENV}, default ./{DEFAULT_DEVNET_DIR})",
    )
    group.add_argument(
        "--json", action="store_true", default=default(False), help="print the result as JSON, for scripts"
    )
    group.add_argument(
        "--profile",
        default=default(None),
        help="the config file's profile to use ($GPUEX_PROFILE, default: the file's default; see `gpuex config`)",
    )


def add_command(
    subparsers: argparse._SubParsersAction,
    name: str,
    handler: Callable[[argparse.Namespace], Any],
    help: str | None = None,
    description: str | None = None,
) -> argparse.ArgumentParser:
    """Adds a command that runs `handler(args)` (a function returning an `ExitStatus`, or a coroutine of one). A
    top-level command's help is its line in `offchain.cli.commands.COMMANDS`."""
    help = help if help is not None else COMMANDS[name].help
    parser = subparsers.add_parser(name, help=help, description=description or help)
    add_common_options(parser, top_level=False)
    parser.set_defaults(handler=handler)
    return parser


def add_job_command(parser: argparse.ArgumentParser) -> None:
    """The command takes a job's command and arguments after `--` (`args.job_command`, a list of words). Call it
    after the parser's last argument: its usage line is written then."""
    parser.set_defaults(job_command=[])
    parser.usage = parser.format_usage().removeprefix("usage: ").rstrip() + " [-- CMD [ARG ...]]"


def add_group(subparsers: argparse._SubParsersAction, name: str) -> argparse._SubParsersAction:
    """Adds a top-level command group (`gpuex provider ...`), with its help from `offchain.cli.commands.COMMANDS`,
    and returns the subparsers its commands go into."""
    help = COMMANDS[name].help
    parser = subparsers.add_parser(name, help=help, description=help)
    return parser.add_subparsers(title="commands", metavar="COMMAND", required=True)


def env_sets(name: str) -> bool:
    """Whether the environment sets the setting `name` or a nested key of it (`NAME__FIELD`), in any case."""
    name = name.upper()
    return any(key.upper() == name or key.upper().startswith(name + "__") for key in os.environ)


def invalid(exc: ValidationError, what: str) -> UsageError:
    """One line out of a pydantic validation failure: the first bad field and why."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    return UsageError(f"bad {what}: {where + ': ' if where else ''}{message}")


def price_units(token: TokenInfo, per_hour_price, what: str = "--price-per-hour") -> int:
    """Token units per second of a human price per hour; refuses a price that rounds to zero."""
    from offchain.market.units import per_hour

    units = token.per_second(per_hour_price)
    if units <= 0:
        raise UsageError(
            f"{what} {per_hour_price} rounds to 0 {token.symbol} per second; the smallest price is {per_hour(token, 1)}"
        )
    return units


def amount_units(token: TokenInfo, amount, what: str = "--amount") -> int:
    """Token units of a human amount; refuses amounts finer than the token's decimals."""
    try:
        return token.to_units(amount)
    except ValueError as exc:
        raise UsageError(f"{what}: {exc}") from None


def stop_on_signals() -> asyncio.Event:
    """An event that SIGINT or SIGTERM sets: long-running commands (services, servers) stop cleanly on either."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop
