"""The submission store and the API the batcher uses: unbatched, mark_batched, batched, release_batch."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
from eth_utils import keccak

from offchain.oracle.store import AlreadyHeld, NewSubmission, NotBatchable, SubmissionKey, SubmissionStore
from offchain.protocol.messages import TelemetryReport, TelemetrySubmission

BIG_RENTAL = 2**200 + 7  # beyond SQLite's 64-bit integers


def entry(rental_id: int, seq: int) -> NewSubmission:
    report = TelemetryReport(
        rental_id=rental_id,
        seq=seq,
        period_start=100 * seq,
        period_end=100 * (seq + 1),
        delivered_seconds=90,
        avg_util_bps=5_000,
        peak_mem_mib=1,
        sample_count=100,
        gpu_uuids=("GPU-1",),
        telemetry_root=keccak(text=f"{rental_id}/{seq}"),
    )
    submission = TelemetrySubmission(report=report, signature=bytes([seq]) * 64 + b"\x1b")
    return NewSubmission(submission, keccak(text=f"digest {rental_id}/{seq}"), submission.model_dump_json().encode())


@pytest.fixture
def store(tmp_path):
    store = SubmissionStore(tmp_path / "oracle.sqlite3")
    yield store
    store.close()


def test_held_and_last_accepted_follow_what_was_added(store):
    assert store.last_accepted(BIG_RENTAL) is None
    store.add([entry(BIG_RENTAL, 1), entry(BIG_RENTAL, 2), entry(5, 1)])
    assert store.last_accepted(BIG_RENTAL) == (2, 300)
    assert store.last_accepted(5) == (1, 200)
    held = store.held(SubmissionKey(BIG_RENTAL, 2))
    assert held == (entry(BIG_RENTAL, 2).report_digest, entry(BIG_RENTAL, 2).submission.signature)
    assert store.held(SubmissionKey(BIG_RENTAL, 3)) is None


def test_adding_a_held_key_stores_nothing_of_the_call(store):
    store.add([entry(1, 1)])
    with pytest.raises(AlreadyHeld) as raised:
        store.add([entry(2, 1), entry(1, 1)])
    assert raised.value.key == (1, 1)
    assert store.count() == 1 and store.held(SubmissionKey(2, 1)) is None


def test_unbatched_returns_submissions_oldest_first_up_to_the_limit(store):
    entries = [entry(1, 1), entry(2, 1), entry(1, 2), entry(BIG_RENTAL, 1)]
    for e in entries:
        store.add([e])
    assert store.unbatched(3) == [e.submission for e in entries[:3]]
    assert store.unbatched(100) == [e.submission for e in entries]


def test_mark_batched_takes_submissions_out_of_unbatched(store):
    store.add([entry(1, 1), entry(1, 2), entry(2, 1)])
    store.mark_batched([SubmissionKey(1, 1), SubmissionKey(2, 1)], "tx-a")
    assert store.unbatched(10) == [entry(1, 2).submission]
    assert store.batched("tx-a") == [entry(1, 1).submission, entry(2, 1).submission]
    store.mark_batched([SubmissionKey(1, 1)], "tx-a")  # idempotent for the same transaction


@pytest.mark.parametrize("taken_key", [SubmissionKey(1, 1), SubmissionKey(9, 9)], ids=["other_tx", "unknown"])
def test_mark_batched_marks_nothing_if_a_key_is_taken_or_unknown(store, taken_key):
    store.add([entry(1, 1), entry(1, 2)])
    store.mark_batched([SubmissionKey(1, 1)], "tx-a")
    with pytest.raises(NotBatchable):
        store.mark_batched([SubmissionKey(1, 2), taken_key], "tx-b")
    assert store.batched("tx-b") == []
    assert store.unbatched(10) == [entry(1, 2).submission]


def test_release_batch_returns_submissions_to_unbatched(store):
    store.add([entry(1, 1), entry(1, 2)])
    store.mark_batched([SubmissionKey(1, 1), SubmissionKey(1, 2)], "tx-a")
    assert store.release_batch("tx-a") == 2
    assert store.unbatched(10) == [entry(1, 1).submission, entry(1, 2).submission]
    assert store.batched("tx-a") == []


def test_submissions_survive_reopening(tmp_path):
    path = tmp_path / "oracle.sqlite3"
    first = SubmissionStore(path)
    first.add([entry(BIG_RENTAL, 1)])
    first.close()
    second = SubmissionStore(path)
    assert second.unbatched(1) == [entry(BIG_RENTAL, 1).submission]
    assert second.last_accepted(BIG_RENTAL) == (1, 200)
    second.close()


def test_submissions_added_in_one_loop_iteration_commit_together(store, tmp_path):
    other_connection = sqlite3.connect(tmp_path / "oracle.sqlite3")

    async def scenario():
        adds = [asyncio.create_task(store.add_in_group(entry(1, seq))) for seq in (1, 2, 3)]
        duplicate = asyncio.create_task(store.add_in_group(entry(1, 2)))
        await asyncio.sleep(0)  # every insert has run; the commit is due on the next iteration
        assert store.last_accepted(1) == (3, 400)  # the writer sees its open group
        assert other_connection.execute("SELECT count(*) FROM submissions").fetchone()[0] == 0
        with pytest.raises(AlreadyHeld):
            await duplicate
        await asyncio.gather(*adds)

    asyncio.run(scenario())
    assert other_connection.execute("SELECT count(*) FROM submissions").fetchone()[0] == 3
    assert store.unbatched(10) == [entry(1, seq).submission for seq in (1, 2, 3)]


def test_other_calls_commit_an_open_group_first(store):
    async def scenario():
        pending = asyncio.create_task(store.add_in_group(entry(1, 1)))
        await asyncio.sleep(0)
        store.mark_batched([SubmissionKey(1, 1)], "tx-a")  # needs its own transaction: the group commits first
        await pending

    asyncio.run(scenario())
    assert store.batched("tx-a") == [entry(1, 1).submission]
