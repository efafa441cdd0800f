"""Cached chain reads: one shared read per missing key, expiry, and invalidation by the chain follower."""

from __future__ import annotations

import asyncio

from brownie import chain

from offchain.chain.rpc import connect
from offchain.oracle.chainview import ChainView, _TtlCache
from offchain.protocol.status import RentalStatus
from tests.offchain.conftest import AGENT
from tests.offchain.oracle.helpers import run


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_concurrent_misses_share_one_read():
    loads = []

    async def scenario():
        cache: _TtlCache[str, int] = _TtlCache(10, 100, FakeClock())
        gate = asyncio.Event()

        async def load():
            loads.append(1)
            await gate.wait()
            return 7

        waiters = [asyncio.create_task(cache.get("k", load)) for _ in range(20)]
        await asyncio.sleep(0)
        gate.set()
        return await asyncio.gather(*waiters)

    assert run(scenario()) == [7] * 20
    assert len(loads) == 1


def test_entries_expire_after_the_ttl():
    clock = FakeClock()
    values = iter([1, 2])

    async def load():
        return next(values)

    async def scenario():
        cache: _TtlCache[str, int] = _TtlCache(10, 100, clock)
        first = await cache.get("k", load)
        clock.now = 9.9
        cached = await cache.get("k", load)
        clock.now = 10.1
        return first, cached, await cache.get("k", load)

    assert run(scenario()) == (1, 1, 2)


def test_a_read_in_flight_during_an_invalidation_is_not_kept():
    values = iter([1, 2])

    async def scenario():
        cache: _TtlCache[str, int] = _TtlCache(10, 100, FakeClock())
        gate = asyncio.Event()

        async def slow_load():
            await gate.wait()
            return next(values)

        pending = asyncio.create_task(cache.get("k", slow_load))
        await asyncio.sleep(0)
        cache.invalidate("k")  # the chain changed while the read was under way
        gate.set()
        stale = await pending
        return stale, await cache.get("k", slow_load)

    assert run(scenario()) == (1, 2)


def test_least_recent_entries_are_evicted_beyond_the_cap():
    loads = []

    async def load_key(key):
        async def load():
            loads.append(key)
            return key

        return load

    async def scenario():
        cache: _TtlCache[int, int] = _TtlCache(10, 2, FakeClock())
        for key in (1, 2, 3, 1):
            await cache.get(key, await load_key(key))

    run(scenario())
    assert loads == [1, 2, 3, 1]


def test_follower_drops_a_rental_the_escrow_changed(chain_settings, rental, suite, renter):
    async def scenario():
        w3 = connect(chain_settings.rpc_url)
        view = ChainView(w3, chain_settings, cache_ttl_seconds=3_600)
        await view.start_following()
        follower = asyncio.create_task(view.follow(poll_interval=0.05))
        try:
            assert (await view.rental(rental.rental_id)).status == RentalStatus.RUNNING
            assert await view.agent_of((await view.offer(rental.rental_id >> 32)).provider) == bytes.fromhex(
                AGENT.address[2:]
            )
            suite.escrow.terminate(rental.rental_id, {"from": renter})
            assert (await view.rental(rental.rental_id)).status == RentalStatus.RUNNING  # cached
            for _ in range(100):
                await asyncio.sleep(0.05)
                if (await view.rental(rental.rental_id)).status == RentalStatus.TERMINATED:
                    return
            raise AssertionError("the follower never dropped the terminated rental")
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
            await w3.provider.disconnect()

    run(scenario())


def test_follower_drops_every_cached_rental_when_a_reorg_takes_its_change_away(chain_settings, rental, suite, renter):
    async def scenario():
        w3 = connect(chain_settings.rpc_url)
        view = ChainView(w3, chain_settings, cache_ttl_seconds=3_600)
        await view.start_following()
        follower = asyncio.create_task(view.follow(poll_interval=0.05))
        try:
            assert (await view.rental(rental.rental_id)).status == RentalStatus.RUNNING  # cached
            chain.snapshot()
            suite.escrow.terminate(rental.rental_id, {"from": renter})
            await wait_for_status(view, rental.rental_id, RentalStatus.TERMINATED)  # the follower saw the block
            chain.revert()  # the termination is no longer on the chain
            chain.mine(3)
            await wait_for_status(view, rental.rental_id, RentalStatus.RUNNING)
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
            await w3.provider.disconnect()

    run(scenario())


async def wait_for_status(view: ChainView, rental_id: int, status: RentalStatus) -> None:
    for _ in range(100):
        if (await view.rental(rental_id)).status == status:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the cached rental never became {status.name}")
