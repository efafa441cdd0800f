"""The agent's `start` and `decline` go through its TxManager: dry-run before signing, persisted under
`start-<rentalId>` / `decline-<rentalId>`, so a restart neither loses nor repeats them and a transaction that cannot
succeed is given up, not retried."""

from __future__ import annotations

import asyncio

from brownie import web3
from eth_utils import keccak

from offchain.agent.jobspec import JobSpecStore
from offchain.chain.contracts import contract
from offchain.chain.rpc import connect
from offchain.chain.tx.manager import TxManager
from offchain.chain.tx.store import TxState
from offchain.protocol.status import RentalStatus
from tests.offchain.agent.harness import DURATION, agent_with_oracles, job, rental_done
from tests.offchain.chain.helpers import manual_mining
from tests.offchain.conftest import AGENT, PRICE


def open_rental(suite, renter, offer_id: int, spec_hash: bytes) -> int:
    return suite.escrow.openRental(offer_id, DURATION, PRICE, spec_hash, {"from": renter}).return_value


def status_of(suite, rental_id: int) -> RentalStatus:
    return suite.read(lambda r: r.rental(rental_id)).status


def sent_by_agent() -> int:
    return web3.eth.get_transaction_count(AGENT.address)


def test_a_start_signed_before_a_crash_is_waited_for_after_the_restart_not_sent_again(
    suite, renter, gpu_offer, agent_settings
):
    listed = gpu_offer()
    settings = agent_settings([])
    spec = job("sleep 30")
    JobSpecStore(settings.spec_directory).put(spec)
    rental = open_rental(suite, renter, listed.offer_id, spec.spec_hash())
    key = f"start-{rental}"

    async def sign_send_and_crash():
        """The agent's first life: its TxManager signs and broadcasts `start`, and the agent dies before the
        transaction is mined."""
        w3 = connect(settings.chain.rpc_url)
        manager = TxManager(w3, settings.tx_db_path, settings.key, settings.chain.chain_id)
        try:
            escrow = contract(w3, "RentalEscrow", settings.chain.escrow)
            await manager.submit(key, escrow.address, escrow.encode_abi("start", args=[rental]))
            await manager.tick()
            return manager.record(key)
        finally:
            manager.close()
            await w3.provider.disconnect()

    with manual_mining():
        in_flight = asyncio.run(sign_send_and_crash())
    assert in_flight.state is TxState.UNCONFIRMED and in_flight.attempts == 1
    sent = sent_by_agent()

    async def restart():
        async with agent_with_oracles(settings, listed.source) as (agent, oracles, until):
            await until(
                lambda: agent.book.get(rental) is not None and agent.book.get(rental).since is not None,
                30,
                "the rental to be started",
            )
            return agent.txmgr.record(key), agent.txmgr.attempts(key)

    record, attempts = asyncio.run(restart())

    assert sent_by_agent() == sent, "the restarted agent sent nothing more"
    assert record.state is TxState.CONFIRMED and record.hash == in_flight.hash
    assert [attempt.hash for attempt in attempts] == [in_flight.hash]
    assert status_of(suite, rental) is RentalStatus.RUNNING


#: An agent key the provider never set: the escrow refuses its `start` and `decline`.
STRANGER_KEY = "0x" + keccak(text="an agent key the provider never set").hex()


def test_a_start_whose_dry_run_reverts_is_not_sent_and_the_rental_is_closed(suite, renter, gpu_offer, agent_settings):
    listed = gpu_offer()
    settings = agent_settings([], key=STRANGER_KEY)
    spec = job("true")
    JobSpecStore(settings.spec_directory).put(spec)
    rental = open_rental(suite, renter, listed.offer_id, spec.spec_hash())

    async def main():
        async with agent_with_oracles(settings, listed.source) as (agent, oracles, until):
            await until(lambda: rental_done(agent, rental), 30, "the rental to be closed")
            return agent.address, agent.txmgr.record(f"start-{rental}"), agent.book.get(rental).outcome

    stranger, record, outcome = asyncio.run(main())

    assert record.state is TxState.FAILED and record.attempts == 0
    assert record.error == f"dry-run reverted: Escrow_NotProviderOrAgent: {rental}, {stranger.lower()}"
    assert web3.eth.get_transaction_count(stranger) == 0
    assert outcome == "not started: rental is OPEN"
    assert status_of(suite, rental) is RentalStatus.OPEN


def test_a_decline_whose_dry_run_reverts_is_given_up_not_retried(suite, renter, gpu_offer, agent_settings):
    listed = gpu_offer()
    settings = agent_settings([], key=STRANGER_KEY)
    invalid_spec = b'{"command":["sh"],"env":{"LD_PRELOAD":"/workspace/x.so"}}'
    settings.spec_directory.mkdir(parents=True, exist_ok=True)
    JobSpecStore(settings.spec_directory).path_of(keccak(invalid_spec)).write_bytes(invalid_spec)
    rental = open_rental(suite, renter, listed.offer_id, keccak(invalid_spec))

    async def main():
        async with agent_with_oracles(settings, listed.source) as (agent, oracles, until):
            await until(lambda: rental_done(agent, rental), 30, "the rental to be closed")
            return agent.address, agent.txmgr.record(f"decline-{rental}"), agent.book.get(rental).outcome

    stranger, record, outcome = asyncio.run(main())

    reason = f"dry-run reverted: Escrow_NotProviderOrAgent: {rental}, {stranger.lower()}"
    assert record.state is TxState.FAILED and record.attempts == 0 and record.error == reason
    assert web3.eth.get_transaction_count(stranger) == 0
    assert outcome == f"not declined: decline failed: {reason}"
    assert status_of(suite, rental) is RentalStatus.OPEN
