"""`--print-unit` of the long-running commands (`gpuex agent run`, `gpuex oracle serve|keeper`): the command's
systemd unit (`offchain.ops.units`) on stdout, and nothing started."""

from __future__ import annotations

import argparse
from pathlib import Path

from offchain.ops.units import service_unit

UNIT_OPTIONS = ("--print-unit", "--unit-env-file")


def add_unit_options(parser: argparse.ArgumentParser, service: str) -> None:
    parser.add_argument(
        "--print-unit",
        action="store_true",
        help="print a systemd unit that runs this command as configured here, and exit without starting it",
    )
    parser.add_argument(
        "--unit-env-file",
        type=Path,
        default=Path(f"/etc/gpuex/{service}.env"),
        metavar="FILE",
        help="the unit's EnvironmentFile, where its key goes (default %(default)s)",
    )


def print_unit(args: argparse.Namespace, description: str, runs_containers: bool) -> None:
    """Prints the unit of the command `args` came from, its unit options left out."""
    unit = service_unit(description, _without_unit_options(args.command_line), args.unit_env_file, runs_containers)
    print(unit.render(), end="")


def _without_unit_options(command_line: list[str]) -> list[str]:
    """`command_line` without the unit options, spelt in full or abbreviated as argparse takes them."""
    kept: list[str] = []
    skip_value = False
    for word in command_line:
        name, has_value, _ = word.partition("=")
        option = next((o for o in UNIT_OPTIONS if len(name) > 2 and o.startswith(name)), None)
        if skip_value:
            skip_value = False
        elif option == "--unit-env-file":
            skip_value = not has_value
        elif option is None:
            kept.append(word)
    return kept
