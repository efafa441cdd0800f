"""Which signer a key or an address makes."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from offchain.chain.tx.manager import TxManager


def test_a_private_key_string_is_refused_as_an_address(tmp_path):
    with pytest.raises(ValueError, match="SecretStr"):
        TxManager(None, tmp_path / "db", "0x" + "11" * 32, 1)


def test_a_secret_key_signs_locally(tmp_path):
    manager = TxManager(None, tmp_path / "db", SecretStr("0x" + "11" * 32), 1)
    try:
        assert manager.address == "0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A"
    finally:
        manager.close()
