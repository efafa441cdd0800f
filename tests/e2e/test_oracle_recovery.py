"""An oracle that loses its state directory mid-rental and is restarted recovers what it had acknowledged: from its
peers (`GET /v1/reports`), and across what it still lacks from the cumulative totals of the next report. The
rental completes with every delivered second paid and nobody slashed, whichever oracle lost its state."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Mapping

import pytest
from brownie import web3

from offchain.agent.rentals import Phase
from offchain.protocol.reports import ReportStatus
from offchain.protocol.status import RentalStatus
from offchain.telemetry.replay import ReplaySource
from tests.e2e.conftest import SINGLE_SUBMITTER, oracle_processes, running_agent, stored_reports
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

LEADER, PEER, OTHER_PEER = 0, 1, 2


@pytest.fixture(scope="module")
def replay_offer(list_offer):
    """An offer of the GPUs of the replayed trace (rented by one scenario after another)."""
    return list_offer([gpu.uuid for gpu in ReplaySource(TRACE).gpus()])


def _held(state_root: Path, index: int, rental_id: int) -> int:
    return len(stored_reports(state_root, index, rental_id))


def _holds_final(state_root: Path, index: int, rental_id: int) -> bool:
    held = stored_reports(state_root, index, rental_id)
    return bool(held) and held[-1][0].report.status is not ReportStatus.RUNNING


def _run_with_wipe(
    suite,
    chain_settings,
    provider,
    renter,
    offer_id: int,
    state_root: Path,
    wiped: int,
    *,
    kill: int | None = None,
    once_final: bool = False,
    per_oracle: Mapping[int, Mapping[str, str]] | None = None,
    restart_settings: Mapping[str, str] | None = None,
) -> int:
    """Runs a rental through the oracle processes; once oracle `wiped` holds two reports (with `once_final`: its
    final report, and the agent is done) it is killed, its state directory deleted, and it is started again, with
    `restart_settings` on top of its own (after oracle `kill`, if given, is killed for good). Returns the rental id
    once the rental is final and the agent done."""
    spec = job("sleep 8; echo trained")
    put_spec(state_root, spec)

    async def main() -> int:
        async with oracle_processes(chain_settings, state_root, per_oracle=per_oracle or SINGLE_SUBMITTER) as cluster:
            async with running_agent(
                chain_settings, state_root, provider.address, ReplaySource(TRACE, rebase=True), cluster.urls
            ) as ex:
                rental_id = await asyncio.to_thread(open_rental, suite, offer_id, spec, renter)
                if once_final:
                    await ex.until(
                        lambda: (
                            _holds_final(state_root, wiped, rental_id)
                            and ex.agent.book.get(rental_id).phase is Phase.DONE
                        ),
                        40,
                        "the final report at the oracle",
                    )
                    state = await asyncio.to_thread(rental_state, suite, rental_id)
                    assert state.status is RentalStatus.RUNNING, "the final report landed before the wipe"
                else:
                    await ex.until(lambda: _held(state_root, wiped, rental_id) >= 2, 30, "two reports at the oracle")
                if kill is not None:
                    cluster.oracles[kill].kill()
                for name, value in (restart_settings or {}).items():
                    cluster.oracles[wiped].env[f"GPUEX_ORACLE_{name}"] = value
                await cluster.restart(wiped, wipe_state=True)
                await ex.until_chain(
                    lambda: rental_state(suite, rental_id).status.is_final, 60, f"rental {rental_id} to be final"
                )
                await ex.until(lambda: ex.agent.book.get(rental_id).phase is Phase.DONE, 10, "the agent to be done")
                return rental_id

    return asyncio.run(main())


def _assert_paid_in_full(suite, rental_id: int, offer_id: int, from_block: int, moved: Balances, reports) -> None:
    state = rental_state(suite, rental_id)
    assert state.status is RentalStatus.COMPLETED
    assert state.delivered_seconds == reports[-1].delivered_seconds, "delivered seconds went unpaid"
    final = assert_settled(
        suite, rental_id, offer_id, from_block, moved, RentalStatus.COMPLETED, reports[-1].covered_until - state.since
    )
    assert final["missedSeconds"] <= EXIT_LATENCY_SECONDS, "time counted missed beyond the job's exit"


def test_a_leader_that_lost_its_state_recovers_it_and_the_rental_is_paid_in_full(
    suite, chain_settings, provider, treasury, renter, replay_offer, tmp_path
):
    offer_id = replay_offer
    before, from_block = Balances.of(suite, provider, treasury, renter), web3.eth.block_number

    rental_id = _run_with_wipe(suite, chain_settings, provider, renter, offer_id, tmp_path, LEADER)

    # The leader holds every report again (seq 1 up, none missing) and landed the latest.
    reports = assert_latest_landed(suite, rental_id, from_block, tmp_path)
    _assert_paid_in_full(
        suite, rental_id, offer_id, from_block, Balances.of(suite, provider, treasury, renter) - before, reports
    )


def test_a_leader_that_lost_the_final_report_it_had_acked_gets_it_back_from_its_peers_and_lands_it(
    suite, chain_settings, provider, treasury, renter, replay_offer, tmp_path
):
    """No later report will come from the agent, which is done: only the peers hold the final report."""
    offer_id = replay_offer
    before, from_block = Balances.of(suite, provider, treasury, renter), web3.eth.block_number
    # The leader holds reports without landing them until it is restarted with its usual epoch.
    holding = {**SINGLE_SUBMITTER, LEADER: {**SINGLE_SUBMITTER[LEADER], "EPOCH_SECONDS": "3600"}}

    rental_id = _run_with_wipe(
        suite,
        chain_settings,
        provider,
        renter,
        offer_id,
        tmp_path,
        LEADER,
        once_final=True,
        per_oracle=holding,
        restart_settings={"EPOCH_SECONDS": "1"},
    )

    reports = assert_latest_landed(suite, rental_id, from_block, tmp_path)
    assert reports[-1].status is ReportStatus.COMPLETED
    _assert_paid_in_full(
        suite, rental_id, offer_id, from_block, Balances.of(suite, provider, treasury, renter) - before, reports
    )


def test_a_peer_that_lost_its_state_still_co_signs(
    suite, chain_settings, provider, treasury, renter, replay_offer, tmp_path
):
    offer_id = replay_offer
    before, from_block = Balances.of(suite, provider, treasury, renter), web3.eth.block_number

    # With the other peer gone, the leader's batches land only if the wiped peer co-signs them.
    rental_id = _run_with_wipe(suite, chain_settings, provider, renter, offer_id, tmp_path, PEER, kill=OTHER_PEER)

    reports = [submission.report for submission, _ in stored_reports(tmp_path, LEADER, rental_id)]
    assert [r.seq for r in reports] == list(range(1, len(reports) + 1))
    assert [s.report for s, _ in stored_reports(tmp_path, PEER, rental_id)] == reports
    _assert_paid_in_full(
        suite, rental_id, offer_id, from_block, Balances.of(suite, provider, treasury, renter) - before, reports
    )
