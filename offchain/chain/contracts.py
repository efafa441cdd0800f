"""Contract handles for the off-chain services, whose ABIs come from Brownie's build artifacts
(`build/contracts/*.json`), so no ABI is written twice."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from web3 import AsyncWeb3
from web3.contract import AsyncContract

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS_DIR = PROJECT_ROOT / "build" / "contracts"


class ArtifactMissing(RuntimeError):
    """The Brownie build artifact is absent: run `make compile` (or `brownie compile`) first."""


@lru_cache(maxsize=None)
def load_artifact(name: str, artifacts_dir: Path = ARTIFACTS_DIR) -> dict[str, Any]:
    """The Brownie build artifact of contract `name` (abi, bytecode, ...)."""
    path = artifacts_dir / f"{name}.json"
    if not path.is_file():
        raise ArtifactMissing(f"no build artifact {path}; run `make compile` first")
    artifact: dict[str, Any] = json.loads(path.read_text())
    return artifact


def abi(name: str) -> list[dict[str, Any]]:
    """The ABI of contract `name` from its build artifact."""
    entries: list[dict[str, Any]] = load_artifact(name)["abi"]
    return entries


def contract(w3: AsyncWeb3[Any], name: str, address: str) -> AsyncContract:
    """An async contract handle for the deployed `name` at `address`."""
    return w3.eth.contract(address=AsyncWeb3.to_checksum_address(address), abi=abi(name))
