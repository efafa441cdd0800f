"""Runs a Brownie script's `main` by module name: `python -m scripts.run demo [--network development]`.

`brownie run` imports a script under a module name made of its absolute path joined with dots, which breaks
when a directory above the project has a dot in its name (a temporary clone, a CI workspace). This loads the
project the same way and imports the script as `scripts.<name>` instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from brownie import network, project

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.run", description=__doc__.splitlines()[0])
    parser.add_argument("script", help="script module under scripts/, e.g. demo")
    parser.add_argument("--network", default="development", help="Brownie network id")
    args = parser.parse_args(argv)

    loaded = project.load(PROJECT_ROOT)
    loaded.load_config()
    # What `brownie run` does too, so that scripts can `from brownie import <Contract>`.
    loaded._add_to_main_namespace()
    network.connect(args.network)
    try:
        importlib.import_module(f"scripts.{args.script}").main()
    except Exception as exc:  # one readable line, like `brownie run`, and a failing exit status
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        network.disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
