"""The RPC goes away and comes back, on an anvil these tests own (ports 8650-8659, stopped on the way out).

Anvil is restarted on the same `--state` file: blocks, receipts and balances survive, the mempool does not.
"""

from __future__ import annotations

import asyncio

import pytest
from eth_account import Account
from eth_utils import keccak
from web3 import AsyncHTTPProvider, AsyncWeb3, HTTPProvider, Web3

from offchain.chain.contracts import load_artifact
from offchain.chain.reads import ZERO_ADDRESS, read_once
from offchain.chain.tx.manager import TxManager
from offchain.chain.tx.store import TxState
from tests.offchain.chain.helpers import OwnAnvil, free_port

AMOUNT = 1_000


@pytest.fixture
def own_anvil(tmp_path):
    node = OwnAnvil(free_port(), tmp_path / "anvil-state.json")
    node.start()
    yield node
    node.stop()


@pytest.fixture
def minter(own_anvil):
    """A funded key that owns a freshly deployed TestStablecoin on the test's own anvil: (account, token)."""
    w3 = Web3(HTTPProvider(own_anvil.url))
    account = Account.from_key(keccak(text="txmgr outage minter"))
    w3.eth.send_transaction({"from": w3.eth.accounts[0], "to": account.address, "value": 10**20})
    artifact = load_artifact("TestStablecoin")
    factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    deploy = factory.constructor(account.address).build_transaction(
        {
            "from": account.address,
            "nonce": 0,
            "gas": 3_000_000,
            "maxFeePerGas": 2 * 10**9,
            "maxPriorityFeePerGas": 10**9,
            "chainId": w3.eth.chain_id,
        }
    )
    receipt = w3.eth.wait_for_transaction_receipt(
        w3.eth.send_raw_transaction(account.sign_transaction(deploy).raw_transaction), timeout=10
    )
    return account, w3.eth.contract(address=receipt.contractAddress, abi=artifact["abi"])


def async_web3(url):
    """An AsyncWeb3 that fails fast when the node is down (no retries inside the provider)."""
    return AsyncWeb3(AsyncHTTPProvider(url, request_kwargs={"timeout": 2}, exception_retry_configuration=None))


def balance_of(node, token, account) -> int:
    """The token balance of `account` on `node`, which has no suite: the reader's registry and escrow are never
    called."""
    return read_once(node.url, ZERO_ADDRESS, ZERO_ADDRESS, lambda r: r.token_balance(token.address, account))


def mint_calldata(token, recipient):
    return bytes.fromhex(token.encode_abi("mint", args=[recipient, AMOUNT])[2:])


async def wait_for(predicate, timeout, what):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError(f"{what} not within {timeout}s")
        await asyncio.sleep(0.05)


def test_the_manager_backs_off_while_the_rpc_is_down_and_catches_up(own_anvil, minter, tmp_path):
    account, token = minter
    recipient = Account.from_key(keccak(text="txmgr outage recipient")).address

    async def scenario():
        w3 = async_web3(own_anvil.url)
        manager = TxManager(w3, tmp_path / "txmgr.sqlite", account, await w3.eth.chain_id, max_backoff=1.0)
        await manager.start()
        stop = asyncio.Event()
        runner = asyncio.create_task(manager.run(stop, interval=0.1))
        try:
            await manager.submit("mint:1", token.address, mint_calldata(token, recipient))
            assert (await manager.wait_confirmed("mint:1", timeout=20)).state is TxState.CONFIRMED

            await asyncio.to_thread(own_anvil.stop)
            for n in (2, 3):
                await manager.submit(f"mint:{n}", token.address, mint_calldata(token, recipient))
            await wait_for(lambda: manager.backoff.failures >= 3, 20, "three failed ticks")
            assert manager.backoff.delay > 0.1
            assert {manager.record(f"mint:{n}").state for n in (2, 3)} == {TxState.UNSTARTED}

            await asyncio.to_thread(own_anvil.start)
            records = [await manager.wait_confirmed(f"mint:{n}", timeout=30) for n in (2, 3)]
            assert manager.backoff.failures == 0
            return records
        finally:
            stop.set()
            await asyncio.wait_for(runner, timeout=10)
            manager.close()
            await w3.provider.disconnect()

    records = asyncio.run(scenario())
    assert [(r.state, r.nonce) for r in records] == [(TxState.CONFIRMED, 2), (TxState.CONFIRMED, 3)]
    w3 = Web3(HTTPProvider(own_anvil.url))
    assert balance_of(own_anvil, token, recipient) == 3 * AMOUNT
    assert w3.eth.get_transaction_count(account.address) == 4  # the deployment and three mints


def test_mining_stops_the_rpc_restarts_without_its_mempool_and_every_transaction_lands_once(
    own_anvil, minter, tmp_path
):
    account, token = minter
    recipient = Account.from_key(keccak(text="txmgr outage recipient 2")).address
    keys = [f"mint:{n}" for n in range(3)]

    async def scenario():
        w3 = async_web3(own_anvil.url)
        await w3.provider.make_request("evm_setAutomine", [False])
        manager = TxManager(w3, tmp_path / "txmgr.sqlite", account, await w3.eth.chain_id, max_backoff=1.0)
        await manager.start()
        stop = asyncio.Event()
        runner = asyncio.create_task(manager.run(stop, interval=0.1))
        try:
            for key in keys:
                await manager.submit(key, token.address, mint_calldata(token, recipient))
            await wait_for(
                lambda: all(manager.record(k).state is TxState.UNCONFIRMED for k in keys), 20, "all three sent"
            )
            sent = [manager.record(k) for k in keys]
            await asyncio.sleep(0.5)  # mining is stopped: they wait, and nothing is bumped without new blocks
            assert [manager.record(k) for k in keys] == sent

            # The node goes down and comes back with its chain but an empty mempool (and automine on again).
            await asyncio.to_thread(own_anvil.stop)
            await asyncio.sleep(0.5)
            await asyncio.to_thread(own_anvil.start)
            records = [await manager.wait_confirmed(k, timeout=30) for k in keys]
            return sent, records
        finally:
            stop.set()
            await asyncio.wait_for(runner, timeout=10)
            manager.close()
            await w3.provider.disconnect()

    sent, records = asyncio.run(scenario())
    assert [r.state for r in records] == [TxState.CONFIRMED] * 3
    assert [r.hash for r in records] == [s.hash for s in sent]  # the stored raw transactions, sent again
    assert [r.attempts for r in records] == [1, 1, 1]
    assert balance_of(own_anvil, token, recipient) == 3 * AMOUNT
    assert Web3(HTTPProvider(own_anvil.url)).eth.get_transaction_count(account.address) == 4
