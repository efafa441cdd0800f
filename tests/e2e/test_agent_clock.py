"""A provider machine whose clock is off bills by the chain's clock: an honest job on an agent 20 s fast or 20 s slow
is paid for the seconds it ran, with none missed and no SLA slash. The rental runs on the chain's block timestamps;
the agent stamps its samples and report periods on the chain's time, measured from the blocks it reads, so its own
clock's error drops out (it is well inside the oracles' 30 s tolerance, which is why it went unnoticed: the
oracles took its reports)."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest
from brownie import web3

from offchain.agent.rentals import Phase
from offchain.ops import inprocess
from offchain.ops.inprocess import ProviderMachine
from offchain.protocol.reports import ReportStatus
from offchain.protocol.status import RentalStatus
from offchain.telemetry.simulated import SimulatedSource
from tests.e2e.test_settlement import (
    Balances,
    assert_latest_landed,
    assert_settled,
    job,
    open_rental,
    put_spec,
    rental_state,
)
from tests.offchain.conftest import AGENT_KEY, ORACLE_KEYS

SKEW_SECONDS = 20
JOB_SECONDS = 20
#: Seconds of the rental before its job runs: the start mined, the container created.
START_LATENCY_SECONDS = 5


def job_run_seconds(state_root, rental_id: int) -> float:
    """How long the job ran, by the container engine's start and finish times."""
    with sqlite3.connect(state_root / "agent" / "agent.sqlite") as db:
        started, finished = db.execute(
            "SELECT job_started_at, job_finished_at FROM rentals WHERE rental_id = ?", (str(rental_id),)
        ).fetchone()
    return finished - started


@pytest.mark.parametrize("skew", [SKEW_SECONDS, -SKEW_SECONDS], ids=["fast", "slow"])
def test_an_agent_whose_clock_is_off_is_paid_for_the_seconds_its_job_ran(
    skew, suite, chain_settings, provider, treasury, renter, list_offer, tmp_path
):
    def machine_clock() -> float:
        return time.time() + skew

    source = SimulatedSource("NVIDIA H100 80GB HBM3", 2, seed=5150 + skew, clock=machine_clock)
    offer_id = list_offer([gpu.uuid for gpu in source.gpus()])
    spec = job(f"sleep {JOB_SECONDS}")
    put_spec(tmp_path, spec)
    before, from_block = Balances.of(suite, provider, treasury, renter), web3.eth.block_number
    machine = ProviderMachine(provider.address, AGENT_KEY, source, clock=machine_clock)

    async def main() -> int:
        async with inprocess.running_exchange(chain_settings, tmp_path, ORACLE_KEYS, machine) as ex:
            rental_id = await asyncio.to_thread(open_rental, suite, offer_id, spec, renter)
            await ex.until_chain(
                lambda: rental_state(suite, rental_id).status.is_final, JOB_SECONDS + 40, "the rental to be final"
            )
            await ex.until(lambda: ex.agent.book.get(rental_id).phase is Phase.DONE, 10, "the agent to be done")
            return rental_id

    rental_id = asyncio.run(main())

    reports = assert_latest_landed(suite, rental_id, from_block, tmp_path)
    assert (reports[-1].status, reports[-1].exit_code) == (ReportStatus.COMPLETED, 0)
    state = rental_state(suite, rental_id)
    elapsed = reports[-1].covered_until - state.since
    ran = job_run_seconds(tmp_path, rental_id)
    assert ran - 1 <= elapsed <= ran + START_LATENCY_SECONDS, "the rental's coverage is not the job's run"
    assert elapsed - state.delivered_seconds <= 1, "seconds of the job went missing"
    moved = Balances.of(suite, provider, treasury, renter) - before
    final = assert_settled(suite, rental_id, offer_id, from_block, moved, RentalStatus.COMPLETED, elapsed)
    assert (final["slashed"], moved.compensation) == (0, 0)
    assert moved.provider > 0
