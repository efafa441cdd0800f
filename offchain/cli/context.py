"""What every `gpuex` command shares: the common options, the network, RPC and deployment they resolve to, the
account key, and output for people (rich) or scripts (`--json`).

Network resolution, first match wins:

1. `--network` / `GPUEX_NETWORK`: `devnet` (the devnet in `--state-dir`), or a network name or chain id with a
   record in `deployments/`; a live network also needs `--rpc-url` / `GPUEX_RPC_URL`;
2. `--rpc-url` / `GPUEX_RPC_URL` alone: the record of the chain that RPC serves;
3. neither: the devnet, when `--state-dir` (`GPUEX_DEVNET_DIR`, default `./gpuex-devnet`) holds one.

The RPC's chain id must be the record's. Keys come from `GPUEX_KEY` or `GPUEX_KEY_FILE` (a file holding the hex
key), never from the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import aiohttp
from eth_account import Account
from eth_account.signers.local import LocalAccount
from pydantic import BaseModel, SecretStr, ValidationError
from rich.console import Console
from rich.table import Table
from web3 import AsyncWeb3
from web3.exceptions import Web3Exception

from offchain.ops import deployments
from offchain.chain.rpc import connect
from offchain.config import read_key
from offchain.ops.deployments import Deployment
from offchain.ops.devnet import DEFAULT_DIR as DEFAULT_DEVNET_DIR
from offchain.ops.devnet import DevnetState, read_state
from offchain.market.exchange import ActionResult, ExchangeClient, ExchangeError
from offchain.market.offers import SECONDS_PER_HOUR, TokenInfo
from offchain.chain.tx.oneshot import Wallet

NETWORK_ENV = "GPUEX_NETWORK"
RPC_URL_ENV = "GPUEX_RPC_URL"
DEVNET_DIR_ENV = "GPUEX_DEVNET_DIR"
KEY_ENV = "GPUEX_KEY"
KEY_FILE_ENV = "GPUEX_KEY_FILE"
DEVNET = "devnet"


class UsageError(Exception):
    """Bad input: an argument, a missing setting, the wrong network. `gpuex` exits with status 2."""


class CliParser(argparse.ArgumentParser):
    """Reports a usage error as one line, `gpuex: error: ...`, and exits with status 2."""

    def error(self, message: str) -> None:
        self.exit(2, f"gpuex: error: {message} (see `{self.prog} --help`)\n")


def add_common_options(parser: argparse.ArgumentParser, top_level: bool) -> None:
    """The options every command takes. They are defined on the top-level parser (with defaults) and on every
    command (suppressed when absent), so `gpuex --json offers search` and `gpuex offers search --json` agree."""
    default = (lambda value: value) if top_level else (lambda value: argparse.SUPPRESS)
    group = parser.add_argument_group("common options")
    group.add_argument("--network", default=default(None),
                       help=f"'devnet', or a network name or chain id with a deployment record (${NETWORK_ENV})")
    group.add_argument("--rpc-url", default=default(None), help=f"the chain's JSON-RPC URL (${RPC_URL_ENV})")
    group.add_argument("--state-dir", type=Path, default=default(None),
                       help=f"the devnet's state directory (${DEVNET_DIR_ENV}, default ./{DEFAULT_DEVNET_DIR})")
    group.add_argument("--json", action="store_true", default=default(False),
                       help="print the result as JSON, for scripts")


def add_command(subparsers: argparse._SubParsersAction, name: str, handler: Callable[[argparse.Namespace], Any],
                help: str, description: str | None = None) -> argparse.ArgumentParser:
    """Adds a command that runs `handler(args)` (a function returning an exit status, or a coroutine of one)."""
    parser = subparsers.add_parser(name, help=help, description=description or help)
    add_common_options(parser, top_level=False)
    parser.set_defaults(handler=handler)
    return parser


def add_group(subparsers: argparse._SubParsersAction, name: str, help: str) -> argparse._SubParsersAction:
    """Adds a command group (`gpuex provider ...`) and returns the subparsers its commands go into."""
    parser = subparsers.add_parser(name, help=help, description=help)
    return parser.add_subparsers(title="commands", metavar="COMMAND", required=True)


def devnet_dir(args: argparse.Namespace) -> Path:
    return Path(args.state_dir or os.environ.get(DEVNET_DIR_ENV) or DEFAULT_DEVNET_DIR).resolve()


def env_sets(name: str) -> bool:
    """Whether the environment sets the setting `name` or a nested key of it (`NAME__FIELD`), in any case."""
    name = name.upper()
    return any(key.upper() == name or key.upper().startswith(name + "__") for key in os.environ)


def load_key(key_env: str, key_file_env: str) -> SecretStr:
    """The private key from `$key_env` or the file named by `$key_file_env` (exactly one of them)."""
    inline, path = os.environ.get(key_env), os.environ.get(key_file_env)
    if not inline and not path:
        raise UsageError(f"no key: set {key_file_env} to a file holding the hex private key (or {key_env})")
    if path and not Path(path).is_file():
        raise UsageError(f"{key_file_env}={path}: no such file")
    return read_key(SecretStr(inline) if inline else None, Path(path) if path else None,
                    f"{key_env} / {key_file_env}")


def load_account() -> LocalAccount:
    """The account of `GPUEX_KEY` / `GPUEX_KEY_FILE`."""
    return Account.from_key(load_key(KEY_ENV, KEY_FILE_ENV).get_secret_value())


def invalid(exc: ValidationError, what: str) -> UsageError:
    """One line out of a pydantic validation failure: the first bad field and why."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    return UsageError(f"bad {what}: {where + ': ' if where else ''}{message}")


@dataclass
class Context:
    """A command's resolved network: the RPC connection, the suite's record and, with a key, the acting account."""

    rpc_url: str
    deployment: Deployment
    w3: AsyncWeb3
    client: ExchangeClient
    devnet: DevnetState | None
    devnet_dir: Path

    @property
    def network(self) -> str:
        return DEVNET if self.devnet is not None else self.deployment.network


async def _chain_id(w3: AsyncWeb3, rpc_url: str, devnet: DevnetState | None) -> int:
    try:
        return await w3.eth.chain_id
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError, Web3Exception) as exc:
        hint = " (is the devnet up? see `gpuex devnet status`)" if devnet is not None else ""
        raise ExchangeError(f"cannot reach the RPC at {rpc_url}: {exc}{hint}") from None


@asynccontextmanager
async def open_context(args: argparse.Namespace, *, key: bool) -> AsyncIterator[Context]:
    """Resolves the network (see the module's docstring), checks the RPC serves the record's chain and, with
    `key`, loads the acting account; closes the connection on the way out."""
    network = args.network or os.environ.get(NETWORK_ENV) or None
    rpc_url = args.rpc_url or os.environ.get(RPC_URL_ENV) or None
    state_dir = devnet_dir(args)
    account = load_account() if key else None
    devnet = None
    deployment: Deployment | None = None
    if network is None and rpc_url is None:
        if read_state(state_dir) is None:
            raise UsageError(f"no network: pass --network and --rpc-url (or set {NETWORK_ENV} and {RPC_URL_ENV}), "
                             "or start a local one with `gpuex devnet up`")
        network = DEVNET
    if network == DEVNET:
        devnet = read_state(state_dir)
        if devnet is None:
            raise UsageError(f"no devnet in {state_dir}: run `gpuex devnet up` (or pass --state-dir)")
        deployment = devnet.deployment
        rpc_url = rpc_url or devnet.rpc_url
    elif network is not None:
        try:
            deployment = deployments.find(network)
        except deployments.DeploymentNotFound as exc:
            raise UsageError(str(exc)) from None
        if rpc_url is None:
            raise UsageError(f"no RPC URL for network {network}: pass --rpc-url or set {RPC_URL_ENV}")
    assert rpc_url is not None
    w3 = connect(rpc_url)
    try:
        chain_id = await _chain_id(w3, rpc_url, devnet)
        if deployment is None:
            try:
                deployment = deployments.load(chain_id)
            except deployments.DeploymentNotFound as exc:
                raise UsageError(f"{exc}, the chain of {rpc_url}") from None
        elif chain_id != deployment.chain_id:
            raise UsageError(f"wrong network: the RPC at {rpc_url} serves chain {chain_id}, but the "
                             f"{deployment.network} deployment is on chain {deployment.chain_id}")
        wallet = Wallet(w3, account) if account is not None else None
        yield Context(rpc_url=rpc_url, deployment=deployment, w3=w3,
                      client=ExchangeClient(w3, deployment, wallet), devnet=devnet, devnet_dir=state_dir)
    finally:
        await w3.provider.disconnect()


# ------------------------------------------------------------------------------------------------------ output


class Output:
    """Results as JSON on stdout with `--json`; otherwise tables and lines for people. Progress notes go to stdout
    for people and to stderr with `--json`, so that stdout stays one JSON document."""

    def __init__(self, args: argparse.Namespace):
        self.json = bool(args.json)
        width = None if sys.stdout.isatty() else 200
        self.console = Console(highlight=False, soft_wrap=False, width=width)
        self._notes = Console(stderr=True, highlight=False, width=width) if self.json else self.console

    def note(self, text: str) -> None:
        self._notes.print(text, markup=False)

    def emit(self, result: BaseModel | list | dict, human: Callable[[], None]) -> None:
        """Prints `result` as JSON, or calls `human` to render it for people."""
        if self.json:
            print(json.dumps(_plain(result), indent=2))
        else:
            human()

    def json_line(self, result: BaseModel | dict) -> None:
        """One JSON object on one line (for streams such as `rental watch --json`)."""
        print(json.dumps(_plain(result)), flush=True)

    def print(self, *renderables: Any) -> None:
        self.console.print(*renderables)

    def sent(self, result: ActionResult) -> None:
        """A line per transaction an action sent."""
        for tx in result.transactions:
            self.print(f"sent {tx.action}: {tx.tx_hash} (block {tx.block_number}, gas {tx.gas_used:,})")

    def fields(self, title: str, rows: list[tuple[str, Any]]) -> None:
        """A title line, then a two-column table of named values."""
        self.console.print(title, style="bold", markup=False)
        table = Table(show_header=False, box=None, pad_edge=False, padding=(0, 2))
        table.add_column()
        table.add_column()
        for name, value in rows:
            table.add_row(f"  {name}", "-" if value is None else str(value))
        self.console.print(table)


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def money(token: TokenInfo, units: int) -> str:
    """An amount for people: `1,000.00 tUSD`, `7.2108 tUSD` (at least two decimals, no trailing zeros beyond)."""
    text = f"{token.to_human(units):,.{token.decimals}f}"
    if "." in text:
        whole, fraction = text.split(".")
        fraction = fraction.rstrip("0").ljust(min(2, token.decimals), "0")
        text = f"{whole}.{fraction}" if fraction else whole
    return f"{text} {token.symbol}"


def per_hour(token: TokenInfo, price_per_second: int) -> str:
    """A per-second price in token units as a price per hour for people: `7.20 tUSD/h`."""
    return f"{money(token, price_per_second * SECONDS_PER_HOUR)}/h"


def gib(mib: int) -> str:
    return f"{mib / 1024:.1f} GiB"


def when(timestamp: int | None) -> str | None:
    """A chain timestamp as local time."""
    return None if timestamp is None else datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def percent_bps(bps: int | None) -> str | None:
    return None if bps is None else f"{bps / 100:.1f}%"


def short(address: str) -> str:
    return f"{address[:6]}…{address[-4:]}"


def price_units(token: TokenInfo, per_hour_price, what: str = "--price-per-hour") -> int:
    """Token units per second of a human price per hour; refuses a price that rounds to zero."""
    units = token.per_second(per_hour_price)
    if units <= 0:
        raise UsageError(f"{what} {per_hour_price} rounds to 0 {token.symbol} per second; the smallest price is "
                         f"{per_hour(token, 1)}")
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
