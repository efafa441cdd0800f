"""The submission store and the API the batcher uses: waiting, mark_batched, batched, release_batch, settle."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest
from eth_utils import keccak

from offchain.oracle.store import (
    AlreadyHeld,
    Equivocation,
    NewSubmission,
    NotBatchable,
    OlderStoreError,
    PreviousReport,
    ReportState,
    SubmissionKey,
    SubmissionStore,
    WaitingReport,
)
from offchain.protocol.messages import TelemetryReport, TelemetrySubmission
from offchain.protocol.reports import ReportStatus

BIG_RENTAL = 2**200 + 7  # beyond SQLite's 64-bit integers


def entry(rental_id: int, seq: int, status: ReportStatus = ReportStatus.RUNNING) -> NewSubmission:
    report = TelemetryReport(
        rental_id=rental_id,
        seq=seq,
        period_start=100 * seq,
        covered_until=100 * (seq + 1),
        delivered_seconds=90 * seq,
        util_seconds=45 * seq,
        peak_mem_mib=1,
        sample_count=100,
        gpu_uuids=("GPU-1",),
        samples_root=keccak(text=f"{rental_id}/{seq}"),
        status=status,
    )
    submission = TelemetrySubmission(report=report, signature=bytes([seq]) * 64 + b"\x1b")
    return NewSubmission(submission, keccak(text=f"digest {rental_id}/{seq}"), submission.model_dump_json().encode())


def previous(rental_id: int, seq: int) -> PreviousReport:
    return PreviousReport.of(entry(rental_id, seq).submission.report)


def waiting(rental_id: int, seq: int, landed_until: int | None = None) -> WaitingReport:
    return WaitingReport(rental_id, seq, 100 * (seq + 1), ReportStatus.RUNNING, landed_until)


@pytest.fixture
def store(tmp_path):
    store = SubmissionStore(tmp_path / "oracle.sqlite3")
    yield store
    store.close()


def test_held_and_last_accepted_follow_what_was_added(store):
    assert store.last_accepted(BIG_RENTAL) is None
    store.add([entry(BIG_RENTAL, 1), entry(BIG_RENTAL, 2), entry(5, 1)])
    assert store.last_accepted(BIG_RENTAL) == previous(BIG_RENTAL, 2)
    assert store.last_accepted(5) == previous(5, 1)
    held = store.held(SubmissionKey(BIG_RENTAL, 2))
    assert held == (entry(BIG_RENTAL, 2).report_digest, entry(BIG_RENTAL, 2).submission.signature)
    assert store.held(SubmissionKey(BIG_RENTAL, 3)) is None


def test_adding_a_held_key_stores_nothing_of_the_call(store):
    store.add([entry(1, 1)])
    with pytest.raises(AlreadyHeld) as raised:
        store.add([entry(2, 1), entry(1, 1)])
    assert raised.value.key == (1, 1)
    assert store.count() == 1 and store.held(SubmissionKey(2, 1)) is None


def test_a_later_report_supersedes_the_held_ones_and_every_report_is_kept(store):
    store.add([entry(1, 1)])
    store.add([entry(1, 2), entry(1, 3)])
    store.add([entry(2, 1)])
    assert [store.state(SubmissionKey(1, seq)) for seq in (1, 2, 3)] == [
        ReportState.SUPERSEDED,
        ReportState.SUPERSEDED,
        ReportState.HELD,
    ]
    assert store.waiting() == [waiting(1, 3), waiting(2, 1)]
    assert store.reports(1) == [entry(1, seq).submission for seq in (1, 2, 3)]
    assert store.count() == 4 and store.count(ReportState.HELD) == 2


def test_waiting_leaves_out_rentals_with_a_report_in_a_transaction(store):
    store.add([entry(1, 1), entry(2, 1)])
    store.mark_batched([SubmissionKey(1, 1)], "tx-a")
    store.add([entry(1, 2)])  # arrives while seq 1 is on its way
    assert store.waiting() == [waiting(2, 1)]
    assert store.batched("tx-a") == [entry(1, 1).submission]
    assert store.in_flight() == ["tx-a"]
    store.settle([(SubmissionKey(1, 1), ReportState.LANDED)])
    assert store.in_flight() == []
    assert store.waiting() == [waiting(2, 1), waiting(1, 2, landed_until=200)]


def test_waiting_carries_the_status_of_a_final_report(store):
    store.add([entry(1, 1, ReportStatus.COMPLETED)])
    assert [w.status for w in store.waiting()] == [ReportStatus.COMPLETED]


def test_submissions_returns_the_given_keys_in_order(store):
    store.add([entry(1, 1), entry(2, 1), entry(BIG_RENTAL, 1)])
    keys = [SubmissionKey(BIG_RENTAL, 1), SubmissionKey(1, 1)]
    assert store.submissions(keys) == [entry(BIG_RENTAL, 1).submission, entry(1, 1).submission]


def test_mark_batched_takes_submissions_out_of_waiting(store):
    store.add([entry(1, 1), entry(2, 1), entry(3, 1)])
    store.mark_batched([SubmissionKey(1, 1), SubmissionKey(2, 1)], "tx-a")
    assert store.waiting() == [waiting(3, 1)]
    assert store.batched("tx-a") == [entry(1, 1).submission, entry(2, 1).submission]
    store.mark_batched([SubmissionKey(1, 1)], "tx-a")  # idempotent for the same transaction


@pytest.mark.parametrize(
    "taken_key", [SubmissionKey(1, 1), SubmissionKey(9, 9), SubmissionKey(2, 1)], ids=["other_tx", "unknown", "old"]
)
def test_mark_batched_marks_nothing_if_a_key_is_taken_unknown_or_superseded(store, taken_key):
    store.add([entry(1, 1), entry(2, 1), entry(2, 2), entry(3, 1)])
    store.mark_batched([SubmissionKey(1, 1)], "tx-a")
    with pytest.raises(NotBatchable):
        store.mark_batched([SubmissionKey(3, 1), taken_key], "tx-b")
    assert store.batched("tx-b") == []
    assert store.waiting() == [waiting(2, 2), waiting(3, 1)]


def test_release_batch_returns_the_latest_reports_to_waiting_and_supersedes_the_others(store):
    store.add([entry(1, 1), entry(2, 1)])
    store.mark_batched([SubmissionKey(1, 1), SubmissionKey(2, 1)], "tx-a")
    store.add([entry(2, 2)])
    assert store.release_batch("tx-a") == 2
    assert store.waiting() == [waiting(1, 1), waiting(2, 2)]
    assert store.state(SubmissionKey(2, 1)) is ReportState.SUPERSEDED
    assert store.batched("tx-a") == []


def test_submissions_survive_reopening(tmp_path):
    path = tmp_path / "oracle.sqlite3"
    first = SubmissionStore(path)
    first.add([entry(BIG_RENTAL, 1)])
    first.close()
    second = SubmissionStore(path)
    assert second.waiting() == [waiting(BIG_RENTAL, 1)]
    assert second.last_accepted(BIG_RENTAL) == previous(BIG_RENTAL, 1)
    second.close()


def test_submissions_added_in_one_loop_iteration_commit_together(store, tmp_path):
    other_connection = sqlite3.connect(tmp_path / "oracle.sqlite3")

    async def scenario():
        adds = [asyncio.create_task(store.add_in_group(entry(1, seq))) for seq in (1, 2, 3)]
        duplicate = asyncio.create_task(store.add_in_group(entry(1, 2)))
        await asyncio.sleep(0)  # every insert has run; the commit is due on the next iteration
        assert store.last_accepted(1) == previous(1, 3)  # the writer sees its open group
        assert other_connection.execute("SELECT count(*) FROM submissions").fetchone()[0] == 0
        with pytest.raises(AlreadyHeld):
            await duplicate
        await asyncio.gather(*adds)

    asyncio.run(scenario())
    assert other_connection.execute("SELECT count(*) FROM submissions").fetchone()[0] == 3
    assert store.reports(1) == [entry(1, seq).submission for seq in (1, 2, 3)]
    assert store.waiting() == [waiting(1, 3)]


def test_other_calls_commit_an_open_group_first(store):
    async def scenario():
        pending = asyncio.create_task(store.add_in_group(entry(1, 1)))
        await asyncio.sleep(0)
        store.mark_batched([SubmissionKey(1, 1)], "tx-a")  # needs its own transaction: the group commits first
        await pending

    asyncio.run(scenario())
    assert store.batched("tx-a") == [entry(1, 1).submission]


def test_a_store_of_the_first_protocol_is_refused_with_what_to_do(tmp_path):
    path = tmp_path / "oracle.sqlite"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE submissions (id INTEGER PRIMARY KEY, rental_id TEXT, seq INTEGER, period_end INTEGER,"
        " batched_tx_key TEXT)"
    )
    db.execute("INSERT INTO submissions (rental_id, seq, period_end) VALUES ('1', 1, 60)")
    db.commit()
    db.close()

    with pytest.raises(OlderStoreError, match="empty state directory"):
        SubmissionStore(path)

    db = sqlite3.connect(path)
    assert db.execute("SELECT rental_id, seq, period_end FROM submissions").fetchall() == [("1", 1, 60)]
    db.close()


def test_superseding_reads_only_the_rentals_held_reports(tmp_path):
    """A report supersedes the held ones of its rental through a partial index, not by scanning every earlier report
    of the rental (which made ingest slow down with a rental's age)."""
    store = SubmissionStore(tmp_path / "oracle.sqlite3")
    db = sqlite3.connect(tmp_path / "oracle.sqlite3")
    try:
        plan = db.execute(
            "EXPLAIN QUERY PLAN UPDATE submissions SET state = 'superseded'"
            " WHERE rental_id = ? AND state = 'held' AND seq < ?",
            ("1", 5),
        ).fetchall()
    finally:
        db.close()
        store.close()
    assert "submissions_held_by_rental" in plan[0][3]


V2_SCHEMA = """
CREATE TABLE submissions (
    id INTEGER PRIMARY KEY, rental_id TEXT NOT NULL, seq INTEGER NOT NULL, period_start INTEGER NOT NULL,
    covered_until INTEGER NOT NULL, delivered_seconds INTEGER NOT NULL, util_seconds INTEGER NOT NULL,
    status INTEGER NOT NULL, telemetry_root BLOB NOT NULL, report_digest BLOB NOT NULL, signature BLOB NOT NULL,
    body BLOB NOT NULL, received_at REAL NOT NULL, state TEXT NOT NULL DEFAULT 'held', batched_tx_key TEXT,
    UNIQUE (rental_id, seq)
);
"""


def test_a_store_of_protocol_v2_opens_with_its_reports_and_gains_the_quarantine(tmp_path):
    """A database written before quarantine existed keeps every report and takes quarantine and evidence."""
    path = tmp_path / "oracle.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(V2_SCHEMA)
    kept = entry(5, 1)
    report = kept.submission.report
    db.execute(
        "INSERT INTO submissions (rental_id, seq, period_start, covered_until, delivered_seconds, util_seconds,"
        " status, telemetry_root, report_digest, signature, body, received_at, state)"
        " VALUES ('5', 1, ?, ?, ?, ?, 0, ?, ?, ?, ?, 1.0, 'held')",
        (
            report.period_start,
            report.covered_until,
            report.delivered_seconds,
            report.util_seconds,
            report.telemetry_root,
            kept.report_digest,
            kept.submission.signature,
            kept.body,
        ),
    )
    db.commit()
    db.close()

    store = SubmissionStore(path)
    try:
        assert store.submissions([SubmissionKey(5, 1)]) == [kept.submission]
        assert store.quarantine([(SubmissionKey(5, 1), "TOTALS_DECREASED: test")]) == [SubmissionKey(5, 1)]
        assert store.quarantined() == [(SubmissionKey(5, 1), "TOTALS_DECREASED: test")]
        assert store.count_equivocations() == 0
    finally:
        store.close()


def test_quarantine_takes_only_held_reports_out_of_waiting_with_their_reason(store):
    store.add([entry(1, 1), entry(2, 1), entry(3, 1)])
    store.mark_batched([SubmissionKey(3, 1)], "tx")

    quarantined = store.quarantine(
        [(SubmissionKey(1, 1), "DELIVERED_ABOVE_COVERED: x"), (SubmissionKey(3, 1), "cosign_refused: y")]
    )

    assert quarantined == [SubmissionKey(1, 1)]
    assert store.state(SubmissionKey(1, 1)) is ReportState.QUARANTINED
    assert store.state(SubmissionKey(3, 1)) is ReportState.BATCHED
    assert [w.key for w in store.waiting()] == [SubmissionKey(2, 1)]
    assert store.quarantine_counts() == {"DELIVERED_ABOVE_COVERED": 1}


def test_failed_batches_are_counted_per_report_until_the_limit(store):
    store.add([entry(1, 1), entry(2, 1)])
    store.mark_batched([SubmissionKey(1, 1), SubmissionKey(2, 1)], "tx1")
    assert store.count_failed_batch("tx1", 2) == []
    store.release_batch("tx1")
    store.mark_batched([SubmissionKey(1, 1)], "tx2")

    assert store.count_failed_batch("tx2", 2) == [SubmissionKey(1, 1)]
    assert store.count_failed_batch("tx1", 2) == []  # released: nothing of tx1 is batched any more


def test_an_equivocation_is_kept_once_with_both_reports(store):
    held = entry(1, 1)
    store.add([held])
    other_report = held.submission.report.model_copy(update={"util_seconds": 1})
    other_submission = TelemetrySubmission(report=other_report, signature=b"\x02" * 64 + b"\x1c")
    other = NewSubmission(other_submission, keccak(text="other"), other_submission.model_dump_json().encode())

    assert store.record_equivocation(SubmissionKey(1, 1), "0xProvider", other)
    assert not store.record_equivocation(SubmissionKey(1, 1), "0xProvider", other)
    assert not store.record_equivocation(SubmissionKey(1, 1), "0xProvider", held)  # the held report itself

    assert store.equivocations() == [Equivocation(1, 1, "0xProvider", held.submission, other_submission)]
    assert store.count_equivocations() == 1


def test_recently_landed_gives_each_rentals_latest_landing_within_the_window(store):
    store.add([entry(1, 1), entry(1, 2), entry(2, 1), entry(3, 1)])
    store.settle([(SubmissionKey(1, 1), ReportState.LANDED), (SubmissionKey(1, 2), ReportState.LANDED)])
    store.settle([(SubmissionKey(3, 1), ReportState.SKIPPED)])
    assert store.recently_landed(0) == [SubmissionKey(1, 2)]
    assert store.recently_landed(time.time() + 60) == []


def test_reopen_batch_puts_a_resent_transactions_reports_back_in_it(store):
    store.add([entry(1, 1), entry(2, 1), entry(3, 1)])
    store.mark_batched([SubmissionKey(1, 1), SubmissionKey(2, 1)], "tx-a")
    store.mark_batched([SubmissionKey(3, 1)], "tx-b")
    store.settle([(SubmissionKey(1, 1), ReportState.LANDED), (SubmissionKey(2, 1), ReportState.SKIPPED)])
    store.settle([(SubmissionKey(3, 1), ReportState.LANDED)])
    assert store.reopen_batch("tx-a") == 2
    assert [s.report.rental_id for s in store.batched("tx-a")] == [1, 2]
    assert store.state(SubmissionKey(3, 1)) is ReportState.LANDED
    assert store.reopen_batch("tx-a") == 0


def test_reopen_landed_holds_the_latest_lost_report_and_supersedes_the_others(store):
    store.add([entry(1, 1), entry(1, 2), entry(1, 3), entry(2, 1), entry(2, 2)])
    store.settle([(SubmissionKey(1, seq), ReportState.LANDED) for seq in (1, 2, 3)])
    store.settle([(SubmissionKey(2, 1), ReportState.LANDED)])
    # Rental 1: the chain kept seq 1 only. Rental 2: a later report is held, which carries the lost one's totals.
    assert store.reopen_landed([(1, 1), (2, 0)]) == 3
    assert [store.state(SubmissionKey(1, seq)) for seq in (1, 2, 3)] == [
        ReportState.LANDED,
        ReportState.SUPERSEDED,
        ReportState.HELD,
    ]
    assert store.state(SubmissionKey(2, 1)) is ReportState.SUPERSEDED
    assert [(w.rental_id, w.seq, w.landed_until) for w in store.waiting()] == [(1, 3, 200), (2, 2, None)]


def test_a_store_written_before_settlement_times_gains_them(tmp_path):
    path = tmp_path / "oracle.sqlite3"
    old = SubmissionStore(path)
    old.add([entry(1, 1)])
    old.settle([(SubmissionKey(1, 1), ReportState.LANDED)])
    old.close()
    db = sqlite3.connect(path)
    db.execute("DROP INDEX submissions_recently_landed")
    db.execute("ALTER TABLE submissions DROP COLUMN settled_at")
    db.commit()
    db.close()
    reopened = SubmissionStore(path)
    try:
        assert reopened.state(SubmissionKey(1, 1)) is ReportState.LANDED
        assert reopened.recently_landed(0) == []  # landed before times were kept: outside every window
        reopened.settle([(SubmissionKey(1, 1), ReportState.LANDED)])
        assert reopened.recently_landed(0) == [SubmissionKey(1, 1)]
    finally:
        reopened.close()
