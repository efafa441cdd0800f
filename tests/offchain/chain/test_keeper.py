"""The keeper claims start timeouts and finalizes rentals once the chain says they are due, exactly once."""

from __future__ import annotations

import asyncio

from brownie import chain

from offchain.chain.reads import ChainReader
from offchain.chain.rpc import connect
from offchain.chain.tx.manager import TxManager
from offchain.chain.tx.store import TxState
from offchain.oracle.keeper import Keeper, RentalStatus
from offchain.protocol.status import DeclineReason
from offchain.sqlite import open_db
from scripts.deploy import deploy_suite
from tests.offchain.chain.helpers import latest_block, new_offer, open_rental, rental_state, settle, started_rental
from tests.offchain.conftest import ORACLES


def make_keeper(w3, suite, manager, db_path, **options) -> Keeper:
    return Keeper(ChainReader(w3, suite.registry.address, suite.escrow.address), manager, db_path, **options)


def status(suite, rental_id):
    return rental_state(suite, rental_id).status


def test_the_keeper_times_out_and_finalizes_due_rentals_once(
    suite, offer, renter, provider, sender, chain_id, tmp_path, rpc_url
):
    start_timeout, report_grace = suite.read(lambda r: asyncio.gather(r.start_timeout(), r.report_grace()))
    start_block = latest_block().number
    never_started = open_rental(suite, renter, new_offer(suite, provider))
    expires = started_rental(suite, renter, provider, duration=120)
    terminated = started_rental(suite, renter, provider, duration=3_600)
    chain.sleep(30)
    suite.escrow.terminate(terminated, {"from": renter})
    db_path = tmp_path / "oracle.sqlite"

    async def first_run():
        w3 = connect(rpc_url)
        manager = TxManager(w3, db_path, sender, chain_id)
        keeper = make_keeper(w3, suite, manager, db_path, start_block=start_block)
        await manager.start()
        await keeper.start()
        try:
            assert await keeper.tick() == []  # nothing due yet
            assert keeper.watched() == [never_started, expires, terminated]

            chain.sleep(max(start_timeout, 120 + report_grace) + 1)
            chain.mine()
            fresh = open_rental(suite, renter, new_offer(suite, provider))  # opened now: not due
            submitted = await keeper.tick()
            assert [(a.action, a.rental_id) for a in submitted] == [
                ("timeout", never_started),
                ("finalize", expires),
                ("finalize", terminated),
            ]
            assert [a.tx_key for a in submitted] == [
                f"timeout:{never_started}",
                f"finalize:{expires}",
                f"finalize:{terminated}",
            ]
            assert all(a.block_timestamp >= a.due_at for a in submitted)
            outcomes = await settle(manager, *(a.tx_key for a in submitted))

            assert await keeper.tick() == []  # settled rentals are dropped, the fresh one is not due
            assert keeper.watched() == [fresh]
            return fresh, outcomes, keeper.actions(), keeper.last_scanned_block
        finally:
            keeper.close()
            manager.close()
            await w3.provider.disconnect()

    fresh, outcomes, actions, scanned = asyncio.run(first_run())
    assert [o.state for o in outcomes] == [TxState.CONFIRMED] * 3
    assert status(suite, never_started) is RentalStatus.TIMED_OUT
    assert status(suite, expires) is RentalStatus.EXPIRED
    assert status(suite, terminated) is RentalStatus.EXPIRED
    assert len(actions) == 3

    # Restarted on the same database, running as a service: it picks up where it stopped and settles the
    # fresh rental once it times out, without touching the others again.
    chain.sleep(start_timeout + 1)
    chain.mine()

    async def second_run():
        w3 = connect(rpc_url)
        manager = TxManager(w3, db_path, sender, chain_id)
        keeper = make_keeper(w3, suite, manager, db_path, start_block=start_block)
        await manager.start()
        await keeper.start()
        assert keeper.last_scanned_block == scanned and keeper.watched() == [fresh]
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(keeper.run(stop, interval=0.1)),
            asyncio.create_task(manager.run(stop, interval=0.1)),
        ]
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while manager.record(f"timeout:{fresh}") is None and loop.time() < deadline:
                await asyncio.sleep(0.05)
            record = await manager.wait_confirmed(f"timeout:{fresh}", timeout=20)
            await asyncio.sleep(0.5)  # a few more keeper ticks: nothing else is due
            return record, keeper.actions(), [r.key for r in manager.records()]
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)
            keeper.close()
            manager.close()
            await w3.provider.disconnect()

    record, actions, keys = asyncio.run(second_run())
    assert record.state is TxState.CONFIRMED
    assert status(suite, fresh) is RentalStatus.TIMED_OUT
    assert [a.tx_key for a in actions] == [
        f"timeout:{never_started}",
        f"finalize:{expires}",
        f"finalize:{terminated}",
        f"timeout:{fresh}",
    ]
    assert keys == [a.tx_key for a in actions]


def test_the_keeper_drops_a_declined_rental_as_final(
    suite, offer, renter, provider, sender, chain_id, tmp_path, rpc_url
):
    start_block = latest_block().number
    declined = open_rental(suite, renter, new_offer(suite, provider))
    suite.escrow.decline(declined, DeclineReason.GPUS_UNAVAILABLE, {"from": provider})
    chain.sleep(suite.read(lambda r: r.start_timeout()) + 1)
    chain.mine()
    db_path = tmp_path / "oracle.sqlite"

    async def run():
        w3 = connect(rpc_url)
        manager = TxManager(w3, db_path, sender, chain_id)
        keeper = make_keeper(w3, suite, manager, db_path, start_block=start_block)
        await manager.start()
        await keeper.start()
        try:
            return await keeper.tick(), keeper.watched(), keeper.actions()
        finally:
            keeper.close()
            manager.close()
            await w3.provider.disconnect()

    submitted, watched, actions = asyncio.run(run())
    assert (submitted, watched, actions) == ([], [], [])
    assert status(suite, declined) is RentalStatus.DECLINED


def test_the_keeper_scans_logs_in_chunks_reads_rentals_in_rotation_and_ignores_other_escrows(
    suite, offer, token, deployer, treasury, renter, provider, sender, chain_id, tmp_path, rpc_url
):
    start_block = latest_block().number
    other = deploy_suite(deployer, token, token, treasury, [o.address for o in ORACLES], 2)
    token.approve(other.registry, 2**256 - 1, {"from": provider})
    token.approve(other.escrow, 2**256 - 1, {"from": renter})
    rentals = []
    for _ in range(3):
        rentals.append(open_rental(suite, renter, new_offer(suite, provider)))
        open_rental(other, renter, new_offer(other, provider))
    head = latest_block().number
    start_timeout = suite.read(lambda r: r.start_timeout())

    async def scenario():
        w3 = connect(rpc_url)
        manager = TxManager(w3, tmp_path / "db.sqlite", sender, chain_id)
        keeper = make_keeper(
            w3,
            suite,
            manager,
            tmp_path / "db.sqlite",
            start_block=start_block,
            max_block_range=2,
            max_checks_per_tick=1,
        )
        try:
            assert await keeper.tick() == []
            assert keeper.watched() == rentals and keeper.last_scanned_block >= head
            chain.sleep(start_timeout + 1)
            chain.mine()
            # One rental read per tick: all three are due, one is submitted per tick.
            return [[a.rental_id for a in await keeper.tick()] for _ in range(4)]
        finally:
            keeper.close()
            manager.close()
            await w3.provider.disconnect()

    per_tick = asyncio.run(scenario())
    assert per_tick == [[rentals[1]], [rentals[2]], [rentals[0]], []]


def test_the_keeper_forgets_a_rental_a_reorg_took_away(
    suite, offer, renter, provider, sender, chain_id, tmp_path, rpc_url
):
    start_block = latest_block().number
    kept = open_rental(suite, renter, new_offer(suite, provider))
    offer_id = new_offer(suite, provider)

    async def scenario():
        w3 = connect(rpc_url)
        manager = TxManager(w3, tmp_path / "db.sqlite", sender, chain_id)
        keeper = make_keeper(w3, suite, manager, tmp_path / "db.sqlite", start_block=start_block)
        try:
            chain.snapshot()
            orphaned = open_rental(suite, renter, offer_id)
            await keeper.tick()
            seen = keeper.watched()
            chain.revert()  # the rental was never opened
            chain.mine(3)
            await keeper.tick()
            return orphaned, seen, keeper.watched()
        finally:
            keeper.close()
            manager.close()
            await w3.provider.disconnect()

    orphaned, seen, after = asyncio.run(scenario())
    assert seen == [kept, orphaned]
    assert after == [kept]


def test_the_keeper_resumes_from_the_cursor_an_earlier_version_kept(suite, sender, chain_id, tmp_path, rpc_url):
    db_path = tmp_path / "oracle.sqlite"
    db = open_db(db_path)
    db.execute("CREATE TABLE keeper_cursor (escrow TEXT PRIMARY KEY, last_block INTEGER NOT NULL)")
    db.execute("INSERT INTO keeper_cursor (escrow, last_block) VALUES (?, 41)", (suite.escrow.address,))
    db.close()

    async def scenario():
        w3 = connect(rpc_url)
        manager = TxManager(w3, db_path, sender, chain_id)
        keeper = make_keeper(w3, suite, manager, db_path)
        try:
            return keeper.last_scanned_block
        finally:
            keeper.close()
            manager.close()
            await w3.provider.disconnect()

    assert asyncio.run(scenario()) == 41
