"""Revert data named after the contracts' custom errors."""

from __future__ import annotations

import pytest
from eth_abi import encode
from eth_utils import keccak

from offchain.chain.tx.reverts import RevertDecoder


def selector(signature):
    return keccak(text=signature)[:4]


@pytest.fixture(scope="module")
def decoder():
    return RevertDecoder.from_artifacts("RentalEscrow", "ProviderRegistry")


def test_decoder_names_an_escrow_custom_error_with_its_arguments(decoder):
    data = selector("Escrow_NotYetFinalizable(uint256,uint256)") + encode(["uint256", "uint256"], [7, 1_700])
    assert decoder.decode(data) == "Escrow_NotYetFinalizable: 7, 1700"


def test_decoder_names_an_error_without_arguments(decoder):
    assert decoder.decode(selector("Escrow_EmptyBatch()")) == "Escrow_EmptyBatch"


def test_decoder_formats_addresses_and_registry_errors(decoder):
    address = "0x" + "ab" * 20
    data = selector("Escrow_SignerNotInOracleSet(address)") + encode(["address"], [address])
    assert decoder.decode(data) == f"Escrow_SignerNotInOracleSet: {address}"


def test_decoder_reads_error_strings_and_panics(decoder):
    assert decoder.decode(selector("Error(string)") + encode(["string"], ["nope"])) == "Error: nope"
    assert decoder.decode(selector("Panic(uint256)") + encode(["uint256"], [0x11])) == "Panic: 0x11"


def test_decoder_reports_unknown_selectors_and_empty_reverts(decoder):
    assert decoder.decode(bytes.fromhex("deadbeef")) == "unknown error 0xdeadbeef"
    assert decoder.decode(b"") == "reverted without data"
