"""Fee arithmetic, revert decoding and backoff: the pure parts of the transaction manager."""

from __future__ import annotations

import asyncio

import pytest
from eth_abi import encode
from eth_utils import keccak
from pydantic import SecretStr

from offchain.chain.txmanager import Backoff, Fees, RevertDecoder, TxManager, bumped_fees, initial_fees

GWEI = 10**9


def selector(signature):
    return keccak(text=signature)[:4]


def test_initial_fees_leave_room_for_the_base_fee_to_double():
    assert initial_fees(base_fee=10 * GWEI, suggested_tip=2 * GWEI, max_fee_cap=500 * GWEI) == Fees(22 * GWEI, 2 * GWEI)


def test_initial_fees_are_capped():
    fees = initial_fees(base_fee=300 * GWEI, suggested_tip=2 * GWEI, max_fee_cap=100 * GWEI)
    assert fees == Fees(100 * GWEI, 2 * GWEI)


def test_bump_raises_tip_and_max_fee_by_the_bump_percentage():
    assert bumped_fees(Fees(40 * GWEI, 2 * GWEI), 0, GWEI, 12.5, 500 * GWEI) == Fees(45 * GWEI, 2_250_000_000)


def test_bump_follows_a_risen_base_fee():
    bumped = bumped_fees(Fees(3 * GWEI, GWEI), base_fee=50 * GWEI, suggested_tip=GWEI, bump_percent=12.5,
                         max_fee_cap=500 * GWEI)
    assert bumped == Fees(2 * 50 * GWEI + 1_125_000_000, 1_125_000_000)


def test_bump_raises_zero_fees_by_at_least_one_wei():
    assert bumped_fees(Fees(0, 0), 0, 0, 12.5, GWEI) == Fees(1, 1)


def test_bump_stops_at_the_cap():
    assert bumped_fees(Fees(90 * GWEI, GWEI), 0, GWEI, 12.5, 100 * GWEI) == Fees(100 * GWEI, 1_125_000_000)
    assert bumped_fees(Fees(100 * GWEI, GWEI), 0, GWEI, 12.5, 100 * GWEI) is None


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


def test_backoff_doubles_up_to_its_cap_and_resets():
    backoff = Backoff(0.5, 3.0)
    delays = []
    for _ in range(5):
        backoff.failed()
        delays.append(backoff.delay)
    assert delays == [1.0, 2.0, 3.0, 3.0, 3.0]
    backoff.succeeded()
    assert backoff.delay == 0.5


def test_a_private_key_string_is_refused_as_an_address(tmp_path):
    with pytest.raises(ValueError, match="SecretStr"):
        TxManager(None, tmp_path / "db", "0x" + "11" * 32, 1)


def test_a_secret_key_signs_locally(tmp_path):
    manager = TxManager(None, tmp_path / "db", SecretStr("0x" + "11" * 32), 1)
    try:
        assert manager.address == "0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A"
    finally:
        manager.close()


def test_submit_stores_unstarted_and_wait_times_out_when_nothing_ticks(tmp_path):
    async def scenario():
        manager = TxManager(None, tmp_path / "db", SecretStr("0x" + "11" * 32), 1)
        try:
            record = await manager.submit("finalize:1", "0x" + "22" * 20, "0x4bb278f3")
            assert (record.state.value, record.nonce, record.hash, record.attempts) == ("unstarted", None, None, 0)
            with pytest.raises(TimeoutError):
                await manager.wait_confirmed("finalize:1", timeout=0.2)
            with pytest.raises(KeyError):
                await manager.wait_confirmed("finalize:2", timeout=0.2)
        finally:
            manager.close()

    asyncio.run(scenario())
