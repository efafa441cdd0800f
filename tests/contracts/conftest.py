"""Fixtures of the contract tests: a deployed suite on a real anvil, funded roles and helpers to list, rent and
report. The roles' accounts and the token come from tests/conftest.py.

Module-scoped deployments plus autouse `fn_isolation`: every test starts from the same chain state.
"""

from __future__ import annotations

import pytest
from brownie import chain

from offchain.protocol.reports import EscrowDomain, sign_batch, submit_args
from scripts.deploy import USDC, SuiteParams, deploy_suite
from tests.contracts.helpers import ORACLE_KEYS, ORACLES, PRICE, new_gpu_hashes


@pytest.fixture(autouse=True)
def isolation(fn_isolation):
    pass


@pytest.fixture(scope="module")
def params():
    return SuiteParams()


@pytest.fixture(scope="module")
def suite(deployer, treasury, token, params):
    """Registry + escrow with a 2-of-3 oracle set; payment and stake token are the same tUSD."""
    return deploy_suite(deployer, token, token, treasury, [o.address for o in ORACLES], 2, params)


@pytest.fixture(scope="module")
def registry(suite):
    return suite.registry


@pytest.fixture(scope="module")
def escrow(suite):
    return suite.escrow


@pytest.fixture(scope="module", autouse=True)
def funded(token, suite, deployer, provider, provider2, renter, renter2):
    """Every provider and renter holds 1,000,000 tUSD and has approved both contracts."""
    for account in (provider, provider2, renter, renter2):
        token.mint(account, 1_000_000 * USDC, {"from": deployer})
        token.approve(suite.registry, 2**256 - 1, {"from": account})
        token.approve(suite.escrow, 2**256 - 1, {"from": account})


@pytest.fixture
def list_offer(registry, params):
    """Stakes, registers GPUs and lists an offer for `provider`; returns the offer id."""

    def _list_offer(
        provider,
        gpus=2,
        price=PRICE,
        util_floor_bps=10_000,
        min_duration=60,
        max_duration=30 * 86_400,
        stake=None,
        egress=False,
    ):
        hashes = new_gpu_hashes(gpus)
        registry.stake(stake if stake is not None else params.min_stake_per_gpu * gpus, {"from": provider})
        registry.registerGpus(hashes, {"from": provider})
        terms = (
            b"H100-80GB".ljust(32, b"\0"),
            81_559,
            price,
            min_duration,
            max_duration,
            b"eu-west".ljust(16, b"\0"),
            util_floor_bps,
            egress,
            hashes,
        )
        return registry.createOffer(terms, {"from": provider}).return_value

    return _list_offer


@pytest.fixture
def open_rental(escrow):
    """Opens a rental of `offer_id` for `duration` seconds; returns the rental id."""

    def _open_rental(renter, offer_id, duration=3_600, max_price=None, job=b"\x11" * 32):
        tx = escrow.openRental(
            offer_id, duration, max_price if max_price is not None else 2**64 - 1, job, {"from": renter}
        )
        return tx.return_value

    return _open_rental


@pytest.fixture
def domain(escrow):
    def _domain(version=None):
        return EscrowDomain(
            chain_id=chain.id, escrow=escrow.address, oracle_set_version=version or escrow.oracleSet()["version"]
        )

    return _domain


@pytest.fixture
def submit(escrow, domain, stranger):
    """Signs `reports` with the given oracle keys (default: the first two) under the oracle set `version` (default:
    the current one) and submits them."""

    def _submit(reports, keys=None, sender=None, version=None):
        keys = ORACLE_KEYS[:2] if keys is None else keys
        signed = domain(version)
        sigs = [sign_batch(reports, signed, k) for k in keys]
        return escrow.submitReports(
            *submit_args(reports, sigs, signed.oracle_set_version), {"from": sender or stranger}
        )

    return _submit
