"""Deployment records: written atomically, found by chain id or network name, refused when ambiguous."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from offchain.chain import deployments
from offchain.chain.deployments import Deployment, DeploymentNotFound, SuiteConfig

CONFIG = SuiteConfig(
    min_stake_per_gpu=1,
    unbonding_period=1,
    fee_bps=250,
    fee_cap_bps=1000,
    start_timeout=60,
    report_grace=30,
    sla_bps=9500,
    sla_slash_bps=2000,
    start_slash_bps=1000,
    governance_delay=172_800,
    treasury="0x" + "11" * 20,
    oracles=["0x" + "22" * 20],
    threshold=1,
)


def record(chain_id: int, network: str) -> Deployment:
    return Deployment(
        chain_id=chain_id,
        network=network,
        deployer="0x" + "33" * 20,
        registry="0x" + "44" * 20,
        escrow="0x" + "55" * 20,
        payment_token="0x" + "66" * 20,
        stake_token="0x" + "66" * 20,
        test_token=True,
        start_block=5,
        config=CONFIG,
    )


def test_save_then_load_and_find(tmp_path):
    saved = record(11155111, "sepolia")
    path = deployments.save(saved, tmp_path)
    assert path == tmp_path / "11155111.json"
    assert not list(tmp_path.glob("*.tmp"))
    assert deployments.load(11155111, tmp_path) == saved
    assert deployments.find("sepolia", tmp_path) == saved
    assert deployments.find("11155111", tmp_path) == saved


def test_the_directory_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(deployments.DIR_ENV, str(tmp_path))
    deployments.save(record(5, "goerli"))
    assert (tmp_path / "5.json").is_file()


def test_missing_and_ambiguous_networks_are_refused(tmp_path):
    with pytest.raises(DeploymentNotFound, match="no gpuex deployment for chain 1"):
        deployments.load(1, tmp_path)
    with pytest.raises(DeploymentNotFound, match="no gpuex deployment for network 'holesky'"):
        deployments.find("holesky", tmp_path)
    deployments.save(record(31337, "dev"), tmp_path)
    deployments.save(record(1337, "dev"), tmp_path)
    with pytest.raises(DeploymentNotFound, match="names several deployments"):
        deployments.find("dev", tmp_path)


def test_addresses_are_checked_and_checksummed():
    assert record(1, "x").registry == "0x" + "44" * 20
    with pytest.raises(ValidationError, match="not an address"):
        record(1, "x").model_validate({**record(1, "x").model_dump(), "escrow": "0x1234"})
