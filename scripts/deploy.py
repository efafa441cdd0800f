"""Deploys a gpuex suite to the active Brownie network: `brownie run scripts/deploy.py --network sepolia`.

`main` is the front end for live networks (and any other): it reads the deployer key and the suite's settings
from the environment (`GPUEX_DEPLOY_*`, see `DeploySettings`), reaches the chain through the network's RPC as
Brownie resolved it, and runs `offchain.ops.deploy.deploy`, which is idempotent, checks what a re-run finds, writes
`deployments/<chainId>.json` and has a dry-run mode (`GPUEX_DEPLOY_DRY_RUN=1`).

`deploy_suite` deploys through Brownie's own accounts and returns Brownie contract objects, for the tests and
the gas table; it takes the same constructor arguments from `offchain.ops.deploy`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from brownie import ProviderRegistry, RentalEscrow, network, web3
from brownie._config import CONFIG
from eth_account import Account
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from offchain.chain.deployments import create_address
from offchain.chain.reads import ChainReader, read_once
from offchain.chain.rpc import connect
from offchain.chain.tx.oneshot import Wallet
from offchain.config import read_key
from offchain.ops import roles
from offchain.ops.deploy import USDC, DeployRequest, SuiteParams, deploy, escrow_args, registry_args

__all__ = ["USDC", "SuiteParams", "Suite", "deploy_suite", "DeploySettings", "main"]

T = TypeVar("T")
#: The parameters `deploy_suite` deploys with unless told otherwise.
DEFAULT_PARAMS = SuiteParams()


@dataclass(frozen=True)
class Suite:
    registry: object
    escrow: object
    payment_token: object
    stake_token: object

    def read(self, call: Callable[[ChainReader], Awaitable[T]]) -> T:
        """What `call` returns from a `ChainReader` of this suite on Brownie's network, such as
        `suite.read(lambda r: r.rental(rental_id))`: the contracts' views for Brownie scripts and tests."""
        return read_once(web3.provider.endpoint_uri, self.registry.address, self.escrow.address, call)


def deploy_suite(deployer, payment_token, stake_token, treasury, oracles=(), threshold=1, params=DEFAULT_PARAMS):
    """Deploys the registry and escrow from the Brownie account `deployer`, with the oracle set `oracles` (the
    deployer alone, 1 of 1, when none is given).

    The registry takes the escrow's address at construction; it is predicted from the deployer's nonce,
    and the escrow's constructor reverts if the prediction was wrong.
    """
    escrow_address = create_address(deployer.address, deployer.nonce + 1)
    registry = ProviderRegistry.deploy(*registry_args(params, stake_token, escrow_address), {"from": deployer})
    signers = [str(o) for o in oracles] or [deployer.address]
    escrow = RentalEscrow.deploy(
        *escrow_args(params, payment_token, registry, deployer, treasury, signers, threshold), {"from": deployer}
    )
    return Suite(registry, escrow, payment_token, stake_token)


class DeploySettings(BaseSettings):
    """What `main` deploys, from `GPUEX_DEPLOY_*` environment variables (`GPUEX_DEPLOY_ORACLES` is a JSON list).

    The key is never taken from the command line: `GPUEX_DEPLOY_KEY` or `GPUEX_DEPLOY_KEY_FILE`. On a development
    network without either, anvil's first dev account deploys.
    """

    model_config = SettingsConfigDict(env_prefix="GPUEX_DEPLOY_", extra="forbid")

    key: SecretStr | None = None
    key_file: Path | None = None
    oracles: list[str] = []  # default: the deployer alone, 1-of-1 (a single-oracle testnet)
    threshold: int = Field(default=1, ge=1)
    treasury: str | None = None  # default: the deployer
    payment_token: str | None = None  # default: the recorded one, else a new TestStablecoin
    stake_token: str | None = None  # default: the payment token
    fee_bps: int = Field(default=SuiteParams.fee_bps, ge=0)
    start_timeout: int = Field(default=SuiteParams.start_timeout, ge=1)
    report_grace: int = Field(default=SuiteParams.report_grace, ge=0)
    min_stake_per_gpu: int = Field(default=SuiteParams.min_stake_per_gpu, ge=0)
    unbonding_period: int = Field(default=SuiteParams.unbonding_period, ge=0)
    # Seconds a scheduled oracle set waits before it can take effect; fixed for the suite's life.
    governance_delay: int = Field(default=SuiteParams.governance_delay, ge=0, lt=2**32)
    dry_run: bool = False

    @model_validator(mode="after")
    def _key_source(self) -> "DeploySettings":
        if self.key is not None or self.key_file is not None:
            self.key = read_key(self.key, self.key_file, "deployer key")
            self.key_file = None
        return self

    def request(self, network_name: str, deployer: str) -> DeployRequest:
        params = SuiteParams(
            fee_bps=self.fee_bps,
            start_timeout=self.start_timeout,
            report_grace=self.report_grace,
            min_stake_per_gpu=self.min_stake_per_gpu,
            unbonding_period=self.unbonding_period,
            governance_delay=self.governance_delay,
        )
        return DeployRequest(
            network=network_name,
            treasury=self.treasury or deployer,
            oracles=self.oracles or [deployer],
            threshold=self.threshold,
            payment_token=self.payment_token,
            stake_token=self.stake_token,
            params=params,
        )


def main():
    settings = DeploySettings()
    name = network.show_active()
    if settings.key is not None:
        account = Account.from_key(settings.key.get_secret_value())
    elif CONFIG.network_type == "development":
        account = Account.from_key(roles.KEYS["deployer"])
    else:
        raise SystemExit(f"set GPUEX_DEPLOY_KEY or GPUEX_DEPLOY_KEY_FILE to deploy to the live network {name}")

    async def run() -> None:
        w3 = connect(web3.provider.endpoint_uri, timeout=60)
        try:
            await deploy(w3, Wallet(w3, account), settings.request(name, account.address), settings.dry_run)
        finally:
            await w3.provider.disconnect()

    asyncio.run(run())
