"""Output for people (rich tables and lines) or, with `--json`, for scripts; the human formatting of amounts, prices,
sizes, durations and percentages is `offchain.market.units`' (the web page's too), of times and addresses here."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import Any, Callable

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from offchain.market import units
from offchain.market.exchange import ActionResult
from offchain.market.units import money, per_hour

__all__ = ["Output", "format_duration", "format_gib", "money", "per_hour", "percent_bps", "short", "when"]


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

    def action(self, result: ActionResult, summary: str) -> None:
        """An action's result: as JSON, or its transactions and then `summary` for people."""

        def human() -> None:
            self.sent(result)
            self.print(summary)

        self.emit(result, human)

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


def format_gib(mib: int) -> str:
    """A size in MiB in GiB for people: `79.6 GiB` (`offchain.cli.parse.gib` reads one from the command line)."""
    return units.gib(mib)


def format_duration(seconds: int) -> str:
    """`5400` -> `1h 30m`, `45` -> `45s`, `0` -> `0s` (`offchain.cli.parse.duration` reads it back)."""
    return units.duration(seconds)


def when(timestamp: int | None) -> str | None:
    """A chain timestamp as local time."""
    return None if timestamp is None else datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def percent_bps(bps: int | None) -> str | None:
    return units.percent(units.fraction_bps(bps))


def short(address: str) -> str:
    return f"{address[:6]}…{address[-4:]}"
