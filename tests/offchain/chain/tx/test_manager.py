"""The transaction manager against Brownie's anvil: states, idempotency, dry-runs, nonces, bumps and reorgs.

Each test sends from its own funded key, so the nonces it checks are its own.
"""

from __future__ import annotations

import asyncio

import pytest
from brownie import web3
from pydantic import SecretStr
from web3.exceptions import TransactionNotFound

from offchain.chain.tx.manager import TxManager
from offchain.chain.tx.store import TxState
from tests.offchain.chain.helpers import (
    first_report_calldata,
    fork_point,
    latest_block,
    manual_mining,
    mine,
    rental_state,
    reorg,
    rpc,
    sent_count,
    settle,
    started_manager,
    started_rental,
)

GWEI = 10**9


def test_a_report_batch_moves_from_unstarted_to_confirmed(
    suite, offer, renter, provider, sender, chain_id, db_path, rpc_url
):
    rental = started_rental(suite, renter, provider)
    calldata = first_report_calldata(suite, rental)

    async def scenario():
        async with started_manager(rpc_url, db_path, sender, chain_id, confirmations=2) as manager:
            key = f"reports:{rental}-1"
            submitted = await manager.submit(key, suite.escrow.address, calldata)
            assert submitted.state is TxState.UNSTARTED and submitted.nonce is None and submitted.hash is None
            assert sent_count(sender.address, "pending") == 0

            await manager.tick()
            sent = manager.record(key)
            assert sent.state is TxState.UNCONFIRMED and sent.nonce == 0 and sent.broadcast_at is not None
            assert sent_count(sender.address, "pending") == 1 and sent_count(sender.address) == 0

            mine()
            await manager.tick()
            mined = manager.record(key)
            receipt = web3.eth.get_transaction_receipt(sent.hash)
            assert mined.state is TxState.UNCONFIRMED  # one block deep, two asked for
            assert mined.block_number == receipt.blockNumber and mined.gas_used == receipt.gasUsed

            mine()
            await manager.tick()
            confirmed = manager.record(key)
            assert confirmed.state is TxState.CONFIRMED and confirmed.confirmed_at is not None
            assert confirmed.hash == sent.hash and confirmed.block_hash == "0x" + bytes(receipt.blockHash).hex()
            assert confirmed.gas_limit > receipt.gasUsed and confirmed.effective_gas_price == receipt.effectiveGasPrice
            assert confirmed.error is None and confirmed.attempts == 1

    with manual_mining():
        asyncio.run(scenario())
    assert rental_state(suite, rental).last_seq == 1
    assert sent_count(sender.address) == 1


def test_resubmitting_a_key_returns_the_stored_record_and_sends_nothing(
    suite, offer, renter, provider, sender, chain_id, db_path, rpc_url
):
    rental = started_rental(suite, renter, provider)
    calldata = first_report_calldata(suite, rental)
    key = f"reports:{rental}-1"

    async def scenario():
        async with started_manager(rpc_url, db_path, sender, chain_id) as manager:
            first = await manager.submit(key, suite.escrow.address, calldata)
            assert await manager.submit(key, suite.escrow.address, calldata) == first
            [confirmed] = await settle(manager, key)
            assert confirmed.state is TxState.CONFIRMED

            again = await manager.submit(key, suite.escrow.address, calldata + b"\x00")
            await manager.tick()
            assert again == confirmed == manager.record(key)
            assert [r.key for r in manager.records()] == [key]
            assert len(manager.attempts(key)) == 1

        # A restarted manager on the same database answers the same.
        async with started_manager(rpc_url, db_path, sender, chain_id) as manager:
            assert await manager.submit(key, suite.escrow.address, calldata) == confirmed
            await manager.tick()

    asyncio.run(scenario())
    assert sent_count(sender.address) == 1
    assert rental_state(suite, rental).last_seq == 1


def test_a_dry_run_revert_is_failed_with_the_custom_error_and_nothing_is_sent(
    suite, offer, renter, provider, sender, chain_id, db_path, rpc_url
):
    rental = started_rental(suite, renter, provider, duration=600)
    finalizable_at = rental_state(suite, rental).end + suite.read(lambda r: r.report_grace())
    calldata = first_report_calldata(suite, rental)

    async def scenario():
        async with started_manager(rpc_url, db_path, sender, chain_id) as manager:
            await manager.submit(f"finalize:{rental}", suite.escrow.address, suite.escrow.finalize.encode_input(rental))
            await manager.tick()
            failed = manager.record(f"finalize:{rental}")
            assert failed.state is TxState.FAILED
            assert failed.error == f"dry-run reverted: Escrow_NotYetFinalizable: {rental}, {finalizable_at}"
            assert failed.nonce is None and failed.hash is None and manager.attempts(f"finalize:{rental}") == []
            assert sent_count(sender.address, "pending") == 0

            # The refused call took no nonce: the next transaction gets nonce 0.
            await manager.submit(f"reports:{rental}-1", suite.escrow.address, calldata)
            [report] = await settle(manager, f"reports:{rental}-1")
            assert report.state is TxState.CONFIRMED and report.nonce == 0

    asyncio.run(scenario())
    assert rental_state(suite, rental).last_seq == 1


def test_a_gas_limit_below_the_intrinsic_cost_fails_the_dry_run(
    suite, offer, renter, provider, sender, chain_id, db_path, rpc_url
):
    rental = started_rental(suite, renter, provider)
    calldata = first_report_calldata(suite, rental)

    async def scenario():
        async with started_manager(rpc_url, db_path, sender, chain_id) as manager:
            await manager.submit("tiny", suite.escrow.address, calldata, gas_limit=21_000)
            await manager.tick()
            return manager.record("tiny")

    record = asyncio.run(scenario())
    assert record.state is TxState.FAILED
    assert record.error == "dry-run failed: intrinsic gas too high -- CallGasCostMoreThanGasLimit"
    assert record.nonce is None and sent_count(sender.address, "pending") == 0


def test_a_transaction_the_node_refuses_is_fatal_and_its_nonce_is_reused(
    suite, offer, renter, provider, sender, chain_id, db_path, rpc_url
):
    rental = started_rental(suite, renter, provider)
    calldata = first_report_calldata(suite, rental)
    block_gas_limit = latest_block().gasLimit

    async def scenario():
        async with started_manager(rpc_url, db_path, sender, chain_id) as manager:
            # eth_call accepts a gas limit above the block's; the node refuses to take such a transaction.
            await manager.submit("too-big", suite.escrow.address, calldata, gas_limit=block_gas_limit + 1)
            await manager.submit(f"reports:{rental}-1", suite.escrow.address, calldata)
            return await settle(manager, "too-big", f"reports:{rental}-1")

    fatal, report = asyncio.run(scenario())
    assert fatal.state is TxState.FATAL and fatal.nonce is None
    assert fatal.error == "refused by the node: intrinsic gas too high -- tx.gas_limit > env.block.gas_limit"
    assert report.state is TxState.CONFIRMED and report.nonce == 0
    assert sent_count(sender.address) == 1


def test_the_nonce_is_synced_at_start_with_transactions_sent_elsewhere(
    suite, offer, renter, provider, sender, chain_id, db_path, rpc_url
):
    for nonce in range(2):
        signed = sender.sign_transaction(
            {
                "to": sender.address,
                "value": 1,
                "gas": 21_000,
                "nonce": nonce,
                "maxFeePerGas": 2 * GWEI,
                "maxPriorityFeePerGas": GWEI,
                "chainId": chain_id,
                "type": 2,
            }
        )
        web3.eth.send_raw_transaction(signed.raw_transaction)
    rental = started_rental(suite, renter, provider)
    calldata = first_report_calldata(suite, rental)

    async def scenario():
        async with started_manager(rpc_url, db_path, sender, chain_id) as manager:
            await manager.submit(f"reports:{rental}-1", suite.escrow.address, calldata)
            [record] = await settle(manager, f"reports:{rental}-1")
            return record

    record = asyncio.run(scenario())
    assert record.state is TxState.CONFIRMED and record.nonce == 2
    assert sent_count(sender.address) == 3


def test_a_nonce_taken_by_another_sender_requeues_the_transaction(
    suite, offer, renter, provider, sender, chain_id, db_path, rpc_url
):
    rental = started_rental(suite, renter, provider)
    calldata = first_report_calldata(suite, rental)
    key = f"reports:{rental}-1"

    async def scenario():
        async with started_manager(rpc_url, db_path, sender, chain_id) as manager:
            await manager.submit(key, suite.escrow.address, calldata)
            await manager.tick()
            assert manager.record(key).nonce == 0
            # Someone else with the same key replaces it in the mempool and gets mined.
            intruder = sender.sign_transaction(
                {
                    "to": sender.address,
                    "value": 1,
                    "gas": 21_000,
                    "nonce": 0,
                    "maxFeePerGas": 50 * GWEI,
                    "maxPriorityFeePerGas": 10 * GWEI,
                    "chainId": chain_id,
                    "type": 2,
                }
            )
            web3.eth.send_raw_transaction(intruder.raw_transaction)
            mine()
            await manager.tick()
            requeued = manager.record(key)
            assert requeued.state is TxState.UNSTARTED and requeued.nonce is None
            assert "nonce 0 was used by another transaction" in requeued.error

            await manager.tick()
            assert manager.record(key).nonce == 1
            mine()
            await manager.tick()
            return manager.record(key)

    with manual_mining():
        record = asyncio.run(scenario())
    assert record.state is TxState.CONFIRMED and record.nonce == 1 and record.error is None
    assert sent_count(sender.address) == 2
    assert rental_state(suite, rental).last_seq == 1


def test_a_stuck_transaction_is_bumped_and_the_replacement_lands_under_the_same_nonce(
    suite, offer, renter, provider, sender, chain_id, db_path, rpc_url
):
    rental = started_rental(suite, renter, provider)
    calldata = first_report_calldata(suite, rental)
    key = f"reports:{rental}-1"

    async def scenario():
        async with started_manager(rpc_url, db_path, sender, chain_id, bump_after_blocks=3) as manager:
            await manager.submit(key, suite.escrow.address, calldata)
            await manager.tick()
            [first] = manager.attempts(key)
            # A base-fee spike: the next blocks are mined without our transaction.
            rpc("anvil_setNextBlockBaseFeePerGas", hex(50 * GWEI))
            for blocks_waited in (1, 2):
                mine()
                await manager.tick()
                assert len(manager.attempts(key)) == 1, f"bumped after {blocks_waited} block(s)"
            mine()
            await manager.tick()
            first_again, bump = manager.attempts(key)
            assert first_again == first
            base_fee = latest_block().baseFeePerGas
            assert bump.nonce == first.nonce == 0
            assert bump.max_priority_fee_per_gas >= first.max_priority_fee_per_gas * 1.125
            assert bump.max_fee_per_gas >= max(first.max_fee_per_gas * 1.125, 2 * base_fee)
            mine()
            await manager.tick()
            return first, bump, manager.record(key)

    with manual_mining():
        first, bump, record = asyncio.run(scenario())
    assert record.state is TxState.CONFIRMED and record.hash == bump.hash and record.attempts == 2
    assert web3.eth.get_transaction_receipt(bump.hash).status == 1
    with pytest.raises(TransactionNotFound):
        web3.eth.get_transaction_receipt(first.hash)
    assert sent_count(sender.address) == 1
    assert rental_state(suite, rental).last_seq == 1


def test_bumps_stop_at_the_fee_cap(suite, offer, renter, provider, sender, chain_id, db_path, rpc_url):
    rental = started_rental(suite, renter, provider)
    calldata = first_report_calldata(suite, rental)
    key = f"reports:{rental}-1"
    cap = 5 * GWEI

    async def scenario():
        async with started_manager(rpc_url, db_path, sender, chain_id, bump_after_blocks=1, max_fee_cap=cap) as manager:
            await manager.submit(key, suite.escrow.address, calldata)
            await manager.tick()
            rpc("anvil_setNextBlockBaseFeePerGas", hex(50 * GWEI))
            for _ in range(4):
                mine()
                await manager.tick()
            fees = [a.max_fee_per_gas for a in manager.attempts(key)]
            assert fees[-1] == cap and len(fees) == 2
            assert manager.record(key).state is TxState.UNCONFIRMED
            # The spike passes: the capped attempt lands.
            rpc("anvil_setNextBlockBaseFeePerGas", hex(GWEI))
            mine()
            await manager.tick()
            mine()
            await manager.tick()
            return manager.record(key), manager.attempts(key)

    with manual_mining():
        record, attempts = asyncio.run(scenario())
    assert record.state is TxState.CONFIRMED and record.hash == attempts[-1].hash
    assert sent_count(sender.address) == 1


def test_a_reorged_transaction_is_sent_again_and_lands_once(
    suite, offer, renter, provider, sender, chain_id, db_path, rpc_url
):
    rental = started_rental(suite, renter, provider)
    calldata = first_report_calldata(suite, rental)
    key = f"reports:{rental}-1"

    async def scenario():
        async with started_manager(rpc_url, db_path, sender, chain_id, confirmations=3) as manager:
            snapshot = rpc("evm_snapshot")
            await manager.submit(key, suite.escrow.address, calldata)
            await manager.tick()
            mine()
            await manager.tick()
            before = manager.record(key)
            assert before.state is TxState.UNCONFIRMED and before.block_number is not None
            # The block holding it is replaced: same height, another hash, without the transaction.
            rpc("evm_revert", snapshot)
            rpc("anvil_dropAllTransactions")
            mine()
            assert latest_block().number == before.block_number
            with pytest.raises(TransactionNotFound):
                web3.eth.get_transaction_receipt(before.hash)
            await manager.tick()
            after_reorg = manager.record(key)
            assert after_reorg.state is TxState.UNCONFIRMED and after_reorg.block_number is None
            assert sent_count(sender.address, "pending") == 1  # sent again
            for _ in range(3):
                mine()
                await manager.tick()
            return before, manager.record(key)

    with manual_mining():
        before, record = asyncio.run(scenario())
    assert record.state is TxState.CONFIRMED and record.hash == before.hash and record.attempts == 1
    assert record.block_hash != before.block_hash
    assert sent_count(sender.address) == 1
    assert rental_state(suite, rental).last_seq == 1


def test_a_transaction_beaten_in_its_block_is_failed_with_the_on_chain_error(
    suite, offer, renter, provider, sender, relayer, chain_id, db_path, rpc_url
):
    rental = started_rental(suite, renter, provider)
    web3.eth.send_transaction(
        {"from": relayer.address, "to": suite.escrow.address, "data": first_report_calldata(suite, rental)}
    )
    calldata = bytes.fromhex(suite.escrow.claimPayout.encode_input(rental)[2:])
    key = f"claim:{rental}"

    async def scenario():
        async with started_manager(rpc_url, db_path, sender, chain_id) as manager:
            await manager.submit(key, suite.escrow.address, calldata)
            await manager.tick()
            # Another account claims the same earnings with a higher tip: it is ordered first in the block.
            web3.eth.send_transaction(
                {
                    "from": relayer.address,
                    "to": suite.escrow.address,
                    "data": calldata,
                    "gas": 1_000_000,
                    "maxFeePerGas": 50 * GWEI,
                    "maxPriorityFeePerGas": 20 * GWEI,
                }
            )
            mine()
            await manager.tick()
            return manager.record(key)

    with manual_mining():
        record = asyncio.run(scenario())
    block = record.block_number
    assert record.state is TxState.FAILED and record.gas_used is not None
    assert record.error == f"reverted on chain in block {block}: Escrow_NothingToClaim: {rental}"
    assert sent_count(sender.address) == 1
    assert rental_state(suite, rental).claimed == rental_state(suite, rental).earned > 0


def test_an_unlocked_node_account_has_the_node_sign(
    suite, offer, renter, provider, relayer, chain_id, db_path, rpc_url
):
    rental = started_rental(suite, renter, provider)
    calldata = first_report_calldata(suite, rental)
    nonce_before = relayer.nonce

    async def scenario():
        async with started_manager(rpc_url, db_path, relayer.address, chain_id) as manager:
            await manager.submit(f"reports:{rental}-1", suite.escrow.address, calldata)
            [record] = await settle(manager, f"reports:{rental}-1")
            return record

    record = asyncio.run(scenario())
    assert record.state is TxState.CONFIRMED and record.nonce == nonce_before
    assert web3.eth.get_transaction(record.hash)["from"] == relayer.address
    assert rental_state(suite, rental).last_seq == 1


def test_run_sends_what_is_submitted_and_reports_each_final_record(
    suite, offer, renter, provider, sender, chain_id, db_path, rpc_url
):
    rentals = [started_rental(suite, renter, provider) for _ in range(3)]
    calldatas = [first_report_calldata(suite, rental, elapsed=10) for rental in rentals]

    finished = []

    async def scenario():
        async with started_manager(rpc_url, db_path, sender, chain_id, on_final=finished.append) as manager:
            stop = asyncio.Event()
            runner = asyncio.create_task(manager.run(stop, interval=0.2))
            try:
                for rental, calldata in zip(rentals, calldatas):
                    await manager.submit(f"reports:{rental}-1", suite.escrow.address, calldata)
                return [await manager.wait_confirmed(f"reports:{r}-1", timeout=20) for r in rentals]
            finally:
                stop.set()
                await asyncio.wait_for(runner, timeout=10)

    records = asyncio.run(scenario())
    assert [r.state for r in records] == [TxState.CONFIRMED] * 3
    assert [r.nonce for r in records] == [0, 1, 2]
    assert [rental_state(suite, r).last_seq for r in rentals] == [1, 1, 1]
    assert sorted(finished, key=lambda r: r.nonce) == records


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


def test_a_final_transaction_reorged_out_deeper_than_its_confirmations_is_sent_again_and_lands_once(
    suite, offer, renter, provider, sender, chain_id, db_path, rpc_url
):
    """Final at two confirmations, then a reorg of depth 3 (an empty block, the transaction's and one above it)
    takes it out: the chain's nonce falls back under it. It is sent again as signed (no nonce gap), `on_reorg` says
    it had been final, and a transaction submitted after the reorg lands behind it."""
    first, second = started_rental(suite, renter, provider), started_rental(suite, renter, provider)
    calldata = first_report_calldata(suite, first)
    later = first_report_calldata(suite, second)
    reorgs = []

    async def scenario():
        options = {"confirmations": 2, "on_reorg": lambda record, final: reorgs.append((record.key, final))}
        async with started_manager(rpc_url, db_path, sender, chain_id, **options) as manager:
            fork = fork_point()
            mine()
            await manager.submit("reports:first", suite.escrow.address, calldata)
            await manager.tick()
            mine()
            await manager.tick()
            mine()
            await manager.tick()
            before = manager.record("reports:first")
            assert before.state is TxState.CONFIRMED
            reorg(fork)
            assert sent_count(sender.address) == 0
            await manager.recheck_final()
            reopened = manager.record("reports:first")
            assert reopened.state is TxState.UNCONFIRMED and reopened.block_number is None
            await manager.submit("reports:later", suite.escrow.address, later)
            for _ in range(4):
                await manager.tick()
                mine()
            await manager.tick()
            return before, manager.record("reports:first"), manager.record("reports:later")

    with manual_mining():
        before, first_record, later_record = asyncio.run(scenario())
    assert reorgs == [("reports:first", True)]
    assert first_record.state is TxState.CONFIRMED and first_record.hash == before.hash
    assert first_record.block_hash != before.block_hash and first_record.nonce == before.nonce
    assert later_record.state is TxState.CONFIRMED and later_record.nonce == before.nonce + 1
    assert sent_count(sender.address) == 2
    assert rental_state(suite, first).last_seq == 1 and rental_state(suite, second).last_seq == 1


def test_a_final_transaction_still_on_chain_is_left_final(
    suite, offer, renter, provider, sender, chain_id, db_path, rpc_url
):
    rental = started_rental(suite, renter, provider)
    calldata = first_report_calldata(suite, rental)

    async def scenario():
        async with started_manager(rpc_url, db_path, sender, chain_id) as manager:
            await manager.submit("reports:kept", suite.escrow.address, calldata)
            await settle(manager, "reports:kept")
            mine(2)
            await manager.recheck_final()
            await manager.tick()
            return manager.record("reports:kept")

    assert asyncio.run(scenario()).state is TxState.CONFIRMED
    assert sent_count(sender.address) == 1


def test_wait_mined_returns_at_the_receipt_while_wait_confirmed_waits_for_the_depth(
    suite, offer, renter, provider, sender, chain_id, db_path, rpc_url
):
    rental = started_rental(suite, renter, provider)
    calldata = first_report_calldata(suite, rental)

    async def scenario():
        async with started_manager(rpc_url, db_path, sender, chain_id, confirmations=3) as manager:
            await manager.submit("reports:mined", suite.escrow.address, calldata)
            await manager.tick()
            mine()
            await manager.tick()
            mined = await manager.wait_mined("reports:mined", timeout=1)
            with pytest.raises(TimeoutError, match="still unconfirmed"):
                await manager.wait_confirmed("reports:mined", timeout=0.2)
            with pytest.raises(KeyError):
                await manager.wait_mined("reports:unknown", timeout=0.2)
            return mined

    with manual_mining():
        mined = asyncio.run(scenario())
    assert mined.state is TxState.UNCONFIRMED and mined.block_number is not None
