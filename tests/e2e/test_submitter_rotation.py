"""No single oracle decides what lands: every oracle of the 2-of-3 set (as processes, `python -m offchain.oracle`)
lands co-signed reports in its turn and stands in for the oracles before it (`offchain.oracle.rotation`). An oracle
killed for good mid-rental, or one that never lands a provider's reports (cut off from the agent, and sending
nothing), delays them by a hand-off at most, and the provider is paid and not slashed; two oracles that both land
everything as soon as it is due (`SUBMIT=always`, what the single leader of old did) land each report once.

Every scenario lands a running rental's latest report every CHECKPOINT seconds, so that the turn of several
reports passes through the set while the job runs.
"""

from __future__ import annotations

import asyncio
import re

import pytest
from brownie import web3

from offchain.agent.rentals import Phase
from offchain.protocol.status import RentalStatus, SkipReason
from offchain.telemetry.replay import ReplaySource
from tests.e2e.conftest import oracle_processes, running_agent, stored_reports
from tests.e2e.test_settlement import EXIT_LATENCY_SECONDS, PRICE, TRACE, job, put_spec, rental_state
from tests.offchain.conftest import ORACLES

CHECKPOINT = 4
HANDOFF = 2  # the last of three turns 4 s after a report is due: within half of REPORT_GRACE with 1 s epochs
SETTINGS = {"CHECKPOINT_INTERVAL_SECONDS": str(CHECKPOINT), "HANDOFF_SECONDS": str(HANDOFF)}
DURATION = 60  # paid for; every job here ends before, and an unreported rental is final-able 70 s after its start


@pytest.fixture(scope="module")
def replay_offer(list_offer):
    """An offer of the replayed trace's GPUs, rented by one scenario after another."""
    return list_offer([gpu.uuid for gpu in ReplaySource(TRACE).gpus()])


def open_rental(suite, offer_id: int, script: str, renter, state_root) -> int:
    spec = job(script)
    put_spec(state_root, spec)
    return suite.escrow.openRental(offer_id, DURATION, PRICE, spec.spec_hash(), {"from": renter}).return_value


def escrow_logs(suite, name: str, rental_id: int, from_block: int) -> list:
    escrow = web3.eth.contract(address=suite.escrow.address, abi=suite.escrow.abi)
    return list(
        getattr(escrow.events, name)().get_logs(from_block=from_block, argument_filters={"rentalId": rental_id})
    )


def submitters(logs) -> list[str]:
    """Who sent the transaction of each log."""
    return [web3.eth.get_transaction(log["transactionHash"])["from"] for log in logs]


def sent_by(logs) -> list[tuple[str, int]]:
    """(sender, seq) of each ReportApplied or ReportSkipped log: which oracle's transaction carried which report."""
    return [(sender, log["args"]["seq"]) for sender, log in zip(submitters(logs), logs)]


def submitted(metrics: str, role: str) -> int:
    found = re.search(rf'^gpuex_oracle_reports_submitted_total{{role="{role}"}} (\d+)$', metrics, re.MULTILINE)
    return int(found.group(1)) if found else 0


def assert_each_report_landed_once(suite, rental_id: int, from_block: int, latest_seq: int) -> list:
    """The chain applied a rising run of the rental's reports, each once, ending with the latest; whatever a second
    oracle sent again was skipped as a replay. Returns the ReportApplied logs."""
    applied = escrow_logs(suite, "ReportApplied", rental_id, from_block)
    seqs = [log["args"]["seq"] for log in applied]
    assert seqs and seqs == sorted(set(seqs)) and seqs[-1] == latest_seq, f"applied {seqs}, latest {latest_seq}"
    for log in escrow_logs(suite, "ReportSkipped", rental_id, from_block):
        assert log["args"]["reason"] in (SkipReason.SEQ_NOT_INCREASING, SkipReason.RENTAL_CLOSED)
        assert log["args"]["seq"] in seqs, "a report was skipped that never applied"
    return applied


def assert_paid_in_full(suite, rental_id: int, from_block: int) -> None:
    state = rental_state(suite, rental_id)
    assert state.status is RentalStatus.COMPLETED
    (final,) = escrow_logs(suite, "RentalFinalized", rental_id, from_block)
    assert final["args"]["deliveredSeconds"] == state.delivered_seconds > 0
    assert final["args"]["missedSeconds"] <= EXIT_LATENCY_SECONDS, "time counted missed beyond the job's exit"


def next_checkpoint_is_the_turn_of(suite, rental_id: int, signer: str) -> bool:
    """Whether the rental's next checkpoint, still more than a second away on the chain's clock, is due in the
    turn of `signer`: its due time is the applied coverage plus CHECKPOINT, and the turn of a due time picks the
    signer at `(due // HANDOFF) mod n` of the escrow's set."""
    state = rental_state(suite, rental_id)
    if state.status is not RentalStatus.RUNNING or state.covered_seconds == 0:
        return False
    due = state.covered_until + CHECKPOINT
    signers = suite.read(lambda r: r.oracle_set()).signers
    return web3.eth.get_block("latest")["timestamp"] < due - 1 and signers[(due // HANDOFF) % len(signers)] == signer


def test_an_oracle_killed_for_good_mid_rental_is_stood_in_for_and_nobody_is_slashed(
    suite, chain_settings, provider, renter, replay_offer, tmp_path
):
    """Oracle 0 dies for good just before a checkpoint due in its own turn: the next oracle lands that report a
    hand-off later, the others land the rest, and the job's final report settles it, paid in full."""
    from_block = web3.eth.block_number

    async def main() -> tuple[int, int, list[str]]:
        async with oracle_processes(chain_settings, tmp_path, settings=SETTINGS) as cluster:
            async with running_agent(
                chain_settings, tmp_path, provider.address, ReplaySource(TRACE, rebase=True), cluster.urls
            ) as ex:
                rental_id = await asyncio.to_thread(
                    open_rental, suite, replay_offer, "sleep 24; echo trained", renter, tmp_path
                )
                await ex.until_chain(
                    lambda: next_checkpoint_is_the_turn_of(suite, rental_id, ORACLES[0].address),
                    40,
                    "a checkpoint due in oracle 0's turn",
                )
                cluster.oracles[0].kill()
                killed_at = web3.eth.block_number + 1
                await ex.until_chain(
                    lambda: rental_state(suite, rental_id).status.is_final, 60, f"rental {rental_id} to be final"
                )
                await ex.until(lambda: ex.agent.book.get(rental_id).phase is Phase.DONE, 10, "the agent to be done")
                return rental_id, killed_at, [await cluster.oracles[i].metrics() for i in (1, 2)]

    rental_id, killed_at, metrics = asyncio.run(main())

    latest = stored_reports(tmp_path, 1, rental_id)[-1][0].report.seq
    applied = assert_each_report_landed_once(suite, rental_id, from_block, latest)
    after_kill = [log for log in applied if log["blockNumber"] >= killed_at]
    assert len(after_kill) >= 2, "the checkpoint in oracle 0's turn and the final report"
    assert set(submitters(after_kill)) <= {ORACLES[1].address, ORACLES[2].address}
    assert sum(submitted(m, "fallback") for m in metrics) >= 1, "nobody stood in for oracle 0"
    assert_paid_in_full(suite, rental_id, from_block)


def test_an_oracle_that_never_lands_a_providers_reports_cannot_get_it_slashed(
    suite, chain_settings, provider, renter, replay_offer, tmp_path
):
    """Oracle 0 censors: the agent cannot reach it and it sends nothing (`SUBMIT=never`, as an operator who turned
    its submissions off), though its turns come round like anyone's. The others stand in for it in its turns and
    land every report (2 of 3 co-sign), the job's final report settles the rental, and the provider is paid in full
    and not slashed."""
    from_block = web3.eth.block_number
    censor = {0: {"SUBMIT": "never"}}

    async def main() -> int:
        async with oracle_processes(chain_settings, tmp_path, settings=SETTINGS, per_oracle=censor) as cluster:
            async with running_agent(
                chain_settings, tmp_path, provider.address, ReplaySource(TRACE, rebase=True), cluster.urls[1:]
            ) as ex:
                rental_id = await asyncio.to_thread(
                    open_rental, suite, replay_offer, "sleep 16; echo trained", renter, tmp_path
                )
                await ex.until_chain(
                    lambda: rental_state(suite, rental_id).status.is_final,
                    DURATION + 20,
                    f"rental {rental_id} to be final",
                )
                await ex.until(lambda: ex.agent.book.get(rental_id).phase is Phase.DONE, 10, "the agent to be done")
                return rental_id

    rental_id = asyncio.run(main())

    latest = stored_reports(tmp_path, 1, rental_id)[-1][0].report.seq
    applied = assert_each_report_landed_once(suite, rental_id, from_block, latest)
    assert len(applied) >= 3, "a checkpoint or two and the final report"
    assert set(submitters(applied)) <= {ORACLES[1].address, ORACLES[2].address}
    assert_paid_in_full(suite, rental_id, from_block)


def test_two_oracles_that_both_believe_they_lead_land_each_report_once(
    suite, chain_settings, provider, renter, replay_offer, tmp_path
):
    """Oracles 0 and 1 land every report as soon as it is due (`SUBMIT=always`), oracle 2 co-signs only: each
    report applies once, a copy the other sent is skipped as a replay, and neither sends a report twice."""
    from_block = web3.eth.block_number
    both_lead = {0: {"SUBMIT": "always"}, 1: {"SUBMIT": "always"}, 2: {"SUBMIT": "never"}}

    async def main() -> int:
        async with oracle_processes(chain_settings, tmp_path, settings=SETTINGS, per_oracle=both_lead) as cluster:
            async with running_agent(
                chain_settings, tmp_path, provider.address, ReplaySource(TRACE, rebase=True), cluster.urls
            ) as ex:
                rental_id = await asyncio.to_thread(
                    open_rental, suite, replay_offer, "sleep 12; echo trained", renter, tmp_path
                )
                await ex.until_chain(
                    lambda: rental_state(suite, rental_id).status.is_final, 40, f"rental {rental_id} to be final"
                )
                await ex.until(lambda: ex.agent.book.get(rental_id).phase is Phase.DONE, 10, "the agent to be done")
                return rental_id

    rental_id = asyncio.run(main())

    latest = stored_reports(tmp_path, 0, rental_id)[-1][0].report.seq
    applied = assert_each_report_landed_once(suite, rental_id, from_block, latest)
    assert len(applied) >= 3, "a checkpoint or two and the final report"
    assert set(submitters(applied)) <= {ORACLES[0].address, ORACLES[1].address}
    sent = sent_by(applied + escrow_logs(suite, "ReportSkipped", rental_id, from_block))
    assert len(sent) == len(set(sent)), "an oracle sent a report twice"
    assert {sender for sender, _ in sent} <= {ORACLES[0].address, ORACLES[1].address}
    assert_paid_in_full(suite, rental_id, from_block)
