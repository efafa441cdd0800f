"""`offchain.chain.rpc.connect`: requests cancelled mid-flight (timeouts around calls) never hang later ones, one
connection serves several event loops in turn, and a node that does not answer is `ChainUnreachable` whatever the
request."""

from __future__ import annotations

import asyncio

import pytest

from offchain.chain.rpc import ChainUnreachable, connect


async def cancel_storms(w3, rounds: int = 30, concurrent: int = 40) -> int:
    """Starts and cancels bursts of requests, then asks once more; web3's own session lock hangs here (7.16)."""
    for _ in range(rounds):
        calls = [asyncio.create_task(w3.eth.block_number) for _ in range(concurrent)]
        await asyncio.sleep(0.002)
        for call in calls:
            call.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
    return await asyncio.wait_for(w3.eth.block_number, 5)


def test_cancelled_requests_do_not_hang_later_ones(rpc_url):
    w3 = connect(rpc_url)

    async def scenario():
        try:
            return await cancel_storms(w3)
        finally:
            await w3.provider.disconnect()

    assert asyncio.run(scenario()) >= 0


def test_one_connection_serves_successive_event_loops(rpc_url):
    w3 = connect(rpc_url)

    async def block_number():
        return await w3.eth.block_number

    first = asyncio.run(block_number())
    assert asyncio.run(block_number()) >= first

    async def close():
        await w3.provider.disconnect()

    asyncio.run(close())


def test_every_request_to_a_node_that_does_not_answer_is_chain_unreachable():
    w3 = connect("http://127.0.0.1:9", timeout=2)  # the discard port: nothing listens

    async def scenario():
        try:
            for request in (
                w3.eth.chain_id,
                w3.eth.get_block("latest"),
                w3.eth.call({"to": "0x" + "11" * 20}),
                w3.eth.send_raw_transaction(b"\x02"),
            ):
                with pytest.raises(ChainUnreachable, match="the chain's node did not answer"):
                    await request
        finally:
            await w3.provider.disconnect()

    asyncio.run(scenario())
