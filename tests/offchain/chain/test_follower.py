"""The event follower against Brownie's anvil: ranges, confirmations, reorgs made with `chain.snapshot()` and
`chain.revert()`, a node that does not answer, and its state kept in SQLite."""

from __future__ import annotations

import asyncio

import pytest
from brownie import chain, web3
from eth_utils import keccak

from offchain.chain.follower import EventFollower, FollowerState, LogBatch, MemoryStore, Rewind, SqliteStore
from offchain.chain.rpc import ChainUnreachable, connect
from offchain.sqlite import open_db

TRANSFER = "0x" + keccak(text="Transfer(address,address,uint256)").hex()
#: Nothing listens on the discard port: a node that does not answer.
NO_NODE = "http://127.0.0.1:9"


@pytest.fixture
def transfer(token, deployer, accounts):
    """`transfer(n)` mines n blocks with one Transfer log of `token` each; returns their block numbers."""

    def _transfer(count: int = 1) -> list[int]:
        return [token.mint(accounts[5], 1, {"from": deployer}).block_number for _ in range(count)]

    return _transfer


def follower_of(w3, token, start_block, **options) -> EventFollower:
    return EventFollower(w3, [token.address], [TRANSFER], start_block, **options)


async def drain(follower: EventFollower) -> list[LogBatch | Rewind]:
    """Polls and commits until the follower has read every confirmed block."""
    steps = []
    while (step := await follower.poll()) is not None:
        steps.append(step)
        follower.commit(step)
    return steps


def chain_logs(token, from_block: int, to_block: int) -> list[tuple[int, int]]:
    logs = web3.eth.get_logs(
        {"address": token.address, "topics": [TRANSFER], "fromBlock": from_block, "toBlock": to_block}
    )
    return [(e["blockNumber"], e["logIndex"]) for e in logs]


def positions(batches) -> list[tuple[int, int]]:
    return [(e["blockNumber"], e["logIndex"]) for batch in batches for e in batch.logs]


def test_logs_come_in_chain_order_in_ranges_of_at_most_max_block_range(rpc_url, token, transfer):
    start = web3.eth.block_number + 1
    transfer(5)

    async def scenario():
        w3 = connect(rpc_url)
        try:
            follower = follower_of(w3, token, start, max_block_range=2)
            return await drain(follower), follower.next_block
        finally:
            await w3.provider.disconnect()

    batches, next_block = asyncio.run(scenario())
    head = web3.eth.block_number
    assert [(b.from_block, b.to_block) for b in batches] == [(n, min(n + 1, head)) for n in range(start, head + 1, 2)]
    assert [b.caught_up for b in batches] == [False] * (len(batches) - 1) + [True]
    assert positions(batches) == chain_logs(token, start, head) and len(positions(batches)) == 5
    assert [b.block_hash for b in batches] == [bytes(web3.eth.get_block(b.to_block)["hash"]) for b in batches]
    assert next_block == head + 1


def test_only_blocks_confirmations_deep_are_read(rpc_url, token, transfer):
    start = web3.eth.block_number + 1
    mined = transfer(3)

    async def scenario():
        w3 = connect(rpc_url)
        try:
            follower = follower_of(w3, token, start, confirmations=2)
            first = await drain(follower)
            chain.mine(2)
            return first, await drain(follower)
        finally:
            await w3.provider.disconnect()

    first, second = asyncio.run(scenario())
    assert [b.to_block for b in first] == [mined[0]]
    assert [e["blockNumber"] for e in first[0].logs] == mined[:1]
    assert [e["blockNumber"] for b in second for e in b.logs] == mined[1:]


def test_a_follower_without_start_block_begins_after_the_head(rpc_url, token, transfer):
    transfer()

    async def scenario():
        w3 = connect(rpc_url)
        try:
            follower = follower_of(w3, token, None)
            nothing = await follower.poll()
            start = follower.next_block
            return nothing, start, transfer(), await drain(follower)
        finally:
            await w3.provider.disconnect()

    nothing, start, mined, batches = asyncio.run(scenario())
    assert nothing is None
    assert start == mined[0]
    assert [e["blockNumber"] for b in batches for e in b.logs] == mined


def test_a_reorg_rewinds_to_the_block_after_the_fork(rpc_url, token, transfer):
    start = web3.eth.block_number + 1
    transfer()

    async def scenario():
        w3 = connect(rpc_url)
        try:
            follower = follower_of(w3, token, start, max_block_range=1)
            await drain(follower)
            fork = web3.eth.block_number
            chain.snapshot()
            orphaned = transfer(2)
            await drain(follower)
            chain.revert()  # the head is now below the blocks delivered
            rewind = await follower.poll()
            follower.commit(rewind)
            nothing = await follower.poll()
            replaced = transfer(3)
            return fork, orphaned, rewind, nothing, replaced, await drain(follower)
        finally:
            await w3.provider.disconnect()

    fork, orphaned, rewind, nothing, replaced, batches = asyncio.run(scenario())
    assert rewind == Rewind(next_block=fork + 1, last_block=orphaned[-1])
    assert nothing is None
    assert batches[0].from_block == fork + 1
    assert positions(batches) == chain_logs(token, fork + 1, web3.eth.block_number)
    assert [e["blockNumber"] for b in batches for e in b.logs] == replaced


def test_blocks_replaced_at_the_same_height_are_found_by_their_hash(rpc_url, token, transfer):
    start = web3.eth.block_number + 1
    transfer()

    async def scenario():
        w3 = connect(rpc_url)
        try:
            follower = follower_of(w3, token, start)
            await drain(follower)
            fork = web3.eth.block_number
            chain.snapshot()
            transfer(2)
            await drain(follower)
            chain.revert()
            chain.mine(1)
            replaced = transfer()  # the same height as before the revert, on other blocks
            steps = await drain(follower)
            return fork, replaced, steps
        finally:
            await w3.provider.disconnect()

    fork, replaced, steps = asyncio.run(scenario())
    rewind, *batches = steps
    assert rewind == Rewind(next_block=fork + 1, last_block=fork + 2)
    assert [e["blockNumber"] for b in batches for e in b.logs] == replaced


def test_a_reorg_deeper_than_the_remembered_blocks_rewinds_to_the_start(rpc_url, token, transfer):
    start = web3.eth.block_number + 1
    before = transfer()

    async def scenario():
        w3 = connect(rpc_url)
        try:
            follower = follower_of(w3, token, start, max_block_range=1, remembered_blocks=2)
            await drain(follower)
            chain.snapshot()
            transfer(3)
            await drain(follower)  # remembers only the last two of the three blocks
            chain.revert()
            chain.mine(4)
            return await drain(follower)
        finally:
            await w3.provider.disconnect()

    rewind, *batches = asyncio.run(scenario())
    assert rewind.next_block == start
    assert positions(batches) == chain_logs(token, start, web3.eth.block_number)
    assert [e["blockNumber"] for b in batches for e in b.logs] == before


def test_sync_hands_each_step_to_its_handler_and_a_failing_handler_moves_nothing(rpc_url, token, transfer):
    start = web3.eth.block_number + 1
    transfer(2)
    seen: list[int] = []

    async def scenario():
        w3 = connect(rpc_url)
        try:
            follower = follower_of(w3, token, start)

            async def failing(batch: LogBatch) -> None:
                raise RuntimeError("handler failed")

            async def collect(batch: LogBatch) -> None:
                seen.extend(e["blockNumber"] for e in batch.logs)

            async def no_rewind(rewind: Rewind) -> None:
                raise AssertionError(rewind)

            with pytest.raises(RuntimeError):
                await follower.sync(failing, no_rewind)
            after_failure = follower.next_block
            await follower.sync(collect, no_rewind)
            return after_failure, follower.next_block
        finally:
            await w3.provider.disconnect()

    after_failure, next_block = asyncio.run(scenario())
    assert after_failure == start
    assert next_block == web3.eth.block_number + 1
    assert seen == [e[0] for e in chain_logs(token, start, web3.eth.block_number)]


def test_a_node_that_does_not_answer_leaves_the_state_where_it_was(rpc_url, token, transfer):
    start = web3.eth.block_number + 1
    first = transfer()
    store = MemoryStore()

    async def scenario():
        w3, down = connect(rpc_url), connect(NO_NODE, timeout=2)
        try:
            await drain(follower_of(w3, token, start, store=store))
            saved = store.load()
            mined = transfer()
            with pytest.raises(ChainUnreachable):
                await follower_of(down, token, start, store=store).poll()
            unchanged = store.load()
            return saved, unchanged, mined, await drain(follower_of(w3, token, start, store=store))
        finally:
            await w3.provider.disconnect()
            await down.provider.disconnect()

    saved, unchanged, mined, batches = asyncio.run(scenario())
    assert saved.next_block == first[0] + 1
    assert unchanged == saved
    assert [(b.from_block, [e["blockNumber"] for e in b.logs]) for b in batches] == [(first[0] + 1, mined)]


def test_a_commit_of_a_step_polled_before_the_last_commit_is_refused(rpc_url, token, transfer):
    start = web3.eth.block_number + 1
    transfer()

    async def scenario():
        w3 = connect(rpc_url)
        try:
            follower = follower_of(w3, token, start)
            batch = await follower.poll()
            follower.commit(batch)
            with pytest.raises(ValueError):
                follower.commit(batch)
        finally:
            await w3.provider.disconnect()

    asyncio.run(scenario())


def test_the_state_survives_in_sqlite_and_a_reorg_is_found_after_a_restart(rpc_url, token, transfer, tmp_path):
    start = web3.eth.block_number + 1
    transfer()
    path = tmp_path / "follower.sqlite"

    async def scenario():
        w3 = connect(rpc_url)
        try:
            db = open_db(path)
            follower = follower_of(w3, token, start, max_block_range=1, store=SqliteStore(db, "cursor", "name", "a"))
            await drain(follower)
            fork = web3.eth.block_number
            chain.snapshot()
            transfer(2)
            await drain(follower)
            saved = SqliteStore(db, "cursor", "name", "a").load()
            db.close()

            chain.revert()
            chain.mine(3)
            db = open_db(path)
            restarted = follower_of(w3, token, 0, max_block_range=1, store=SqliteStore(db, "cursor", "name", "a"))
            resumed_at = restarted.next_block
            steps = await drain(restarted)
            db.close()
            return fork, saved, resumed_at, steps
        finally:
            await w3.provider.disconnect()

    fork, saved, resumed_at, steps = asyncio.run(scenario())
    assert saved.start_block == start and resumed_at == saved.next_block == fork + 3
    assert [number for number, _ in saved.recent_blocks] == list(range(start, fork + 3))
    assert steps[0] == Rewind(next_block=fork + 1, last_block=fork + 2)
    assert steps[-1].to_block == web3.eth.block_number


def test_a_cursor_table_of_an_earlier_agent_is_taken_on(tmp_path):
    db = open_db(tmp_path / "agent.sqlite")
    db.execute("CREATE TABLE watch_cursor (escrow TEXT PRIMARY KEY, next_block INTEGER NOT NULL)")
    db.execute("INSERT INTO watch_cursor (escrow, next_block) VALUES ('0xescrow', 42)")

    store = SqliteStore(db, "watch_cursor", "escrow", "0xescrow")
    assert store.load() == FollowerState(start_block=42, next_block=42)
    store.save(FollowerState(start_block=42, next_block=44, recent_blocks=((43, b"\x01" * 32),)))
    assert SqliteStore(db, "watch_cursor", "escrow", "0xescrow").load().recent_blocks == ((43, b"\x01" * 32),)
    assert SqliteStore(db, "watch_cursor", "escrow", "0xother").load() is None
