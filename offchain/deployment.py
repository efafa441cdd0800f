"""Deployment facts shared by the Brownie scripts and the off-chain services."""

from __future__ import annotations

import rlp
from eth_utils import keccak, to_canonical_address, to_checksum_address


def create_address(deployer: str, nonce: int) -> str:
    """The address a contract created by `deployer` with account nonce `nonce` gets (CREATE)."""
    return to_checksum_address(keccak(rlp.encode([to_canonical_address(deployer), nonce]))[12:])
