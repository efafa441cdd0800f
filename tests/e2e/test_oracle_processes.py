"""The exchange with its three oracles as processes (`python -m offchain.oracle`, configured by environment as a
deployment configures them): a rental runs to completion and settles, and an oracle killed mid-rental and
restarted with its state carries on."""

from __future__ import annotations

import asyncio

from brownie import web3

from offchain.agent.rentals import Phase
from offchain.protocol.status import RentalStatus
from offchain.telemetry.replay import ReplaySource
from tests.e2e.conftest import oracle_processes, running_agent
from tests.e2e.test_settlement import (
    EXIT_LATENCY_SECONDS,
    TRACE,
    Balances,
    assert_latest_landed,
    assert_settled,
    job,
    open_rental,
    put_spec,
    rental_state,
)


def test_a_rental_settles_through_oracle_processes_and_survives_a_killed_peer(
    suite, chain_settings, provider, treasury, renter, list_offer, tmp_path
):
    offer_id = list_offer([gpu.uuid for gpu in ReplaySource(TRACE).gpus()])
    spec = job("sleep 5; echo trained")
    put_spec(tmp_path, spec)
    before, from_block = Balances.of(suite, provider, treasury, renter), web3.eth.block_number

    async def main() -> int:
        async with oracle_processes(chain_settings, tmp_path) as cluster:
            async with running_agent(
                chain_settings, tmp_path, provider.address, ReplaySource(TRACE, rebase=True), cluster.urls
            ) as ex:
                rental_id = await asyncio.to_thread(open_rental, suite, offer_id, spec, renter)
                await ex.until_chain(
                    lambda: rental_state(suite, rental_id).status is RentalStatus.RUNNING, 30, "the rental to start"
                )
                await cluster.restart(2)
                await ex.until_chain(
                    lambda: rental_state(suite, rental_id).status.is_final, 60, f"rental {rental_id} to be final"
                )
                await ex.until(lambda: ex.agent.book.get(rental_id).phase is Phase.DONE, 10, "the agent to be done")
                return rental_id

    rental_id = asyncio.run(main())

    reports = assert_latest_landed(suite, rental_id, from_block, tmp_path)
    state = rental_state(suite, rental_id)
    assert state.status is RentalStatus.COMPLETED
    moved = Balances.of(suite, provider, treasury, renter) - before
    final = assert_settled(
        suite, rental_id, offer_id, from_block, moved, RentalStatus.COMPLETED, reports[-1].covered_until - state.since
    )
    assert final["missedSeconds"] <= EXIT_LATENCY_SECONDS, "time counted missed beyond the job's exit"
