"""The chain watcher against the real anvil: the provider's rental events, nobody else's, from a remembered block."""

from __future__ import annotations

import asyncio

from brownie import chain, web3

from offchain.agent.watcher import ChainWatcher
from offchain.chain.events import RentalFinalized, RentalOpened, RentalTerminated
from offchain.chain.reads import ChainReader
from offchain.chain.rpc import connect
from offchain.protocol.messages import gpu_uuid_hash
from offchain.protocol.status import RentalStatus
from offchain.sqlite import open_db
from scripts.deploy import USDC
from tests.offchain.conftest import PRICE

SPEC_HASH = bytes.fromhex("5e" * 32)


def watcher_for(w3, chain_settings, provider, db, start_block):
    return ChainWatcher(
        ChainReader(w3, chain_settings.registry, chain_settings.escrow), provider, db, start_block=start_block
    )


def list_offer_of(suite, token, deployer, account, uuid: str) -> int:
    """An offer of one GPU by a second provider."""
    token.mint(account, 10_000 * USDC, {"from": deployer})
    token.approve(suite.registry, 2**256 - 1, {"from": account})
    suite.registry.stake(1_000 * USDC, {"from": account})
    suite.registry.registerGpus([gpu_uuid_hash(uuid)], {"from": account})
    terms = (
        b"L4".ljust(32, b"\0"),
        23_034,
        PRICE,
        60,
        86_400,
        b"us-east".ljust(16, b"\0"),
        10_000,
        False,
        [gpu_uuid_hash(uuid)],
    )
    return suite.registry.createOffer(terms, {"from": account}).return_value


def test_watcher_reports_the_providers_rentals_and_only_those(
    suite, token, deployer, provider, provider2, renter, gpu_offer, chain_settings, tmp_path
):
    offer_id = gpu_offer().offer_id
    other_offer = list_offer_of(suite, token, deployer, provider2, "GPU-other-provider-0001")
    db = open_db(tmp_path / "agent.sqlite")
    start_block = web3.eth.block_number + 1

    async def main():
        w3 = connect(chain_settings.rpc_url)
        watcher = watcher_for(w3, chain_settings, provider.address, db, start_block)
        assert (await watcher.poll()).events == []
        cancelled = (
            await asyncio.to_thread(suite.escrow.openRental, offer_id, 120, PRICE, SPEC_HASH, {"from": renter})
        ).return_value
        await asyncio.to_thread(suite.escrow.openRental, other_offer, 120, PRICE, SPEC_HASH, {"from": renter})
        await asyncio.to_thread(suite.escrow.terminate, cancelled, {"from": renter})
        first = await watcher.poll()
        watcher.save_cursor(first)

        running = (
            await asyncio.to_thread(suite.escrow.openRental, offer_id, 120, PRICE, SPEC_HASH, {"from": renter})
        ).return_value
        await asyncio.to_thread(suite.escrow.start, running, {"from": provider})
        terminate = await asyncio.to_thread(suite.escrow.terminate, running, {"from": renter})
        second = await watcher.poll()
        watcher.save_cursor(second)
        again = await watcher_for(w3, chain_settings, provider.address, db, start_block).poll()
        await w3.provider.disconnect()
        return cancelled, first, running, second, terminate, again

    cancelled, first, running, second, terminate, again = asyncio.run(main())

    opened = first.events[0]
    assert isinstance(opened, RentalOpened)
    assert (
        opened.rental_id,
        opened.offer_id,
        opened.renter,
        opened.price_per_second,
        opened.duration,
        opened.deposit,
        opened.job_spec_hash,
    ) == (cancelled, offer_id, renter.address, PRICE, 120, PRICE * 120, SPEC_HASH)
    (cancellation,) = first.events[1:]
    assert isinstance(cancellation, RentalFinalized)
    assert (cancellation.rental_id, cancellation.status, cancellation.refund) == (
        cancelled,
        RentalStatus.CANCELLED,
        PRICE * 120,
    )
    assert [type(e) for e in second.events] == [RentalOpened, RentalTerminated]
    assert second.events[0].rental_id == second.events[1].rental_id == running
    assert second.events[1].ends_at == terminate.timestamp
    assert again.events == [], "a restarted watcher replays nothing below its remembered block"
    assert second.caught_up and again.caught_up


def test_a_new_watcher_without_start_block_begins_at_the_head(
    suite, provider, renter, gpu_offer, chain_settings, tmp_path
):
    offer_id = gpu_offer().offer_id
    rental = suite.escrow.openRental(offer_id, 120, PRICE, SPEC_HASH, {"from": renter}).return_value
    db = open_db(tmp_path / "agent.sqlite")

    async def main():
        w3 = connect(chain_settings.rpc_url)
        watcher = watcher_for(w3, chain_settings, provider.address, db, start_block=None)
        before = await watcher.poll()
        watcher.save_cursor(before)
        await asyncio.to_thread(suite.escrow.terminate, rental, {"from": renter})
        after = await watcher.poll()
        await w3.provider.disconnect()
        return before, after

    before, after = asyncio.run(main())

    assert before.events == []
    assert [(type(e), e.rental_id) for e in after.events] == [(RentalFinalized, rental)]


def test_a_reorg_is_reported_and_the_events_of_the_new_chain_come_again(
    suite, provider, renter, gpu_offer, chain_settings, tmp_path
):
    offer_id = gpu_offer().offer_id
    db = open_db(tmp_path / "agent.sqlite")
    start_block = web3.eth.block_number + 1

    async def main():
        w3 = connect(chain_settings.rpc_url)
        watcher = watcher_for(w3, chain_settings, provider.address, db, start_block)
        watcher.save_cursor(await watcher.poll())
        fork = web3.eth.block_number
        chain.snapshot()
        orphaned = (
            await asyncio.to_thread(suite.escrow.openRental, offer_id, 120, PRICE, SPEC_HASH, {"from": renter})
        ).return_value
        seen = await watcher.poll()
        watcher.save_cursor(seen)
        chain.revert()
        await asyncio.to_thread(chain.mine, 2)
        replaced = (
            await asyncio.to_thread(suite.escrow.openRental, offer_id, 600, PRICE, SPEC_HASH, {"from": renter})
        ).return_value
        rewound = await watcher.poll()
        watcher.save_cursor(rewound)
        again = await watcher.poll()
        watcher.save_cursor(again)
        await w3.provider.disconnect()
        return fork, orphaned, seen, rewound, replaced, again

    fork, orphaned, seen, rewound, replaced, again = asyncio.run(main())
    assert [(type(e), e.rental_id, e.duration) for e in seen.events] == [(RentalOpened, orphaned, 120)]
    assert (rewound.rewound, rewound.events, rewound.next_block, rewound.caught_up) == (True, [], fork + 1, False)
    assert [(type(e), e.rental_id, e.duration) for e in again.events] == [(RentalOpened, replaced, 600)]
    assert again.caught_up


def test_the_cursor_an_earlier_agent_kept_is_where_watching_resumes(
    suite, provider, renter, gpu_offer, chain_settings, tmp_path
):
    offer_id = gpu_offer().offer_id
    before = suite.escrow.openRental(offer_id, 120, PRICE, SPEC_HASH, {"from": renter}).return_value
    suite.escrow.terminate(before, {"from": renter})
    db = open_db(tmp_path / "agent.sqlite")
    db.execute("CREATE TABLE watch_cursor (escrow TEXT PRIMARY KEY, next_block INTEGER NOT NULL)")
    db.execute(
        "INSERT INTO watch_cursor (escrow, next_block) VALUES (?, ?)",
        (chain_settings.escrow, web3.eth.block_number + 1),
    )
    after = suite.escrow.openRental(offer_id, 120, PRICE, SPEC_HASH, {"from": renter}).return_value

    async def main():
        w3 = connect(chain_settings.rpc_url)
        batch = await watcher_for(w3, chain_settings, provider.address, db, start_block=0).poll()
        await w3.provider.disconnect()
        return batch

    batch = asyncio.run(main())
    assert [(type(e), e.rental_id) for e in batch.events] == [(RentalOpened, after)]
