"""Settings from the environment: prefixes, nested chain settings, keys inline or from a file, clear errors."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from offchain.config import DEFAULT_CONFIRMATIONS, FALLBACK_CONFIRMATIONS, ChainSettings, OracleSettings

KEY = "0x" + "ab" * 32
REGISTRY = "0x" + "11" * 20
ESCROW = "0x" + "22" * 20


@pytest.fixture
def oracle_env(monkeypatch):
    monkeypatch.setenv("GPUEX_ORACLE_CHAIN__RPC_URL", "http://127.0.0.1:9999")
    monkeypatch.setenv("GPUEX_ORACLE_CHAIN__CHAIN_ID", "11155111")
    monkeypatch.setenv("GPUEX_ORACLE_CHAIN__REGISTRY", REGISTRY)
    monkeypatch.setenv("GPUEX_ORACLE_CHAIN__ESCROW", ESCROW)
    return monkeypatch


def test_oracle_settings_come_from_the_prefixed_environment(oracle_env):
    oracle_env.setenv("GPUEX_ORACLE_KEY", KEY)
    oracle_env.setenv("GPUEX_ORACLE_PEERS", '["http://peer-1:8700", "http://peer-2:8700"]')
    settings = OracleSettings()
    assert settings.chain.chain_id == 11155111
    assert settings.chain.registry == "0x1111111111111111111111111111111111111111"
    assert settings.peers == ["http://peer-1:8700", "http://peer-2:8700"]
    assert settings.key.get_secret_value() == KEY
    assert KEY not in repr(settings)


def test_a_key_file_is_read_and_normalised(oracle_env, tmp_path):
    key_file = tmp_path / "oracle.key"
    key_file.write_text("AB" * 32 + "\n")
    oracle_env.setenv("GPUEX_ORACLE_KEY_FILE", str(key_file))
    assert OracleSettings().key.get_secret_value() == KEY


@pytest.mark.parametrize(
    "env, message",
    [
        ({}, "give exactly one of the key or the key file"),
        ({"GPUEX_ORACLE_KEY": KEY, "GPUEX_ORACLE_KEY_FILE": "/dev/null"}, "give exactly one"),
        ({"GPUEX_ORACLE_KEY": "0x1234"}, "not a 32-byte hex private key"),
    ],
)
def test_bad_keys_are_refused_with_a_reason(oracle_env, env, message):
    for name, value in env.items():
        oracle_env.setenv(name, value)
    with pytest.raises(ValidationError, match=message):
        OracleSettings()


def test_an_invalid_contract_address_is_refused(oracle_env):
    oracle_env.setenv("GPUEX_ORACLE_KEY", KEY)
    oracle_env.setenv("GPUEX_ORACLE_CHAIN__ESCROW", "0x1234")
    with pytest.raises(ValidationError, match="not an address"):
        OracleSettings()


@pytest.mark.parametrize(
    "chain_id, confirmations",
    [(1, 12), (11155111, 12), (84532, 10), (11155420, 10), (421614, 20), (8453, 10), (1337, 1), (31337, 1)],
)
def test_each_network_has_its_default_confirmations(chain_id, confirmations):
    assert ChainSettings(chain_id=chain_id, registry=REGISTRY, escrow=ESCROW).confirmations == confirmations
    assert DEFAULT_CONFIRMATIONS[chain_id] == confirmations


def test_an_unknown_chain_waits_as_long_as_ethereum():
    assert ChainSettings(chain_id=777, registry=REGISTRY, escrow=ESCROW).confirmations == FALLBACK_CONFIRMATIONS


def test_confirmations_set_in_the_environment_win_over_the_default(oracle_env):
    oracle_env.setenv("GPUEX_ORACLE_KEY", KEY)
    assert OracleSettings().chain.confirmations == 12
    oracle_env.setenv("GPUEX_ORACLE_CHAIN__CONFIRMATIONS", "3")
    assert OracleSettings().chain.confirmations == 3


@pytest.mark.parametrize("value", ["0", "-1", "1001", "twelve", "1.5"])
def test_bad_confirmations_are_refused(oracle_env, value):
    oracle_env.setenv("GPUEX_ORACLE_KEY", KEY)
    oracle_env.setenv("GPUEX_ORACLE_CHAIN__CONFIRMATIONS", value)
    with pytest.raises(ValidationError, match="confirmations"):
        OracleSettings()


def test_a_negative_reorg_window_is_refused(oracle_env):
    oracle_env.setenv("GPUEX_ORACLE_KEY", KEY)
    assert OracleSettings().reorg_window_seconds == 3_600
    oracle_env.setenv("GPUEX_ORACLE_REORG_WINDOW_SECONDS", "-1")
    with pytest.raises(ValidationError, match="reorg_window_seconds"):
        OracleSettings()
