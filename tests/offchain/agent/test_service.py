"""The provider agent end to end: rentals opened on the real anvil, jobs run in real podman containers, reports posted
to real oracle endpoints on loopback, and the reports then applied by the real escrow."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from brownie import web3
from eth_utils import keccak

from offchain.agent.containers import AGENT_LABEL, ContainerPlan, Engine, agent_label, labels
from offchain.agent.jobspec import JobResources, JobSpec, JobSpecStore
from offchain.agent.rentals import Phase
from offchain.agent.service import SIMULATED_LABEL, ProviderAgent, SimulatedTelemetryRefused
from offchain.agent.workspace import RentalFiles
from offchain.chain.contracts import PROJECT_ROOT
from offchain.chain.reads import Rental
from offchain.protocol.digest import TelemetryDomain, recover_address
from offchain.protocol.messages import ZERO_ROOT, TelemetryReport
from offchain.protocol.reports import EscrowDomain, Report, ReportStatus, sign_batch, submit_args
from offchain.protocol.status import DeclineReason, RentalStatus
from offchain.telemetry.replay import ReplaySource
from offchain.telemetry.simulated import SimulatedSource
from offchain.telemetry.source import TelemetrySource
from tests.offchain.agent.harness import (
    DURATION,
    agent_process,
    agent_with_oracles,
    final_report,
    job,
    open_rental,
    rental_done,
    running,
    start_oracles,
)
from tests.offchain.agent.helpers import wait_until
from tests.offchain.agent.oracle_server import RecordingOracle
from tests.offchain.conftest import AGENT, AGENT_KEY, ORACLE_KEYS, PRICE


def assert_continuous(reports: list[TelemetryReport], since: int) -> None:
    """One unbroken cumulative sequence: each report starts where the previous one's coverage ended, chains its
    telemetry root and adds to its totals no more than its period holds."""
    assert [r.seq for r in reports] == list(range(reports[0].seq, reports[0].seq + len(reports)))
    assert reports[0].period_start == since
    assert reports[0].prev_root == ZERO_ROOT
    for previous, report in zip(reports, reports[1:]):
        assert report.period_start == previous.covered_until
        assert report.prev_root == previous.telemetry_root
        delivered = report.delivered_seconds - previous.delivered_seconds
        assert 0 <= delivered <= report.period_seconds
        assert 0 <= report.util_seconds - previous.util_seconds <= delivered
    assert reports[0].delivered_seconds <= reports[0].period_seconds


def settle(suite, relayer, reports: list[TelemetryReport]):
    """Applies reports on chain as two of the three oracles would, in one batch (the latest alone carries the
    rental's totals, as the oracles land it)."""
    chain_reports: list[Report] = [r.to_chain_report() for r in reports]
    domain = EscrowDomain(
        chain_id=web3.eth.chain_id,
        escrow=suite.escrow.address,
        oracle_set_version=suite.read(lambda r: r.oracle_set()).version,
    )
    signatures = [sign_batch(chain_reports, domain, key) for key in ORACLE_KEYS[:2]]
    return suite.escrow.submitReports(
        *submit_args(chain_reports, signatures, domain.oracle_set_version), {"from": relayer}
    )


def rental_state(suite, rental_id: int) -> Rental:
    return suite.read(lambda r: r.rental(rental_id))


def book_row(settings, rental_id: int) -> sqlite3.Row:
    with sqlite3.connect(settings.db_path) as db:
        db.row_factory = sqlite3.Row
        return db.execute("SELECT * FROM rentals WHERE rental_id = ?", (str(rental_id),)).fetchone()


def agent_outcome(settings, rental_id: int) -> str:
    return book_row(settings, rental_id)["outcome"]


def undelivered(db_path: Path) -> int:
    with sqlite3.connect(db_path) as db:
        return db.execute("SELECT COUNT(*) FROM outbox_deliveries WHERE state != 'acked'").fetchone()[0]


async def containers_gone(settings, names: list[str], seconds: float = 15) -> None:
    """Waits until none of `names` is among the agent's containers (it removes a done rental's container right
    after its last report is committed)."""
    engine, deadline = Engine(settings.container), time.monotonic() + seconds
    label = agent_label(AGENT.address, settings.state_dir)
    while set(names) & set(await engine.labelled(AGENT_LABEL, label)):
        assert time.monotonic() < deadline, f"containers {names} still there"
        await asyncio.sleep(0.2)


def test_rental_runs_to_a_completion_report_that_settles_on_chain(
    suite, renter, relayer, gpu_offer, agent_settings, caplog
):
    caplog.set_level(logging.INFO, logger="offchain.agent")
    listed = gpu_offer()
    settings = agent_settings([])
    spec = job("sleep 4; echo trained")
    JobSpecStore(settings.spec_directory).put(spec)

    async def main():
        async with agent_with_oracles(settings, listed.source, count=2) as (agent, oracles, until):
            rental = await open_rental(suite, renter, listed.offer_id, spec)
            await until(lambda: all(final_report(o, rental) for o in oracles), 40, "the completion report")
            await until(lambda: agent.book.get(rental).phase is Phase.DONE, 5, "the rental to be done")
            await containers_gone(settings, [agent.book.get(rental).container])
        return rental, oracles

    rental, oracles = asyncio.run(main())

    state = rental_state(suite, rental)
    assert state.status is RentalStatus.RUNNING and state.last_seq == 0, "started by the agent's start()"
    reports = oracles[0].accepted_reports(rental)
    assert reports == oracles[1].accepted_reports(rental)
    assert_continuous(reports, state.since)
    assert len(reports) >= 3
    assert {r.status for r in reports[:-1]} == {ReportStatus.RUNNING}
    last = reports[-1]
    assert (last.status, last.exit_code, last.result_digest) == (ReportStatus.COMPLETED, 0, keccak(b"trained\n"))
    assert all(r.simulated and r.gpu_uuids == tuple(g.uuid for g in listed.source.gpus()) for r in reports)
    assert reports[-1].delivered_seconds >= 2
    assert sum(r.sample_count for r in reports) >= 2 * reports[-1].delivered_seconds
    assert all(o.violations == [] and set(o.statuses()) == {202} for o in oracles)
    row = book_row(settings, rental)
    assert (row["isolation"], row["exit_code"], row["job_reason"]) == ("container", 0, None)
    assert b"trained" in (settings.rentals_dir / str(rental) / "container.log").read_bytes()

    settle(suite, relayer, reports[-1:])  # the earlier reports stay off chain: the latest carries the totals
    settled = rental_state(suite, rental)
    assert settled.status is RentalStatus.COMPLETED
    assert (settled.last_seq, settled.delivered_seconds, settled.util_seconds) == (
        last.seq,
        last.delivered_seconds,
        last.util_seconds,
    )

    agent_lines = [r for r in caplog.records if r.name.startswith("offchain.agent")]
    assert agent_lines and all(r.getMessage().startswith(SIMULATED_LABEL) for r in agent_lines)


@pytest.mark.parametrize(
    "spec, exit_code, digest, reason",
    [
        pytest.param(job("sleep 2; printf nan; exit 3"), 3, keccak(b"nan"), "exited with code 3", id="exit-3"),
        pytest.param(job("sleep 300", timeout_seconds=2), 143, keccak(b""), "timeout of 2 s", id="timeout"),
        pytest.param(
            JobSpec(command=("/nonexistent/bin/train",)), 1, keccak(b""), "exited with code 1", id="not-in-image"
        ),
        pytest.param(
            job("head -c 300000000 /dev/zero | tail", resources=JobResources(memory_mib=32)),
            137,
            keccak(b""),
            "memory limit of 32 MiB",
            id="out-of-memory",
        ),
    ],
)
def test_a_failing_job_sends_a_failed_report_with_its_exit_code_and_reason(
    suite, renter, relayer, gpu_offer, agent_settings, spec, exit_code, digest, reason
):
    listed = gpu_offer()
    settings = agent_settings([])
    JobSpecStore(settings.spec_directory).put(spec)

    async def main():
        async with agent_with_oracles(settings, listed.source) as (agent, oracles, until):
            rental = await open_rental(suite, renter, listed.offer_id, spec)
            await until(lambda: final_report(oracles[0], rental) is not None, 30, "the completion report")
        return rental, oracles[0]

    rental, oracle = asyncio.run(main())

    reports = oracle.accepted_reports(rental)
    assert_continuous(reports, rental_state(suite, rental).since)
    assert (reports[-1].status, reports[-1].exit_code, reports[-1].result_digest) == (
        ReportStatus.FAILED,
        exit_code,
        digest,
    )
    assert reason in book_row(settings, rental)["job_reason"]
    settle(suite, relayer, reports)
    assert rental_state(suite, rental).status is RentalStatus.FAILED


def test_the_end_of_the_paid_time_stops_the_job_and_closes_the_last_period(
    suite, renter, relayer, gpu_offer, agent_settings
):
    listed = gpu_offer(min_duration=1)
    settings = agent_settings([])
    spec = job("trap 'echo stopped >> stopped; exit 0' TERM; while true; do sleep 0.1; done")
    JobSpecStore(settings.spec_directory).put(spec)

    async def main():
        async with agent_with_oracles(settings, listed.source) as (agent, oracles, until):
            rental = await open_rental(suite, renter, listed.offer_id, spec, duration=4)
            await until(lambda: rental_done(agent, rental), 30, "the rental to end")
            await until(lambda: agent.outbox.pending_count() == 0, 10, "the last report to be delivered")
        return rental, oracles[0]

    rental, oracle = asyncio.run(main())

    reports = oracle.accepted_reports(rental)
    since = rental_state(suite, rental).since
    assert_continuous(reports, since)
    assert reports[-1].covered_until == since + 4
    assert all(r.status is ReportStatus.RUNNING for r in reports)
    first = reports[0]
    assert first.delivered_seconds == first.period_seconds, "sampled from the billed start"
    assert agent_outcome(settings, rental) == "ended before the job"
    assert (settings.rentals_dir / str(rental) / "work" / "stopped").read_text() == "stopped\n"
    assert book_row(settings, rental)["job_reason"] == "stopped by the provider's agent because the rental ended"
    settle(suite, relayer, reports)
    assert rental_state(suite, rental).covered_seconds == 4


def test_renter_termination_stops_the_job_and_closes_the_last_period(suite, renter, relayer, gpu_offer, agent_settings):
    listed = gpu_offer()
    settings = agent_settings([])
    spec = job("sleep 300")
    JobSpecStore(settings.spec_directory).put(spec)

    async def main():
        async with agent_with_oracles(settings, listed.source) as (agent, oracles, until):
            oracle = oracles[0]
            rental = await open_rental(suite, renter, listed.offer_id, spec)
            await until(lambda: len(oracle.accepted_reports(rental)) >= 2, 30, "two reports")
            terminate = await asyncio.to_thread(suite.escrow.terminate, rental, {"from": renter})
            terminated_at = time.monotonic()
            await until(lambda: agent.book.get(rental).phase is Phase.DONE, 15, "the agent to close the rental")
            stopped_after = time.monotonic() - terminated_at
            await until(lambda: agent.outbox.pending_count() == 0, 10, "the last report to be delivered")
            await containers_gone(settings, [agent.book.get(rental).container])
        return rental, oracle, terminate.timestamp, stopped_after

    rental, oracle, ends_at, stopped_after = asyncio.run(main())

    assert stopped_after < 15
    reports = oracle.accepted_reports(rental)
    state = rental_state(suite, rental)
    assert state.status is RentalStatus.TERMINATED
    assert_continuous(reports, state.since)
    assert all(r.status is ReportStatus.RUNNING for r in reports)
    # The agent learns of the termination a poll after it: its last period either closes at the new end or, when
    # a regular report already crossed it, was the one before (the escrow clamps it to the end).
    assert reports[-1].period_start < ends_at <= reports[-1].covered_until
    assert agent_outcome(settings, rental) in ("ended before the job", "ended; every second was already reported")
    settle(suite, relayer, reports)
    assert rental_state(suite, rental).last_seq == reports[-1].seq


def test_a_rental_its_first_report_already_started_continues_from_the_chain(
    suite, renter, relayer, gpu_offer, agent_settings
):
    """start() reverts (the rental runs since its opening, started by a report): the agent sends no transaction
    and continues the report sequence and totals from the chain's lastSeq, coveredSeconds and totals."""
    listed = gpu_offer()
    settings = agent_settings([])
    spec = job("sleep 2")
    JobSpecStore(settings.spec_directory).put(spec)
    opened = suite.escrow.openRental(listed.offer_id, DURATION, PRICE, spec.spec_hash(), {"from": renter})
    rental, opened_at = opened.return_value, opened.timestamp
    while web3.eth.get_block("pending")["timestamp"] < opened_at + 2:  # the chain's clock, not the wall clock
        time.sleep(0.1)
    first = Report(rental_id=rental, seq=1, covered_until=opened_at + 1, delivered_seconds=1, util_seconds=0)
    domain = EscrowDomain(
        chain_id=web3.eth.chain_id,
        escrow=suite.escrow.address,
        oracle_set_version=suite.read(lambda r: r.oracle_set()).version,
    )
    signatures = [sign_batch([first], domain, k) for k in ORACLE_KEYS[:2]]
    suite.escrow.submitReports(*submit_args([first], signatures, domain.oracle_set_version), {"from": relayer})
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
    assert reports[0].delivered_seconds >= 1, "the totals continue from the chain's"
    settle(suite, relayer, reports)
    assert rental_state(suite, rental).status is RentalStatus.COMPLETED


def run_to_completion(suite, renter, listed, settings, command: str = "sleep 3") -> tuple[int, RecordingOracle]:
    """Runs an agent reporting to one recording oracle while a rental of `listed` runs `command` to completion;
    the rental and the oracle."""
    spec = job(command)
    JobSpecStore(settings.spec_directory).put(spec)

    async def main():
        async with agent_with_oracles(settings, listed.source) as (agent, oracles, until):
            rental = await open_rental(suite, renter, listed.offer_id, spec)
            await until(lambda: final_report(oracles[0], rental) is not None, 30, "the completion report")
        return rental, oracles[0]

    return asyncio.run(main())


def test_a_replayed_trace_drives_the_reports(suite, renter, relayer, gpu_offer, agent_settings):
    """The recorded trace, played back on the wall clock, measures the rental as a live source would; its reports
    say they are not live measurements."""
    listed = gpu_offer(source=ReplaySource(PROJECT_ROOT / "tests" / "data" / "trace-simulated-2gpu.jsonl", rebase=True))
    settings = agent_settings([])
    rental, oracle = run_to_completion(suite, renter, listed, settings)

    reports = oracle.accepted_reports(rental)
    assert_continuous(reports, rental_state(suite, rental).since)
    assert reports[-1].status is ReportStatus.COMPLETED
    assert all(r.simulated for r in reports)
    assert reports[-1].delivered_seconds >= 2
    assert max(r.peak_mem_mib for r in reports) > 0
    settle(suite, relayer, reports)
    assert rental_state(suite, rental).status is RentalStatus.COMPLETED


def test_each_report_carries_its_periods_per_gpu_figures_signed_by_the_agent(suite, renter, gpu_offer, agent_settings):
    """Every report goes out with the per-GPU figures of its period, signed by the agent key for that very report;
    they add up to the report's own sample count and peak memory."""
    listed = gpu_offer()
    settings = agent_settings([])
    rental, oracle = run_to_completion(suite, renter, listed, settings)

    domain = TelemetryDomain(settings.chain.chain_id, settings.chain.registry)
    submissions = [
        a.submission
        for a in oracle.answers
        if a.status == 202 and a.submission is not None and a.submission.report.rental_id == rental
    ]
    assert len(submissions) >= 2
    for submission in submissions:
        report, summary = submission.report, submission.gpu_summary
        assert summary is not None
        assert tuple(g.uuid for g in summary.gpus) == report.gpu_uuids
        signed = domain.gpu_summary_digest(report, domain.digest(report), summary)
        assert recover_address(signed, summary.signature) == bytes.fromhex(AGENT.address[2:])
        assert sum(g.samples for g in summary.gpus) == report.sample_count
        assert max(g.mem_used_mib or 0 for g in summary.gpus) == report.peak_mem_mib
        for gpu in summary.gpus:
            if gpu.samples:  # the simulated GPUs give every reading
                assert None not in (gpu.util_bps, gpu.mem_used_mib, gpu.mem_total_mib, gpu.power_mw, gpu.temp_c)
    assert any(g.power_mw for s in submissions if s.gpu_summary is not None for g in s.gpu_summary.gpus)


def test_simulated_telemetry_is_refused_without_the_explicit_flag(gpu_offer, agent_settings):
    with pytest.raises(SimulatedTelemetryRefused):
        ProviderAgent(agent_settings(["http://127.0.0.1:9"], allow_simulated=False), gpu_offer().source)


def test_kill_9_and_restart_reattaches_to_the_running_container(
    suite, renter, relayer, gpu_offer, agent_settings, tmp_path
):
    """The agent runs as its own process, configured from the environment. It is SIGKILLed twice: once at a random
    point after two reports, once right after the first oracle accepted a report but before the agent saw the 202.
    The job's container outlives both: each restart re-attaches to it instead of launching it again, the job runs
    once and one completion report lands. Each oracle holds every report exactly once, in one continuous sequence
    that the escrow applies, and the only repeat is the report whose ack the killed agent never saw. The totals and
    the telemetry root chain continue across both restarts: nothing counted is lost or counted twice."""
    listed = gpu_offer()
    settings = agent_settings([])
    spec = job("echo launched >> launches; sleep 8; echo ok")
    JobSpecStore(settings.spec_directory).put(spec)
    key_file = tmp_path / "agent.key"
    key_file.write_text(AGENT_KEY.hex())

    async def main():
        oracles = await start_oracles(settings)
        argv, env = agent_process(settings, key_file, oracles, listed.seed)
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
            rental = await open_rental(suite, renter, listed.offer_id, spec)
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
                    await asyncio.wait_for(process.wait(), 20)
            for oracle in oracles:
                await oracle.stop()
            log_file.close()
        return rental, oracles

    rental, oracles = asyncio.run(main())

    reports = oracles[0].accepted_reports(rental)
    assert reports == oracles[1].accepted_reports(rental)
    assert_continuous(reports, rental_state(suite, rental).since)
    assert (reports[-1].status, reports[-1].exit_code, reports[-1].result_digest) == (
        ReportStatus.COMPLETED,
        0,
        keccak(b"ok\n"),
    )
    assert [r.status for r in reports].count(ReportStatus.COMPLETED) == 1
    for oracle in oracles:
        assert oracle.violations == [], "no report was posted before it was committed, or after its ack was"
        assert sorted(oracle.accepted) == [(rental, r.seq) for r in reports], "every report exactly once"
        assert set(oracle.statuses()) <= {200, 202}
    assert any(a.status == 200 for a in oracles[0].answers), "the report whose ack was lost was sent again"
    work = settings.rentals_dir / str(rental) / "work"
    assert (work / "launches").read_text() == "launched\n", "the job ran once: each restart re-attached"
    assert "re-attached" in (tmp_path / "agent.log").read_text()
    settle(suite, relayer, reports)
    assert rental_state(suite, rental).status is RentalStatus.COMPLETED


# ------------------------------------------------------------------ declines


UNRUNNABLE = {
    "spec-never-arrives": (DeclineReason.SPEC_MISSING, None),
    "spec-invalid": (DeclineReason.SPEC_INVALID, b'{"command":["sh"],"env":{"LD_PRELOAD":"/workspace/x.so"}}'),
    "long-working-dir": (DeclineReason.SPEC_INVALID, b'{"command":["sh"],"working_dir":"' + b"d" * 300 + b'"}'),
    "image-unavailable": (DeclineReason.IMAGE_UNAVAILABLE, job("true", image="localhost/gpuex/no-such-image:1")),
    "more-memory-than-offered": (DeclineReason.EXCEEDS_OFFER, job("true", resources=JobResources(memory_mib=10**6))),
    "egress-not-offered": (DeclineReason.EXCEEDS_OFFER, job("true", network="egress")),
    "gpus-not-here": (DeclineReason.GPUS_UNAVAILABLE, job("true")),
}


@pytest.mark.parametrize("case", list(UNRUNNABLE))
def test_an_unrunnable_rental_is_declined_at_once_and_the_renter_refunded_in_full(
    suite, provider, renter, gpu_offer, agent_settings, case
):
    reason, spec = UNRUNNABLE[case]
    listed = gpu_offer()
    settings = agent_settings([], spec_wait_seconds=2)
    source = listed.source
    if case == "gpus-not-here":
        source = SimulatedSource("NVIDIA H100 80GB HBM3", 2, seed=99_999)  # another machine's GPUs
    if isinstance(spec, JobSpec):
        JobSpecStore(settings.spec_directory).put(spec)
        spec_hash = spec.spec_hash()
    elif spec is None:
        spec_hash = keccak(text=f"a spec nobody ever sends {case}")
    else:  # the renter's own body, hashed as it is
        spec_hash = keccak(spec)
        settings.spec_directory.mkdir(parents=True, exist_ok=True)
        JobSpecStore(settings.spec_directory).path_of(spec_hash).write_bytes(spec)
    balances, account = suite.read(lambda r: asyncio.gather(r.balances(renter.address), r.provider(provider.address)))

    async def main():
        async with agent_with_oracles(settings, source) as (agent, oracles, until):
            tx = await asyncio.to_thread(
                suite.escrow.openRental, listed.offer_id, DURATION, PRICE, spec_hash, {"from": renter}
            )
            rental = tx.return_value
            opened = time.monotonic()
            await until(lambda: rental_done(agent, rental), 30, "the decline")
            took = time.monotonic() - opened
            assert oracles[0].answers == [], "a declined rental sends no report"
        return rental, took

    rental, took = asyncio.run(main())

    assert took < 15
    assert rental_state(suite, rental).status is RentalStatus.DECLINED
    balances_after, account_after = suite.read(
        lambda r: asyncio.gather(r.balances(renter.address), r.provider(provider.address))
    )
    assert balances_after.escrow - balances.escrow == PRICE * DURATION, "the whole deposit back"
    assert balances_after.compensation == balances.compensation, "nothing slashed"
    assert account_after.staked == account.staked
    assert account_after.declines == account.declines + 1
    row = book_row(settings, rental)
    assert row["decline_reason"] == reason and row["outcome"].startswith(f"declined ({reason.name})")


def test_a_rental_whose_handling_fails_is_declined_while_the_agent_serves_the_others(
    suite, renter, relayer, gpu_offer, agent_settings, monkeypatch
):
    """An unexpected error preparing one rental ends that rental only (declined, reason AGENT_FAILURE)."""
    broken, healthy = gpu_offer(), gpu_offer()
    settings = agent_settings([])
    spec = job("sleep 2; echo fine")
    JobSpecStore(settings.spec_directory).put(spec)
    prepare = ProviderAgent._prepare

    async def flaky_prepare(self, record, spec, state=None):
        if record.offer_id == broken.offer_id:
            raise OSError(36, "File name too long")
        return await prepare(self, record, spec, state)

    monkeypatch.setattr(ProviderAgent, "_prepare", flaky_prepare)

    async def main():
        oracles = await start_oracles(settings, count=1)
        agent = ProviderAgent(settings.model_copy(update={"oracles": [oracles[0].url]}), _Machine(broken, healthy))
        try:
            async with running(agent) as until:
                first = await open_rental(suite, renter, broken.offer_id, spec)
                second = await open_rental(suite, renter, healthy.offer_id, spec)
                await until(lambda: final_report(oracles[0], second) is not None, 30, "the healthy rental's end")
                await until(lambda: agent.book.get(first).phase is Phase.DONE, 10, "the broken rental's decline")
        finally:
            await oracles[0].stop()
        return first, second

    first, second = asyncio.run(main())

    assert rental_state(suite, first).status is RentalStatus.DECLINED
    row = book_row(settings, first)
    assert row["decline_reason"] == DeclineReason.AGENT_FAILURE and "File name too long" in row["decline_detail"]
    assert book_row(settings, second)["exit_code"] == 0


class _Machine(TelemetrySource):
    """One machine serving several listed offers: it sees the GPUs of each."""

    def __init__(self, *listed) -> None:
        self._sources = [item.source for item in listed]

    @property
    def simulated(self) -> bool:
        return True

    def gpus(self):
        return [gpu for source in self._sources for gpu in source.gpus()]

    async def sample(self):
        return [sample for source in self._sources for sample in await source.sample()]

    def close(self) -> None:
        for source in self._sources:
            source.close()


# ------------------------------------------------------------------ hostile jobs


def test_a_hostile_job_reaches_nothing_of_the_agent_and_the_agent_stays_up(
    suite, renter, relayer, gpu_offer, agent_settings, tmp_path
):
    """The job tries the agent's key file and database by path, the agent's environment through /proc, another
    rental's workspace, the oracle's port, and writing outside its workspace; it prints what it got. Every attempt
    fails; the rental is reported Completed and settles; the agent keeps running."""
    listed, other = gpu_offer(), gpu_offer()
    key_file = tmp_path / "agent.key"
    key_file.write_text(AGENT_KEY.hex())
    settings = agent_settings([])
    bystander = job("echo bystander secret > secret.txt; sleep 30")
    JobSpecStore(settings.spec_directory).put(bystander)

    def attempt(what: str, command: str) -> str:
        return f"if {command} >/dev/null 2>&1; then echo '{what}: REACHED'; else echo '{what}: denied'; fi; "

    async def main():
        async with agent_with_oracles(settings, _Machine(listed, other)) as (agent, oracles, until):
            oracle_port = oracles[0].url.rsplit(":", 1)[1]
            victim = await open_rental(suite, renter, other.offer_id, bystander)
            await until(
                lambda: (settings.rentals_dir / str(victim) / "work" / "secret.txt").exists(),
                30,
                "the bystander's secret",
            )
            script = (
                attempt("key file", f"cat {key_file}")
                + attempt("agent database", f"cat {settings.db_path}")
                + attempt("agent environment", f"cat /proc/{os.getpid()}/environ")
                + attempt("host processes", f"test -d /proc/{os.getpid()}")
                + attempt("other workspace", f"cat {settings.rentals_dir / str(victim) / 'work' / 'secret.txt'}")
                + attempt("oracle port", f"nc -z -w 2 127.0.0.1 {oracle_port}")
                + attempt("host network", "ping -c 1 -W 1 8.8.8.8")
                + attempt("write root", "touch /evil")
                + attempt("write etc", "touch /etc/evil")
                + attempt("become root", "su -c true")
                + "echo done"
            )
            spec = job(script)
            JobSpecStore(settings.spec_directory).put(spec)
            rental = await open_rental(suite, renter, listed.offer_id, spec)
            await until(lambda: final_report(oracles[0], rental) is not None, 30, "the hostile job's report")
            await asyncio.to_thread(suite.escrow.terminate, victim, {"from": renter})
            await until(lambda: agent.book.get(victim).phase is Phase.DONE, 20, "the bystander to end")
        return rental, oracles[0]

    rental, oracle = asyncio.run(main())

    log = (settings.rentals_dir / str(rental) / "container.log").read_text()
    lines = [line.split(" ", 3)[3] for line in log.splitlines() if " stdout " in line]
    assert lines[-1] == "done"
    assert [line for line in lines if line.endswith("REACHED")] == []
    assert len([line for line in lines if line.endswith("denied")]) == 10
    assert final_report(oracle, rental).status is ReportStatus.COMPLETED
    assert key_file.read_text() == AGENT_KEY.hex()


def test_fork_bombs_and_memory_hogs_are_contained_and_reported(suite, renter, relayer, gpu_offer, agent_settings):
    bomb_offer, hog_offer = gpu_offer(), gpu_offer()
    settings = agent_settings([])
    bomb = job("bomb() { bomb | bomb & }; bomb; sleep 4; exit 0", timeout_seconds=6)
    hog = job("head -c 2000000000 /dev/zero | tail", resources=JobResources(memory_mib=64))
    for spec in (bomb, hog):
        JobSpecStore(settings.spec_directory).put(spec)

    async def main():
        async with agent_with_oracles(settings, _Machine(bomb_offer, hog_offer)) as (agent, oracles, until):
            rentals = [
                await open_rental(suite, renter, bomb_offer.offer_id, bomb),
                await open_rental(suite, renter, hog_offer.offer_id, hog),
            ]
            await until(lambda: all(final_report(oracles[0], r) for r in rentals), 60, "both reports")
            await containers_gone(settings, [agent.book.get(r).container for r in rentals])
        return rentals, oracles[0]

    (bomb_rental, hog_rental), oracle = asyncio.run(main())

    assert final_report(oracle, hog_rental).status is ReportStatus.FAILED
    assert "memory limit of 64 MiB" in book_row(settings, hog_rental)["job_reason"]
    bomb_log = (settings.rentals_dir / str(bomb_rental) / "container.log").read_text()
    assert "can't fork" in bomb_log or "Resource temporarily unavailable" in bomb_log
    assert final_report(oracle, bomb_rental).status in (ReportStatus.COMPLETED, ReportStatus.FAILED)


# ------------------------------------------------------------------ housekeeping and the unsafe mode


def test_finished_rentals_folders_go_after_the_retention_period(suite, renter, gpu_offer, agent_settings):
    listed = gpu_offer()
    settings = agent_settings([], workspace_retention_seconds=1, janitor_interval_seconds=0.5)
    spec = job("echo result > out.txt")
    JobSpecStore(settings.spec_directory).put(spec)

    async def main():
        async with agent_with_oracles(settings, listed.source) as (agent, oracles, until):
            rental = await open_rental(suite, renter, listed.offer_id, spec)
            await until(lambda: rental_done(agent, rental), 30, "the rental to be done")
            assert (settings.rentals_dir / str(rental) / "work" / "out.txt").exists()
            await until(lambda: agent.book.get(rental).cleaned_at is not None, 10, "the folder's removal")
        return rental

    rental = asyncio.run(main())

    assert not (settings.rentals_dir / str(rental)).exists()


def test_unsafe_bare_process_runs_jobs_unisolated_and_says_so(
    suite, renter, relayer, gpu_offer, agent_settings, caplog
):
    caplog.set_level(logging.INFO, logger="offchain.agent")
    listed = gpu_offer()
    settings = agent_settings([], unsafe_bare_process=True)
    spec = JobSpec(command=(os.sys.executable, "-c", "import os; print(os.getuid())"))
    JobSpecStore(settings.spec_directory).put(spec)

    async def main():
        async with agent_with_oracles(settings, listed.source) as (agent, oracles, until):
            assert agent.isolation == "bare-process"
            rental = await open_rental(suite, renter, listed.offer_id, spec)
            await until(lambda: final_report(oracles[0], rental) is not None, 30, "the completion report")
        return rental, oracles[0]

    rental, oracle = asyncio.run(main())

    assert final_report(oracle, rental).result_digest == keccak(f"{os.getuid()}\n".encode())
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("offchain.agent")]
    assert lines and all("[UNSAFE: JOBS RUN AS BARE HOST PROCESSES]" in line for line in lines)


def test_the_janitor_removes_its_own_stray_containers_and_no_one_elses(gpu_offer, agent_settings, tmp_path, job_image):
    """A container labelled with this agent (address and state folder) whose rental the agent does not know is
    removed; one of another agent on the same machine (another state folder) is left alone."""
    settings = agent_settings([])
    agent = ProviderAgent(settings.model_copy(update={"oracles": ["http://127.0.0.1:9"]}), gpu_offer().source)
    engine = agent.jobs.engine
    other_label = agent_label(AGENT.address, tmp_path / "another-agent")

    async def main() -> list[str]:
        names = []
        for label in (agent.jobs.label, other_label):
            files = RentalFiles(tmp_path / label.rsplit("/", 1)[1])
            files.prepare(".", None)
            files.env_file.write_text("")
            plan = ContainerPlan(
                name=f"gpuex-stray-{label.rsplit('/', 1)[1]}",
                image=job_image,
                argv=("sleep", "60"),
                workspace=files.work,
                working_dir=".",
                env_file=files.env_file,
                log_path=files.container_log,
                gpu_uuids=(),
                memory_mib=64,
                cpus=1,
                egress=False,
                labels=labels(label, 999),
            )
            await engine.run(plan)
            names.append(plan.name)
        try:
            await agent.jobs.clean_up(active=())
            return await engine.labelled(AGENT_LABEL, agent.jobs.label) + await engine.labelled(
                AGENT_LABEL, other_label
            )
        finally:
            for name in names:
                await engine.remove(name)

    left = asyncio.run(main())

    assert left == [f"gpuex-stray-{other_label.rsplit('/', 1)[1]}"]
