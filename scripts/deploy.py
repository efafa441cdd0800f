"""Deploys a gpuex suite: ProviderRegistry bound to the RentalEscrow deployed right after it.

`deploy_suite` is the one deployment routine: tests, the gas table and the demo all call it.
"""

from __future__ import annotations

from dataclasses import dataclass

from brownie import ProviderRegistry, RentalEscrow, TestStablecoin, accounts

from offchain.deployment import create_address

USDC = 10**6


@dataclass(frozen=True)
class SuiteParams:
    """Protocol parameters fixed at deployment (fee is the only one governance may change later)."""

    min_stake_per_gpu: int = 100 * USDC
    unbonding_period: int = 7 * 24 * 3600
    fee_bps: int = 250
    fee_cap_bps: int = 1_000
    start_timeout: int = 600
    report_grace: int = 300
    sla_bps: int = 9_500
    sla_slash_bps: int = 2_000
    start_slash_bps: int = 1_000


@dataclass(frozen=True)
class Suite:
    registry: object
    escrow: object
    payment_token: object
    stake_token: object


def deploy_suite(deployer, payment_token, stake_token, treasury, oracles=(), threshold=1, params=SuiteParams()):
    """Deploys the registry and escrow from `deployer` and, if given, sets the oracle set.

    The registry takes the escrow's address at construction; it is predicted from the deployer's nonce,
    and the escrow's constructor reverts if the prediction was wrong.
    """
    escrow_address = create_address(deployer.address, deployer.nonce + 1)
    registry = ProviderRegistry.deploy(
        stake_token, escrow_address, params.min_stake_per_gpu, params.unbonding_period, {"from": deployer}
    )
    escrow = RentalEscrow.deploy(
        (
            payment_token,
            registry,
            deployer,
            treasury,
            params.fee_bps,
            params.fee_cap_bps,
            params.start_timeout,
            params.report_grace,
            params.sla_bps,
            params.sla_slash_bps,
            params.start_slash_bps,
        ),
        {"from": deployer},
    )
    if oracles:
        escrow.setOracleSet(list(oracles), threshold, {"from": deployer})
    return Suite(registry, escrow, payment_token, stake_token)


def main():
    """Deploys a test token and a suite to the active (development) network."""
    deployer = accounts[0]
    token = TestStablecoin.deploy(deployer, {"from": deployer})
    suite = deploy_suite(deployer, token, token, treasury=deployer, oracles=[deployer], threshold=1)
    print(f"TestStablecoin   {token.address}")
    print(f"ProviderRegistry {suite.registry.address}")
    print(f"RentalEscrow     {suite.escrow.address}")
