"""The outbox against real oracle endpoints on loopback: persisted before sent, retried until acked, acked per
oracle, in seq order, and nothing lost or re-sent after an acked delivery across kill -9."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import sys
from pathlib import Path

import pytest
from aiohttp import web

from offchain.agent.outbox import Outbox, OutboxConflict, RetryPolicy
from offchain.chain.contracts import PROJECT_ROOT
from offchain.protocol.digest import TelemetryDomain
from offchain.protocol.gpustats import GpuPeriodStats
from offchain.protocol.messages import OracleError, RejectReason, TelemetrySubmission, sign_gpu_summary
from offchain.sqlite import open_db
from tests.offchain.agent.helpers import AGENT_ADDRESS, AGENT_KEY, CHAIN_ID, REGISTRY, signed_submission, wait_until
from tests.offchain.agent.oracle_server import RecordingOracle

FAST_RETRY = RetryPolicy(initial_seconds=0.05, maximum_seconds=0.2)


def oracle(db_path: Path | None = None, agent: str = AGENT_ADDRESS, fail_next: int = 0) -> RecordingOracle:
    return RecordingOracle(CHAIN_ID, REGISTRY, agent, agent_db=db_path, fail_next=fail_next)


async def deliver_until_done(outbox: Outbox, seconds: float = 10.0) -> None:
    """Runs the delivery loop until nothing is pending."""
    task = asyncio.create_task(outbox.run(idle_poll_seconds=0.05))
    try:
        await wait_until(lambda: outbox.pending_count() == 0, seconds, "every delivery answered")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def delivery_rows(db_path: Path) -> list[tuple]:
    """Deliveries as another process sees them in the database file."""
    with sqlite3.connect(db_path) as db:
        return db.execute("SELECT seq, oracle, state, attempts FROM outbox_deliveries ORDER BY seq, oracle").fetchall()


def test_a_report_is_committed_before_it_is_sent(tmp_path):
    db_path = tmp_path / "agent.sqlite"

    async def main() -> RecordingOracle:
        server = oracle(db_path)
        url = await server.start()
        try:
            async with Outbox(open_db(db_path), [url], retry=FAST_RETRY) as outbox:
                outbox.enqueue(signed_submission(1))
                assert delivery_rows(db_path) == [(1, url, "pending", 0)]
                await deliver_until_done(outbox)
        finally:
            await server.stop()
        return server

    server = asyncio.run(main())

    assert server.statuses() == [202]
    assert server.violations == []
    assert [row[2] for row in delivery_rows(db_path)] == ["acked"]


def test_a_report_for_an_unreachable_oracle_stays_pending(tmp_path):
    db_path = tmp_path / "agent.sqlite"

    async def main() -> None:
        server = oracle()
        url = await server.start()
        await server.stop()
        async with Outbox(open_db(db_path), [url], retry=FAST_RETRY) as outbox:
            outbox.enqueue(signed_submission(1))
            assert await outbox.deliver_due() == 1

    asyncio.run(main())

    [(seq, _, state, attempts)] = delivery_rows(db_path)
    assert (seq, state, attempts) == (1, "pending", 1)


def test_delivery_is_retried_with_backoff_until_acked(tmp_path):
    db_path = tmp_path / "agent.sqlite"

    async def main() -> RecordingOracle:
        server = oracle(db_path, fail_next=3)
        url = await server.start()
        try:
            async with Outbox(open_db(db_path), [url], retry=FAST_RETRY) as outbox:
                outbox.enqueue(signed_submission(1))
                await deliver_until_done(outbox)
        finally:
            await server.stop()
        return server

    server = asyncio.run(main())

    assert server.statuses() == [503, 503, 503, 202]
    assert [row[2:] for row in delivery_rows(db_path)] == [("acked", 4)]


def test_retry_policy_backs_off_exponentially_up_to_the_cap():
    policy = RetryPolicy(initial_seconds=1, maximum_seconds=10, jitter=0)

    assert [policy.delay(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert all(0.8 <= RetryPolicy(jitter=0.2).delay(1) <= 1 for _ in range(100))


def test_each_oracle_acks_for_itself_and_an_acked_oracle_is_not_sent_again(tmp_path):
    db_path = tmp_path / "agent.sqlite"

    async def main() -> tuple[RecordingOracle, RecordingOracle]:
        up, down = oracle(db_path), oracle(db_path)
        up_url = await up.start()
        down_url = await down.start()
        await down.stop()
        try:
            async with Outbox(open_db(db_path), [up_url, down_url], retry=FAST_RETRY) as outbox:
                outbox.enqueue(signed_submission(1))
                outbox.enqueue(signed_submission(2))
                task = asyncio.create_task(outbox.run(idle_poll_seconds=0.05))
                await wait_until(lambda: len(up.accepted) == 2, 10, "the live oracle to accept both reports")
                await asyncio.sleep(0.3)
                assert outbox.delivery_states(1) == {
                    (1, up_url): "acked",
                    (2, up_url): "acked",
                    (1, down_url): "pending",
                    (2, down_url): "pending",
                }
                await down.start(port=int(down_url.rsplit(":", 1)[1]))
                await wait_until(lambda: outbox.pending_count() == 0, 10, "the late oracle to ack")
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        finally:
            await up.stop()
            await down.stop()
        return up, down

    up, down = asyncio.run(main())

    assert up.statuses() == [202, 202]
    assert down.statuses() == [202, 202]
    assert up.violations == down.violations == []


def test_a_rejected_report_is_not_retried_and_keeps_the_reason(tmp_path):
    db_path = tmp_path / "agent.sqlite"

    async def main() -> RecordingOracle:
        server = oracle(db_path, agent="0x000000000000000000000000000000000000dEaD")
        url = await server.start()
        try:
            async with Outbox(open_db(db_path), [url], retry=FAST_RETRY) as outbox:
                outbox.enqueue(signed_submission(1))
                await deliver_until_done(outbox)
                assert await outbox.deliver_due() == 0
        finally:
            await server.stop()
        return server

    server = asyncio.run(main())

    assert server.statuses() == [403]
    with sqlite3.connect(db_path) as db:
        state, status, error = db.execute("SELECT state, http_status, last_error FROM outbox_deliveries").fetchone()
    assert (state, status) == ("rejected", 403)
    assert OracleError.model_validate_json(error).error is RejectReason.SIGNER_NOT_AGENT


def test_reports_an_oracle_says_it_lacks_are_sent_to_it_again(tmp_path):
    """An oracle that lost its state takes the next report across the gap and names the first seq it lacks; the
    agent sends it again the reports from there that it had acked, oldest first, and nothing to the other oracle."""
    db_path = tmp_path / "agent.sqlite"

    async def main() -> tuple[RecordingOracle, RecordingOracle, dict]:
        wiped, other = oracle(db_path), oracle(db_path)
        wiped.takes_gaps = other.takes_gaps = True
        urls = [await wiped.start(), await other.start()]
        try:
            async with Outbox(open_db(db_path), urls, retry=FAST_RETRY) as outbox:
                outbox.enqueue(signed_submission(1))
                outbox.enqueue(signed_submission(2))
                await deliver_until_done(outbox)
                wiped.forget(1)
                outbox.enqueue(signed_submission(3))
                await deliver_until_done(outbox)
                assert sorted(wiped.accepted) == [(1, 1), (1, 2), (1, 3)]
                return wiped, other, outbox.delivery_states(1)
        finally:
            await wiped.stop()
            await other.stop()

    wiped, other, states = asyncio.run(main())

    assert [a.submission.report.seq for a in wiped.answers] == [1, 2, 3, 1, 2]
    assert wiped.statuses() == [202] * 5
    assert [a.submission.report.seq for a in other.answers] == [1, 2, 3]
    assert set(states.values()) == {"acked"}
    assert wiped.violations == other.violations == []


def test_a_seq_gap_is_retried_until_the_oracle_can_take_the_report(tmp_path):
    """The oracle refused seq 1 for good, so it answers seq 2 with seq_gap; once the other oracles' batch has put
    seq 1 on chain, the oracle takes seq 2 on the next retry."""
    db_path = tmp_path / "agent.sqlite"

    async def main() -> tuple[RecordingOracle, dict]:
        server = oracle(db_path)
        server.refuse[1] = RejectReason.PERIOD_IN_FUTURE
        url = await server.start()
        try:
            async with Outbox(open_db(db_path), [url], retry=FAST_RETRY) as outbox:
                outbox.enqueue(signed_submission(1))
                outbox.enqueue(signed_submission(2))
                task = asyncio.create_task(outbox.run(idle_poll_seconds=0.05))
                await wait_until(lambda: server.statuses().count(409) >= 3, 10, "seq 2 to be retried")
                assert outbox.delivery_states(1) == {(1, url): "rejected", (2, url): "pending"}
                server.chain_last_seq[1] = 1
                await wait_until(lambda: outbox.pending_count() == 0, 10, "seq 2 to be acked")
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                return server, outbox.delivery_states(1)
        finally:
            await server.stop()

    server, states = asyncio.run(main())

    assert states == {(1, server.url): "rejected", (2, server.url): "acked"}
    assert server.statuses()[0] == 422 and server.statuses()[-1] == 202
    assert set(server.statuses()[1:-1]) == {409}


def test_an_answer_that_is_not_an_ack_of_the_report_is_retried(tmp_path):
    """Something other than an oracle answers 200 at the configured URL: nothing counts as delivered."""
    db_path = tmp_path / "agent.sqlite"

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/telemetry", ok)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        try:
            async with Outbox(open_db(db_path), [f"http://{host}:{port}"], retry=FAST_RETRY) as outbox:
                outbox.enqueue(signed_submission(1))
                await outbox.deliver_due()
        finally:
            await runner.cleanup()

    asyncio.run(main())

    with sqlite3.connect(db_path) as db:
        state, status, error = db.execute("SELECT state, http_status, last_error FROM outbox_deliveries").fetchone()
    assert (state, status) == ("pending", 200)
    assert error.startswith("not an ack")


def test_reports_reach_each_oracle_in_seq_order(tmp_path):
    db_path = tmp_path / "agent.sqlite"

    async def main() -> RecordingOracle:
        server = oracle(db_path, fail_next=2)
        url = await server.start()
        try:
            async with Outbox(open_db(db_path), [url], retry=FAST_RETRY) as outbox:
                for seq in (1, 2, 3):
                    outbox.enqueue(signed_submission(seq))
                await deliver_until_done(outbox)
        finally:
            await server.stop()
        return server

    server = asyncio.run(main())

    assert server.statuses() == [503, 503, 202, 202, 202]
    assert [r.seq for r in server.accepted_reports(1)] == [1, 2, 3]


def test_queuing_the_same_report_again_changes_nothing_and_a_different_one_is_refused(tmp_path):
    outbox = Outbox(open_db(tmp_path / "agent.sqlite"), ["http://127.0.0.1:9"])
    outbox.enqueue(signed_submission(1))
    outbox.enqueue(signed_submission(1))

    assert outbox.pending_count() == 1
    with pytest.raises(OutboxConflict):
        outbox.enqueue(signed_submission(1, period_seconds=5))


def with_gpu_summary(submission: TelemetrySubmission) -> TelemetrySubmission:
    """`submission` with per-GPU figures of its report's GPUs, signed by the agent key."""
    report = submission.report
    gpus = tuple(GpuPeriodStats(uuid=uuid, samples=20, util_bps=9_000, power_mw=300_000) for uuid in report.gpu_uuids)
    digest = TelemetryDomain(CHAIN_ID, REGISTRY).digest(report)
    summary = sign_gpu_summary(AGENT_KEY, report, digest, gpus, CHAIN_ID, REGISTRY)
    return submission.model_copy(update={"gpu_summary": summary})


def test_a_new_outbox_on_the_same_database_delivers_what_the_old_one_left(tmp_path):
    """Per-GPU figures included."""
    db_path = tmp_path / "agent.sqlite"
    queued = with_gpu_summary(signed_submission(1))

    async def main() -> RecordingOracle:
        server = oracle(db_path)
        url = await server.start()
        await server.stop()
        first = open_db(db_path)
        async with Outbox(first, [url], retry=FAST_RETRY) as outbox:
            outbox.enqueue(queued)
            await outbox.deliver_due()
        first.close()
        await server.start(port=int(url.rsplit(":", 1)[1]))
        try:
            async with Outbox(open_db(db_path), [url], retry=FAST_RETRY) as outbox:
                await deliver_until_done(outbox)
        finally:
            await server.stop()
        return server

    server = asyncio.run(main())
    assert server.statuses() == [202]
    assert server.answers[0].submission == queued


def test_kill_9_during_delivery_loses_nothing_and_never_resends_an_acked_report(tmp_path):
    """The outbox runs in a child process that queues and delivers 40 reports to two oracles. It is SIGKILLed
    three times right after the first oracle accepted a report and before the 202 reached it, and three times
    at random moments. Every report reaches every oracle; the only repeats are the three reports whose ack the
    killed process never saw (answered 200) — plus at most one per random kill, which may land in that same
    window — and no acked delivery is ever sent again."""
    db_path = tmp_path / "agent.sqlite"
    reports = 40
    killed_in_ack_window = {5, 17, 29}
    rng = random.Random(20240611)

    async def main() -> tuple[RecordingOracle, RecordingOracle, int]:
        oracles = (oracle(db_path), oracle(db_path))
        urls = [await o.start() for o in oracles]
        env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
        argv = [sys.executable, str(Path(__file__).with_name("outbox_driver.py")), str(db_path), str(reports), *urls]
        running: list[asyncio.subprocess.Process] = []

        async def kill_before_the_ack(report) -> None:
            if report.seq in killed_in_ack_window:
                running[-1].send_signal(signal.SIGKILL)
                await running[-1].wait()

        oracles[0].before_accept_answer = kill_before_the_ack
        random_kills = 0
        try:
            for _ in range(20):
                running.append(await asyncio.create_subprocess_exec(*argv, env=env))
                process = running[-1]
                if random_kills < 3:
                    seen = len(oracles[0].answers)
                    await wait_until(
                        lambda seen=seen, process=process: (
                            len(oracles[0].answers) > seen + 3 or process.returncode is not None
                        ),
                        30,
                        "the driver to deliver",
                    )
                    await asyncio.sleep(rng.uniform(0, 0.05))
                    if process.returncode is None:
                        process.send_signal(signal.SIGKILL)
                        random_kills += 1
                if await asyncio.wait_for(process.wait(), 60) == 0:
                    break
        finally:
            for o in oracles:
                await o.stop()
        return *oracles, random_kills

    first, second, random_kills = asyncio.run(main())

    assert random_kills == 3
    for server in (first, second):
        assert server.violations == []
        assert sorted(r.seq for r in server.accepted_reports(1)) == list(range(1, reports + 1))
        assert set(server.statuses()) <= {200, 202}
    repeated = sorted(a.submission.report.seq for a in first.answers if a.status == 200)
    assert killed_in_ack_window <= set(repeated)
    assert len(repeated) <= len(killed_in_ack_window) + random_kills
    assert {row[2] for row in delivery_rows(db_path)} == {"acked"}
    assert len(delivery_rows(db_path)) == 2 * reports
