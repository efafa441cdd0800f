"""`offchain.ops.deploy.deploy` against Brownie's anvil: a fresh deployment, an idempotent re-run, a dry run that sends
nothing, governance reconciliation, and refusals when the record and the chain or the request disagree."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from brownie import chain, web3
from eth_account import Account

from offchain.chain import deployments
from offchain.chain.contracts import contract
from offchain.chain.reads import read_once
from offchain.chain.rpc import connect
from offchain.chain.tx.oneshot import TxFailed, Wallet
from offchain.ops.deploy import DeployError, DeployRequest, SuiteParams, deploy, verify
from tests.offchain.conftest import ORACLES

PARAMS = SuiteParams(start_timeout=30, report_grace=20, governance_delay=60)


@pytest.fixture
def record_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(deployments.DIR_ENV, str(tmp_path))
    return tmp_path


@pytest.fixture
def deployer_account(accounts):
    """A fresh key with gas money, so every test predicts addresses from its own nonce."""
    account = Account.create()
    accounts[0].transfer(account.address, "100 ether")
    return account


def request(**overrides) -> DeployRequest:
    values = dict(
        network="rehearsal",
        treasury=ORACLES[0].address,
        oracles=[o.address for o in ORACLES],
        threshold=2,
        params=PARAMS,
    )
    values.update(overrides)
    return DeployRequest(**values)


def run_deploy(rpc_url, account, req, dry_run=False, lines=None):
    lines = lines if lines is not None else []

    async def go():
        w3 = connect(rpc_url)
        try:
            return await deploy(w3, Wallet(w3, account), req, dry_run, say=lines.append)
        finally:
            await w3.provider.disconnect()

    return asyncio.run(go())


def read(rpc_url, record, call):
    return read_once(rpc_url, record.registry, record.escrow, call)


def test_fresh_deployment_writes_a_record_that_matches_the_chain(rpc_url, record_dir, deployer_account):
    record = run_deploy(rpc_url, deployer_account, request())
    assert record.chain_id == web3.eth.chain_id
    assert record.test_token and record.payment_token == record.stake_token
    assert deployments.load(record.chain_id) == record
    assert read(rpc_url, record, lambda r: r.suite_settings()).registry_escrow == record.escrow
    oracle_set = read(rpc_url, record, lambda r: r.oracle_set())
    assert (oracle_set.signers, oracle_set.threshold) == (tuple(o.address for o in ORACLES), 2)
    assert read(rpc_url, record, lambda r: r.start_timeout()) == 30
    assert web3.eth.get_code(record.registry, record.start_block)
    assert not web3.eth.get_code(record.registry, record.start_block - 1)


def test_rerun_reuses_the_deployment_and_sends_nothing(rpc_url, record_dir, deployer_account):
    first = run_deploy(rpc_url, deployer_account, request())
    nonce = web3.eth.get_transaction_count(deployer_account.address)
    lines = []
    again = run_deploy(rpc_url, deployer_account, request(), lines=lines)
    assert again == first
    assert web3.eth.get_transaction_count(deployer_account.address) == nonce
    assert any("nothing to send" in line for line in lines)


def test_dry_run_sends_nothing_and_writes_no_record(rpc_url, record_dir, deployer_account):
    lines = []
    assert run_deploy(rpc_url, deployer_account, request(), dry_run=True, lines=lines) is None
    assert web3.eth.get_transaction_count(deployer_account.address) == 0
    assert not list(record_dir.glob("*.json"))
    assert any("[dry run] would deploy ProviderRegistry" in line for line in lines)


def test_rerun_brings_fee_treasury_and_oracle_set_to_the_request(rpc_url, record_dir, deployer_account):
    first = run_deploy(rpc_url, deployer_account, request())
    changed = request(
        oracles=[ORACLES[1].address],
        threshold=1,
        treasury=ORACLES[2].address,
        params=SuiteParams(start_timeout=30, report_grace=20, governance_delay=60, fee_bps=500),
    )
    lines = []
    dry = run_deploy(rpc_url, deployer_account, changed, dry_run=True, lines=lines)
    assert dry is None and sum("[dry run] would send" in line for line in lines) == 3
    assert any("would send scheduleOracleSet" in line for line in lines)
    record = run_deploy(rpc_url, deployer_account, changed)
    fee = read(rpc_url, record, lambda r: r.fee_config())
    assert (fee.fee_bps, fee.treasury) == (500, ORACLES[2].address)
    # The new oracle set is only scheduled: the old one still decides, and the record says so.
    oracle_set = read(rpc_url, record, lambda r: r.oracle_set())
    assert (oracle_set.signers, oracle_set.threshold) == (tuple(o.address for o in ORACLES), 2)
    assert record.config.oracles == first.config.oracles and record.config.fee_bps == 500
    upcoming = read(rpc_url, record, lambda r: r.upcoming_oracle_set())
    assert (upcoming.signers, upcoming.threshold) == ((ORACLES[1].address,), 1)

    lines = []
    run_deploy(rpc_url, deployer_account, changed, lines=lines)
    assert any("run again then to activate it" in line for line in lines)
    assert read(rpc_url, record, lambda r: r.oracle_set()).version == 1

    chain.sleep(61)
    chain.mine()
    record = run_deploy(rpc_url, deployer_account, changed)
    oracle_set = read(rpc_url, record, lambda r: r.oracle_set())
    assert (oracle_set.version, oracle_set.signers, oracle_set.threshold) == (2, (ORACLES[1].address,), 1)
    assert deployments.load(record.chain_id).config.oracles == [ORACLES[1].address]


def test_changing_an_immutable_parameter_is_refused(rpc_url, record_dir, deployer_account):
    run_deploy(rpc_url, deployer_account, request())
    with pytest.raises(DeployError, match="start_timeout 60 asked but the suite was deployed with 30"):
        run_deploy(rpc_url, deployer_account, request(params=SuiteParams(start_timeout=60, report_grace=20)))


def test_a_record_the_chain_does_not_hold_is_refused(rpc_url, record_dir, deployer_account):
    record = run_deploy(rpc_url, deployer_account, request())
    lost = record.model_copy(update={"registry": Account.create().address})
    deployments.save(lost)
    with pytest.raises(DeployError, match="has no code"):
        run_deploy(rpc_url, deployer_account, request())


def test_verify_detects_a_record_pointing_at_another_suite(rpc_url, record_dir, deployer_account):
    record = run_deploy(rpc_url, deployer_account, request())
    swapped = record.model_copy(update={"payment_token": record.registry})

    async def go():
        w3 = connect(rpc_url)
        try:
            await verify(w3, swapped)
        finally:
            await w3.provider.disconnect()

    with pytest.raises(DeployError, match="escrow.paymentToken"):
        asyncio.run(go())


def test_only_the_owner_may_reconcile(rpc_url, record_dir, deployer_account, accounts):
    run_deploy(rpc_url, deployer_account, request())
    stranger = Account.create()
    accounts[0].transfer(stranger.address, "1 ether")
    with pytest.raises(DeployError, match="not the deployer"):
        run_deploy(rpc_url, stranger, request(params=dataclasses.replace(PARAMS, fee_bps=1)))


def test_an_unreachable_threshold_is_refused():
    with pytest.raises(ValueError, match="threshold 4 exceeds the 3 oracles"):
        request(threshold=4)


def test_wallet_names_the_custom_error_before_sending(rpc_url, record_dir, deployer_account):
    record = run_deploy(rpc_url, deployer_account, request())
    nonce = web3.eth.get_transaction_count(deployer_account.address)

    async def go():
        w3 = connect(rpc_url)
        try:
            registry = contract(w3, "ProviderRegistry", record.registry)
            await Wallet(w3, deployer_account).transact(registry.functions.pauseOffer(7))
        finally:
            await w3.provider.disconnect()

    with pytest.raises(TxFailed, match="^Registry_UnknownOffer: 7$"):
        asyncio.run(go())
    assert web3.eth.get_transaction_count(deployer_account.address) == nonce
