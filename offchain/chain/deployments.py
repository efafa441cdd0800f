"""Deployment records: `deployments/<chainId>.json`, written by the deploy script and `gpuex devnet up`, read by
every front end to find the contracts on a chain.

A record holds addresses, the deployment blocks (where event readers start) and the parameters the suite was
deployed with; never a key or a URL with credentials in it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import rlp
from eth_utils import keccak, to_canonical_address, to_checksum_address
from pydantic import BaseModel, ConfigDict, Field, field_validator

from offchain.chain.contracts import PROJECT_ROOT
from offchain.chain.reads import SuiteParameters
from offchain.config import ChainSettings

DEFAULT_DIR = PROJECT_ROOT / "deployments"
DIR_ENV = "GPUEX_DEPLOYMENTS_DIR"


def create_address(deployer: str, nonce: int) -> str:
    """The address a contract created by `deployer` with account nonce `nonce` gets (CREATE); the deploy script
    predicts the escrow's address with it before the registry that names it is deployed."""
    return to_checksum_address(keccak(rlp.encode([to_canonical_address(deployer), nonce]))[12:])


class DeploymentNotFound(LookupError):
    """No record for the chain or network asked for."""


class SuiteConfig(SuiteParameters):
    """The protocol parameters and governance settings a suite was deployed with."""

    fee_bps: int
    treasury: str
    oracles: list[str]
    threshold: int


class Deployment(BaseModel):
    """Where a gpuex suite lives on one chain."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    chain_id: int = Field(ge=1)
    network: str  # the Brownie network id it was deployed through, or "devnet"
    deployer: str
    registry: str
    escrow: str
    payment_token: str
    stake_token: str
    test_token: bool  # the payment token is our TestStablecoin (it has a faucet)
    start_block: int = Field(ge=0)  # the registry's deployment block: event readers start here
    config: SuiteConfig

    @field_validator("deployer", "registry", "escrow", "payment_token", "stake_token")
    @classmethod
    def _checksummed(cls, value: str) -> str:
        from web3 import Web3

        if not Web3.is_address(value):
            raise ValueError(f"not an address: {value}")
        return Web3.to_checksum_address(value)

    def chain_settings(self, rpc_url: str) -> ChainSettings:
        """What the oracle and agent need to reach this suite through `rpc_url`."""
        return ChainSettings(rpc_url=rpc_url, chain_id=self.chain_id, registry=self.registry, escrow=self.escrow)


def deployments_dir() -> Path:
    """`$GPUEX_DEPLOYMENTS_DIR`, else the project's `deployments/`."""
    configured = os.environ.get(DIR_ENV)
    return Path(configured) if configured else DEFAULT_DIR


def record_path(chain_id: int, directory: Path | None = None) -> Path:
    return (directory or deployments_dir()) / f"{chain_id}.json"


def load(chain_id: int, directory: Path | None = None) -> Deployment:
    """The record of `chain_id`; `DeploymentNotFound` if there is none."""
    path = record_path(chain_id, directory)
    if not path.is_file():
        raise DeploymentNotFound(f"no gpuex deployment for chain {chain_id} (looked for {path})")
    return Deployment.model_validate_json(path.read_text())


def find(network: str, directory: Path | None = None) -> Deployment:
    """The record deployed through `network` (a network name such as `sepolia` or `devnet`, or a chain id)."""
    if network.isdigit():
        return load(int(network), directory)
    folder = directory or deployments_dir()
    matches = [d for d in all_records(folder) if d.network == network]
    if not matches:
        raise DeploymentNotFound(f"no gpuex deployment for network {network!r} in {folder}")
    if len(matches) > 1:
        chains = ", ".join(str(d.chain_id) for d in matches)
        raise DeploymentNotFound(f"network {network!r} names several deployments (chains {chains}); pass the chain id")
    return matches[0]


def all_records(directory: Path | None = None) -> list[Deployment]:
    folder = directory or deployments_dir()
    if not folder.is_dir():
        return []
    return [Deployment.model_validate_json(p.read_text()) for p in sorted(folder.glob("*.json"))]


def save(deployment: Deployment, directory: Path | None = None) -> Path:
    """Writes the record atomically (a crash never leaves half a file) and returns its path."""
    path = record_path(deployment.chain_id, directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(deployment.model_dump(mode="json"), indent=2) + "\n")
    os.replace(tmp, path)
    return path
