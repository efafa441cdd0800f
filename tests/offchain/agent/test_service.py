"""The provider agent end to end: rentals opened on the real anvil, jobs run as real processes, reports posted to
real oracle endpoints on loopback, and the reports then applied by the real escrow."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Callable

import pytest
from brownie import web3
from eth_utils import keccak

from offchain.agent.job import ZERO_DIGEST
from offchain.agent.jobspec import JobSpec, JobSpecStore
from offchain.agent.rentals import Phase
from offchain.agent.service import SIMULATED_LABEL, ProviderAgent, SimulatedTelemetryRefused
from offchain.agent.watcher import RentalStatus
from offchain.chain import PROJECT_ROOT
from offchain.messages import TelemetryReport
from offchain.reports import EscrowDomain, Report, ReportStatus, sign_batch
from offchain.telemetry.replay import ReplaySource
from offchain.processes import process_alive
from tests.offchain.agent.helpers import wait_until
from tests.offchain.agent.oracle_server import RecordingOracle
from tests.offchain.conftest import AGENT, AGENT_KEY, ORACLE_KEYS, PRICE

PY = sys.executable
DURATION = 600


def job(code: str, **fields) -> JobSpec:
    return JobSpec(command=(PY, "-c", code), **fields)


async def start_oracles(settings, count: int = 2) -> list[RecordingOracle]:
    """Oracle endpoints that check the agent's signature for this deployment and its outbox at `settings.db_path`."""
    oracles = [RecordingOracle(settings.chain.chain_id, settings.chain.registry, AGENT.address,
                               agent_db=settings.db_path) for _ in range(count)]
    for oracle in oracles:
        await oracle.start()
    return oracles


@asynccontextmanager
async def running(agent: ProviderAgent) -> AsyncIterator[Callable[..., object]]:
    """Runs the agent; yields `until(condition, seconds, what)`, a bounded wait that also fails if the agent
    died."""
    task = asyncio.create_task(agent.run())

    async def until(condition: Callable[[], bool], seconds: float, what: str) -> None:
        await wait_until(lambda: condition() or task.done(), seconds, what)
        if task.done():
            task.result()
            raise AssertionError(f"the agent stopped while waiting for {what}")

    try:
        yield until
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def final_report(oracle: RecordingOracle, rental_id: int) -> TelemetryReport | None:
    reports = oracle.accepted_reports(rental_id)
    return reports[-1] if reports and reports[-1].status is not ReportStatus.RUNNING else None


def assert_continuous(reports: list[TelemetryReport], since: int) -> None:
    assert [r.seq for r in reports] == list(range(reports[0].seq, reports[0].seq + len(reports)))
    assert reports[0].period_start == since
    for previous, report in zip(reports, reports[1:]):
        assert report.period_start == previous.period_end
    for report in reports:
        assert report.delivered_seconds <= report.period_end - report.period_start


def settle(suite, relayer, reports: list[TelemetryReport]):
    """Applies the agent's reports on chain as two of the three oracles would, in one batch."""
    chain_reports: list[Report] = [r.to_chain_report() for r in reports]
    domain = EscrowDomain(chain_id=web3.eth.chain_id, escrow=suite.escrow.address,
                          oracle_set_version=suite.escrow.oracleSet()[0])
    signatures = [sign_batch(chain_reports, domain, key) for key in ORACLE_KEYS[:2]]
    return suite.escrow.submitReports([r.as_tuple() for r in chain_reports], signatures, {"from": relayer})


def rental_state(suite, rental_id: int) -> dict:
    names = ("status", "renter", "pricePerSecond", "duration", "since", "lastSeq", "reportedSeconds",
             "deliveredSeconds", "earned")
    state = dict(zip(names, suite.escrow.getRental(rental_id)))
    state["status"] = RentalStatus(state["status"])
    return state


def test_rental_runs_to_a_completion_report_that_settles_on_chain(suite, renter, relayer, gpu_offer, agent_settings,
                                                                 caplog):
    caplog.set_level(logging.INFO, logger="offchain.agent")
    listed = gpu_offer()
    settings = agent_settings([])
    spec = job("import time; time.sleep(4); print('trained')")
    JobSpecStore(settings.spec_directory).put(spec)

    async def main():
        oracles = await start_oracles(settings)
        agent = ProviderAgent(settings.model_copy(update={"oracles": [o.url for o in oracles]}), listed.source)
        try:
            async with running(agent) as until:
                rental = (await asyncio.to_thread(suite.escrow.openRental, listed.offer_id, DURATION, PRICE,
                                                  spec.spec_hash(), {"from": renter})).return_value
                await until(lambda: all(final_report(o, rental) for o in oracles), 40, "the completion report")
                await until(lambda: agent.book.get(rental).phase is Phase.DONE, 5, "the rental to be done")
        finally:
            for oracle in oracles:
                await oracle.stop()
        return rental, oracles

    rental, oracles = asyncio.run(main())

    state = rental_state(suite, rental)
    assert state["status"] is RentalStatus.RUNNING and state["lastSeq"] == 0, "started by the agent's start()"
    reports = oracles[0].accepted_reports(rental)
    assert reports == oracles[1].accepted_reports(rental)
    assert_continuous(reports, state["since"])
    assert len(reports) >= 3
    assert {r.status for r in reports[:-1]} == {ReportStatus.RUNNING}
    last = reports[-1]
    assert (last.status, last.exit_code, last.result_digest) == (ReportStatus.COMPLETED, 0, keccak(b"trained\n"))
    assert all(r.simulated and r.gpu_uuids == tuple(g.uuid for g in listed.source.gpus()) for r in reports)
    assert sum(r.delivered_seconds for r in reports) >= 2
    assert all(r.sample_count >= 2 * r.delivered_seconds for r in reports)
    assert all(o.violations == [] and set(o.statuses()) == {202} for o in oracles)

    settle(suite, relayer, reports)
    settled = rental_state(suite, rental)
    assert settled["status"] is RentalStatus.COMPLETED
    assert settled["deliveredSeconds"] == sum(r.delivered_seconds for r in reports)

    agent_lines = [r for r in caplog.records if r.name.startswith("offchain.agent")]
    assert agent_lines and all(r.getMessage().startswith(SIMULATED_LABEL) for r in agent_lines)


@pytest.mark.parametrize("spec, exit_code, digest", [
    pytest.param(job("import sys, time; time.sleep(2); open('loss.txt', 'w').write('nan'); sys.exit(3)",
                     result_file="loss.txt"), 3, keccak(b"nan"), id="exit-3"),
    pytest.param(job("import time; time.sleep(300)", timeout_seconds=2), -signal.SIGTERM, keccak(b""),
                 id="timeout"),
    pytest.param(JobSpec(command=("/nonexistent/bin/train",)), 127, ZERO_DIGEST, id="not-startable"),
])
def test_a_failing_job_sends_a_failed_report_with_its_exit_code_and_result(suite, renter, relayer, gpu_offer,
                                                                          agent_settings, spec, exit_code, digest):
    listed = gpu_offer()
    settings = agent_settings([])
    JobSpecStore(settings.spec_directory).put(spec)

    async def main():
        oracles = await start_oracles(settings, count=1)
        agent = ProviderAgent(settings.model_copy(update={"oracles": [oracles[0].url]}), listed.source)
        try:
            async with running(agent) as until:
                rental = (await asyncio.to_thread(suite.escrow.openRental, listed.offer_id, DURATION, PRICE,
                                                  spec.spec_hash(), {"from": renter})).return_value
                await until(lambda: final_report(oracles[0], rental) is not None, 30, "the completion report")
        finally:
            await oracles[0].stop()
        return rental, oracles[0]

    rental, oracle = asyncio.run(main())

    reports = oracle.accepted_reports(rental)
    assert_continuous(reports, rental_state(suite, rental)["since"])
    assert (reports[-1].status, reports[-1].exit_code, reports[-1].result_digest) == (
        ReportStatus.FAILED, exit_code, digest)
    settle(suite, relayer, reports)
    assert rental_state(suite, rental)["status"] is RentalStatus.FAILED


def test_the_end_of_the_paid_time_stops_the_job_and_closes_the_last_period(suite, renter, relayer, gpu_offer,
                                                                          agent_settings):
    listed = gpu_offer(min_duration=1)
    settings = agent_settings([])
    spec = job("import os, time; open('job.pid', 'w').write(str(os.getpid())); time.sleep(300)")
    JobSpecStore(settings.spec_directory).put(spec)

    async def main():
        oracles = await start_oracles(settings, count=1)
        agent = ProviderAgent(settings.model_copy(update={"oracles": [oracles[0].url]}), listed.source)
        try:
            async with running(agent) as until:
                rental = (await asyncio.to_thread(suite.escrow.openRental, listed.offer_id, 4, PRICE,
                                                  spec.spec_hash(), {"from": renter})).return_value
                await until(lambda: agent.book.get(rental) is not None
                            and agent.book.get(rental).phase is Phase.DONE, 30, "the rental to end")
                await until(lambda: agent.outbox.pending_count() == 0, 10, "the last report to be delivered")
        finally:
            await oracles[0].stop()
        return rental, oracles[0]

    rental, oracle = asyncio.run(main())

    reports = oracle.accepted_reports(rental)
    since = rental_state(suite, rental)["since"]
    assert_continuous(reports, since)
    assert reports[-1].period_end == since + 4
    assert all(r.status is ReportStatus.RUNNING for r in reports)
    first = reports[0]
    assert first.delivered_seconds == first.period_end - first.period_start, "sampled from the billed start"
    assert agent_outcome(settings, rental) == "ended before the job"
    assert not process_alive(int((settings.rentals_dir / str(rental) / "work" / "job.pid").read_text()))
    settle(suite, relayer, reports)
    assert rental_state(suite, rental)["reportedSeconds"] == 4


def test_renter_termination_stops_the_job_and_closes_the_last_period(suite, renter, relayer, gpu_offer,
                                                                     agent_settings):
    listed = gpu_offer()
    settings = agent_settings([])
    spec = job("import os, time; open('job.pid', 'w').write(str(os.getpid())); time.sleep(300)")
    JobSpecStore(settings.spec_directory).put(spec)

    async def main():
        oracles = await start_oracles(settings, count=1)
        oracle = oracles[0]
        agent = ProviderAgent(settings.model_copy(update={"oracles": [oracle.url]}), listed.source)
        try:
            async with running(agent) as until:
                rental = (await asyncio.to_thread(suite.escrow.openRental, listed.offer_id, DURATION, PRICE,
                                                  spec.spec_hash(), {"from": renter})).return_value
                await until(lambda: len(oracle.accepted_reports(rental)) >= 2, 30, "two reports")
                terminate = await asyncio.to_thread(suite.escrow.terminate, rental, {"from": renter})
                terminated_at = time.monotonic()
                await until(lambda: agent.book.get(rental).phase is Phase.DONE, 15, "the agent to close the rental")
                stopped_after = time.monotonic() - terminated_at
                await until(lambda: agent.outbox.pending_count() == 0, 10, "the last report to be delivered")
        finally:
            await oracle.stop()
        return rental, oracle, terminate.timestamp, stopped_after

    rental, oracle, ends_at, stopped_after = asyncio.run(main())

    job_pid = int((settings.rentals_dir / str(rental) / "work" / "job.pid").read_text())
    assert not process_alive(job_pid)
    assert stopped_after < 10
    reports = oracle.accepted_reports(rental)
    state = rental_state(suite, rental)
    assert state["status"] is RentalStatus.TERMINATED
    assert_continuous(reports, state["since"])
    assert all(r.status is ReportStatus.RUNNING for r in reports)
    # The agent learns of the termination a poll after it: its last period either closes at the new end or, when
    # a regular report already crossed it, was the one before (the escrow clamps it to the end).
    assert reports[-1].period_start < ends_at <= reports[-1].period_end
    assert agent_outcome(settings, rental) in ("ended before the job", "ended; every second was already reported")
    settle(suite, relayer, reports)
    assert rental_state(suite, rental)["lastSeq"] == reports[-1].seq


def undelivered(db_path: Path) -> int:
    with sqlite3.connect(db_path) as db:
        return db.execute("SELECT COUNT(*) FROM outbox_deliveries WHERE state != 'acked'").fetchone()[0]


def agent_outcome(settings, rental_id: int) -> str:
    with sqlite3.connect(settings.db_path) as db:
        return db.execute("SELECT outcome FROM rentals WHERE rental_id = ?", (str(rental_id),)).fetchone()[0]


def test_a_rental_its_first_report_already_started_continues_from_the_chain(suite, renter, relayer, gpu_offer,
                                                                           agent_settings):
    """start() reverts (the rental runs since its opening, started by a report): the agent sends no transaction
    and continues the report sequence from the chain's lastSeq and reportedSeconds."""
    listed = gpu_offer()
    settings = agent_settings([])
    spec = job("import time; time.sleep(2)")
    JobSpecStore(settings.spec_directory).put(spec)
    opened = suite.escrow.openRental(listed.offer_id, DURATION, PRICE, spec.spec_hash(), {"from": renter})
    rental, opened_at = opened.return_value, opened.timestamp
    while time.time() < opened_at + 2:
        time.sleep(0.1)
    first = Report(rental_id=rental, seq=1, period_end=opened_at + 1, delivered_seconds=1, avg_util_bps=9_000)
    domain = EscrowDomain(chain_id=web3.eth.chain_id, escrow=suite.escrow.address,
                          oracle_set_version=suite.escrow.oracleSet()[0])
    suite.escrow.submitReports([first.as_tuple()], [sign_batch([first], domain, k) for k in ORACLE_KEYS[:2]],
                               {"from": relayer})
    nonce_before = web3.eth.get_transaction_count(AGENT.address)

    async def main():
        oracles = await start_oracles(settings, count=1)
        oracles[0].chain_last_seq[rental] = 1
        agent = ProviderAgent(settings.model_copy(update={"oracles": [oracles[0].url]}), listed.source)
        try:
            async with running(agent) as until:
                await until(lambda: final_report(oracles[0], rental) is not None, 30, "the completion report")
        finally:
            await oracles[0].stop()
        return oracles[0]

    oracle = asyncio.run(main())

    assert web3.eth.get_transaction_count(AGENT.address) == nonce_before
    reports = oracle.accepted_reports(rental)
    assert reports[0].seq == 2
    assert_continuous(reports, opened_at + 1)
    settle(suite, relayer, reports)
    assert rental_state(suite, rental)["status"] is RentalStatus.COMPLETED


def test_a_replayed_trace_drives_the_reports(suite, renter, relayer, gpu_offer, agent_settings):
    """The recorded trace, played back on the wall clock, measures the rental as a live source would; its reports
    say they are not live measurements."""
    listed = gpu_offer(source=ReplaySource(PROJECT_ROOT / "tests" / "data" / "trace-simulated-2gpu.jsonl",
                                           rebase=True))
    settings = agent_settings([])
    spec = job("import time; time.sleep(3)")
    JobSpecStore(settings.spec_directory).put(spec)

    async def main():
        oracles = await start_oracles(settings, count=1)
        agent = ProviderAgent(settings.model_copy(update={"oracles": [oracles[0].url]}), listed.source)
        try:
            async with running(agent) as until:
                rental = (await asyncio.to_thread(suite.escrow.openRental, listed.offer_id, DURATION, PRICE,
                                                  spec.spec_hash(), {"from": renter})).return_value
                await until(lambda: final_report(oracles[0], rental) is not None, 30, "the completion report")
        finally:
            await oracles[0].stop()
        return rental, oracles[0]

    rental, oracle = asyncio.run(main())

    reports = oracle.accepted_reports(rental)
    assert_continuous(reports, rental_state(suite, rental)["since"])
    assert reports[-1].status is ReportStatus.COMPLETED
    assert all(r.simulated for r in reports)
    assert sum(r.delivered_seconds for r in reports) >= 2
    assert max(r.peak_mem_mib for r in reports) > 0
    settle(suite, relayer, reports)
    assert rental_state(suite, rental)["status"] is RentalStatus.COMPLETED


def test_simulated_telemetry_is_refused_without_the_explicit_flag(gpu_offer, agent_settings):
    with pytest.raises(SimulatedTelemetryRefused):
        ProviderAgent(agent_settings(["http://127.0.0.1:9"], allow_simulated=False), gpu_offer().source)


def test_kill_9_and_restart_loses_no_report_and_resends_none_an_oracle_acked(suite, renter, relayer, gpu_offer,
                                                                            agent_settings, tmp_path):
    """The agent runs as its own process, configured from the environment. It is SIGKILLed twice: once at a random
    point after two reports, once right after the first oracle accepted a report but before the agent saw the 202.
    Each restart stops the job the dead agent left running and launches it again. In the end each oracle holds
    every report exactly once, in one continuous sequence that the escrow applies, and the only repeat is the
    report whose ack the killed agent never saw."""
    listed = gpu_offer()
    settings = agent_settings([])
    spec = job(
        "import os, signal, sys, time\n"
        "def stopped(*_):\n"
        "    open('stopped', 'a').write(f'{os.getpid()}\\n')\n"
        "    sys.exit(143)\n"
        "signal.signal(signal.SIGTERM, stopped)\n"
        "open('pids', 'a').write(f'{os.getpid()}\\n')\n"
        "time.sleep(6)\n"
        "print('ok')\n")
    JobSpecStore(settings.spec_directory).put(spec)
    key_file = tmp_path / "agent.key"
    key_file.write_text(AGENT_KEY.hex())

    async def main():
        oracles = await start_oracles(settings)
        env = {
            **os.environ,
            "PYTHONPATH": str(PROJECT_ROOT),
            "GPUEX_AGENT_CHAIN__RPC_URL": settings.chain.rpc_url,
            "GPUEX_AGENT_CHAIN__CHAIN_ID": str(settings.chain.chain_id),
            "GPUEX_AGENT_CHAIN__REGISTRY": settings.chain.registry,
            "GPUEX_AGENT_CHAIN__ESCROW": settings.chain.escrow,
            "GPUEX_AGENT_KEY_FILE": str(key_file),
            "GPUEX_AGENT_PROVIDER": settings.provider,
            "GPUEX_AGENT_ORACLES": "[" + ",".join(f'"{o.url}"' for o in oracles) + "]",
            "GPUEX_AGENT_ALLOW_SIMULATED": "true",
            "GPUEX_AGENT_STATE_DIR": str(settings.state_dir),
            "GPUEX_AGENT_REPORT_INTERVAL_SECONDS": "1",
            "GPUEX_AGENT_CHAIN_POLL_SECONDS": "0.2",
            "GPUEX_AGENT_STOP_GRACE_SECONDS": "1",
            "GPUEX_AGENT_RETRY_INITIAL_SECONDS": "0.1",
            "GPUEX_AGENT_RETRY_MAX_SECONDS": "0.5",
            "GPUEX_AGENT_START_BLOCK": str(settings.start_block),
        }
        argv = [PY, str(Path(__file__).with_name("agent_process.py")), str(listed.seed)]
        log_file = (tmp_path / "agent.log").open("ab")
        agents: list[asyncio.subprocess.Process] = []
        ack_window_seq: list[int] = []

        async def spawn() -> asyncio.subprocess.Process:
            agents.append(await asyncio.create_subprocess_exec(*argv, env=env, stdout=log_file, stderr=log_file))
            return agents[-1]

        async def kill_before_the_ack(report: TelemetryReport) -> None:
            if report.seq in ack_window_seq:
                ack_window_seq.clear()
                agents[-1].send_signal(signal.SIGKILL)
                await agents[-1].wait()

        oracles[0].before_accept_answer = kill_before_the_ack
        rental = None
        try:
            process = await spawn()
            rental = (await asyncio.to_thread(suite.escrow.openRental, listed.offer_id, DURATION, PRICE,
                                              spec.spec_hash(), {"from": renter})).return_value
            await wait_until(lambda: len(oracles[0].accepted_reports(rental)) >= 2, 30, "two reports")
            await asyncio.sleep(0.37)
            process.send_signal(signal.SIGKILL)
            await asyncio.wait_for(process.wait(), 10)

            ack_window_seq.append(len(oracles[0].accepted_reports(rental)) + 2)
            process = await spawn()
            await asyncio.wait_for(process.wait(), 30)
            assert process.returncode == -signal.SIGKILL and not ack_window_seq

            await spawn()
            await wait_until(lambda: all(final_report(o, rental) for o in oracles), 40, "the completion report")
            await wait_until(lambda: not undelivered(settings.db_path), 10, "every delivery to be acked")
        finally:
            for process in agents:
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
                    await asyncio.wait_for(process.wait(), 10)
            for oracle in oracles:
                await oracle.stop()
            log_file.close()
        return rental, oracles

    rental, oracles = asyncio.run(main())

    reports = oracles[0].accepted_reports(rental)
    assert reports == oracles[1].accepted_reports(rental)
    assert_continuous(reports, rental_state(suite, rental)["since"])
    assert (reports[-1].status, reports[-1].exit_code, reports[-1].result_digest) == (
        ReportStatus.COMPLETED, 0, keccak(b"ok\n"))
    for oracle in oracles:
        assert oracle.violations == [], "no report was posted before it was committed, or after its ack was"
        assert sorted(oracle.accepted) == [(rental, r.seq) for r in reports], "every report exactly once"
        assert set(oracle.statuses()) <= {200, 202}
    assert any(a.status == 200 for a in oracles[0].answers), "the report whose ack was lost was sent again"
    work = settings.rentals_dir / str(rental) / "work"
    launches = [int(p) for p in (work / "pids").read_text().split()]
    assert len(launches) == 3, "the job was launched again after each restart"
    assert [int(p) for p in (work / "stopped").read_text().split()] == launches[:2], \
        "each restart stopped the job the dead agent left running"
    assert not any(process_alive(pid) for pid in launches)
    settle(suite, relayer, reports)
    assert rental_state(suite, rental)["status"] is RentalStatus.COMPLETED
