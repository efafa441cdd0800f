"""`gpuex --help` and a usage error import none of the library: only the named command's module is loaded."""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys

import pytest

from offchain.chain.contracts import PROJECT_ROOT
from offchain.cli import _command_named, build_parser
from offchain.cli.args import CliParser
from offchain.cli.commands import COMMANDS

#: What takes most of a second to import, and what `gpuex --help` therefore must not.
HEAVY = ("web3", "eth_account", "aiohttp", "pydantic", "rich", "offchain.market", "offchain.chain")

LOADED_AFTER = """
import contextlib, io, json, sys
from offchain.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    status = main(sys.argv[1:])
print(json.dumps([status, sorted(sys.modules)]))
"""


def _loaded_after(*argv: str, among: tuple[str, ...] = HEAVY) -> tuple[int, list[str]]:
    """Runs `gpuex ARGV` in a fresh interpreter; returns its exit status and the packages of `among` (and their
    modules) it imported."""
    done = subprocess.run(
        [sys.executable, "-c", LOADED_AFTER, *argv],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    status, modules = json.loads(done.stdout)
    return status, [m for m in modules if m in among or m.startswith(tuple(p + "." for p in among))]


@pytest.mark.parametrize(
    "argv, status",
    [(["--help"], 0), ([], 2), (["no-such-command"], 2), (["--network"], 2), (["--json", "--help"], 0)],
)
def test_help_and_usage_errors_import_none_of_the_library(argv, status):
    assert _loaded_after(*argv) == (status, [])


def test_a_command_imports_its_own_module_only():
    others = ("offchain.cli.rental", "offchain.cli.agent", "offchain.cli.oracle", "offchain.agent", "offchain.oracle")
    status, loaded = _loaded_after("offers", "--help", among=("offchain.cli.offers", *others))
    assert (status, loaded) == (0, ["offchain.cli.offers"])


def test_a_command_is_found_past_the_common_options_and_their_values():
    assert _command_named(["--network", "devnet", "offers", "search", "--json"]) == "offers"
    assert _command_named(["--state-dir", "rental", "--json", "balance"]) == "balance"  # a value, not the command
    assert _command_named(["--rpc-url=http://127.0.0.1:1", "rent", "1", "--", "rental"]) == "rent"
    assert _command_named(["--profile"]) is None
    assert _command_named(["nothing-of-ours"]) is None


def test_every_module_registers_exactly_the_commands_the_table_gives_it():
    for module in {entry.module for entry in COMMANDS.values()}:
        parser = CliParser(prog="gpuex")
        commands = parser.add_subparsers()
        importlib.import_module(f"offchain.cli.{module}").register(commands)
        assert set(commands.choices) == {name for name, entry in COMMANDS.items() if entry.module == module}, module


def test_the_full_parser_and_the_lazy_one_list_the_same_commands_with_the_same_help():
    def listing(parser: CliParser) -> list[tuple[str, str | None]]:
        (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        return [(choice.dest, choice.help) for choice in commands._choices_actions]

    assert listing(build_parser()) == listing(build_parser(None, every=False))
    assert [name for name, _ in listing(build_parser())] == list(COMMANDS)


def test_a_command_the_probe_missed_parses_with_no_handler_so_main_parses_again_in_full():
    lazy = build_parser("offers", every=False).parse_args(["rental", "status", "7"])
    assert lazy.handler is None
    assert build_parser().parse_args(["rental", "status", "7"]).handler is not None
