"""Recovery of an oracle's reports from its peers, on a real anvil over real HTTP: `GET /v1/reports` serves the
held submissions in bounded pages, as received; an oracle that lost its state takes them back at start and when a
report arrives across a gap, each checked as its agent's; a hostile peer gets nothing stored and cannot make the
recovery read without bound."""

from __future__ import annotations

import asyncio
import json
from contextlib import AsyncExitStack, asynccontextmanager, closing
from typing import AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp import web
from brownie import chain
from eth_utils import keccak

from offchain.oracle.app import DB_FILENAME, INGEST, TELEMETRY_PATH
from offchain.oracle.recovery import MAX_PAGE_REPORTS, REPORTS_PATH, PeerRecovery
from offchain.oracle.store import ReportState, SubmissionKey, SubmissionStore
from offchain.protocol.messages import HeldReports, TelemetrySubmission
from tests.offchain.oracle.helpers import PERIOD, body, db_rows, oracle_client, post, report, run, submission


def base_url(client) -> str:
    return str(client.make_url("")).rstrip("/")


async def get(client, query: str) -> tuple[int, bytes]:
    async with client.get(f"{REPORTS_PATH}?{query}") as response:
        return response.status, await response.read()


async def wait_for_rows(settings, count: int, seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if len(db_rows(settings)) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{settings.state_dir} never held {count} reports")


def test_held_reports_are_served_in_pages_as_received(settings, clock, rental):
    posted = [body(settings, report(rental, seq)) for seq in (1, 2, 3)]

    async def scenario():
        async with oracle_client(settings, clock=clock) as client:
            for data in posted:
                assert (await post(client, TELEMETRY_PATH, data))[0] == 202
            first = await get(client, "limit=2")
            cursor = HeldReports.model_validate_json(first[1]).next_after
            last = await get(client, f"after={cursor}&limit=2")
            of_rental = await get(client, f"rental_id={rental.rental_id}")
            of_other = await get(client, f"rental_id={rental.rental_id + 1}")
            received_later = await get(client, f"since={int(clock()) + 3600}")
            return first, last, of_rental, of_other, received_later

    chain.sleep(3 * PERIOD)
    first, last, of_rental, of_other, received_later = run(scenario())
    assert first[0] == last[0] == 200
    assert first[1] == b'{"submissions":[' + b",".join(posted[:2]) + b'],"next_after":' + b"%d}" % cursor_of(first)
    assert last[1] == b'{"submissions":[' + posted[2] + b'],"next_after":null}'
    assert [s.report.seq for s in HeldReports.model_validate_json(of_rental[1]).submissions] == [1, 2, 3]
    assert HeldReports.model_validate_json(of_other[1]) == HeldReports(submissions=())
    assert HeldReports.model_validate_json(received_later[1]) == HeldReports(submissions=())


def cursor_of(answer: tuple[int, bytes]) -> int:
    cursor = HeldReports.model_validate_json(answer[1]).next_after
    assert cursor is not None
    return cursor


@pytest.mark.parametrize(
    "query",
    ["after=-1", "limit=0", f"limit={MAX_PAGE_REPORTS + 1}", "rental_id=abc", "since=1e3", "after=%D9%A3", "after="],
)
def test_a_query_that_is_not_a_page_request_is_400(settings, clock, query):
    async def scenario():
        async with oracle_client(settings, clock=clock) as client:
            status, answer = await get(client, query)
            return status, json.loads(answer)

    status, answer = run(scenario())
    assert (status, answer["error"]) == (400, "invalid_query")
    assert answer["detail"]


def test_an_oracle_that_lost_its_state_takes_its_peers_reports_back_at_start(make_settings, clock, rental):
    peer, wiped = make_settings(1), make_settings(0)
    chain.sleep(3 * PERIOD)

    async def scenario():
        async with oracle_client(peer, clock=clock) as peer_client:
            for seq in (1, 2, 3):
                assert (await post(peer_client, TELEMETRY_PATH, body(peer, report(rental, seq))))[0] == 202
            recovering = wiped.model_copy(update={"peers": [base_url(peer_client)]})
            async with oracle_client(recovering, clock=clock):
                await wait_for_rows(wiped, 3)

    run(scenario())
    with closing(SubmissionStore(wiped.state_dir / DB_FILENAME)) as store:
        assert [s.report for s in store.reports(rental.rental_id)] == [report(rental, seq) for seq in (1, 2, 3)]
        assert [store.state(SubmissionKey(rental.rental_id, seq)) for seq in (1, 2, 3)] == [
            ReportState.SUPERSEDED,
            ReportState.SUPERSEDED,
            ReportState.HELD,
        ]


def test_a_report_across_a_gap_is_first_filled_from_the_peers(make_settings, clock, rental):
    peer, behind = make_settings(1), make_settings(0)
    chain.sleep(3 * PERIOD)

    async def scenario():
        async with AsyncExitStack() as stack:
            peer_client = await stack.enter_async_context(oracle_client(peer, clock=clock))
            client = await stack.enter_async_context(
                oracle_client(behind.model_copy(update={"peers": [base_url(peer_client)]}), clock=clock)
            )
            await asyncio.sleep(0.5)  # the recovery at start found nothing
            for seq in (1, 2):
                assert (await post(peer_client, TELEMETRY_PATH, body(peer, report(rental, seq))))[0] == 202
            return await post(client, TELEMETRY_PATH, body(behind, report(rental, 3)))

    status, ack = run(scenario())
    assert status == 202 and "missing_from_seq" not in ack  # seqs 1 and 2 came from the peer first
    assert [row[2] for row in db_rows(behind)] == [1, 2, 3]


@asynccontextmanager
async def hostile_peer(answer: Callable[[web.Request], web.StreamResponse]) -> AsyncIterator[tuple[str, list]]:
    """A peer on loopback whose `GET /v1/reports` answers with `answer`; yields its URL and the queries it got."""
    queries: list = []

    async def handle(request: web.Request) -> web.StreamResponse:
        queries.append(dict(request.query))
        result = answer(request)
        if asyncio.iscoroutine(result):
            result = await result
        return result

    app = web.Application()
    app.router.add_get(REPORTS_PATH, handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}", queries
    finally:
        await runner.cleanup()


def page(submissions: list[TelemetrySubmission], next_after: int | None = None) -> web.Response:
    return web.Response(
        body=HeldReports(submissions=tuple(submissions), next_after=next_after).model_dump_json(),
        content_type="application/json",
    )


async def recover_from(settings, clock, answer, **limits):
    """Runs one recovery of an oracle with no peers of its own from a hostile peer answering `answer`."""
    async with oracle_client(settings, clock=clock) as client:
        async with hostile_peer(answer) as (url, queries), aiohttp.ClientSession() as session:
            recovery = PeerRecovery(
                client.app[INGEST], [url], session, max_report_age_seconds=86_400, max_body_bytes=1024, **limits
            )
            return await recovery.recover(), queries


def test_reports_a_peer_forged_or_altered_are_refused_and_none_stored(settings, clock, rental):
    genuine = submission(settings, report(rental, 1))
    altered = TelemetrySubmission(
        report=genuine.report.model_copy(update={"delivered_seconds": PERIOD, "util_seconds": PERIOD}),
        signature=genuine.signature,
    )
    forged = submission(settings, report(rental, 2), key=keccak(text="not the agent"))
    chain.sleep(2 * PERIOD)

    outcome, _ = run(recover_from(settings, clock, lambda request: page([altered, forged])))
    assert (outcome.accepted, outcome.duplicates, outcome.refused) == (0, 0, {"signer_not_agent": 2})
    assert db_rows(settings) == []


def test_a_peer_page_over_its_size_bound_is_dropped_unread(settings, clock, rental):
    chain.sleep(PERIOD)

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(b'{"submissions":[')
        for _ in range(1_000):
            await response.write(b" " * 4096)
        return response

    outcome, _ = run(recover_from(settings, clock, endless, page_reports=2))
    assert "over" in outcome.failed_peers[next(iter(outcome.failed_peers))]
    assert db_rows(settings) == []


@pytest.mark.parametrize(
    "case, expected",
    [
        ("too_many", "reports in a page of at most"),
        ("not_a_page", "not a page of held reports"),
        ("error_status", "HTTP 500"),
        ("cursor_back", "cursor went back"),
    ],
)
def test_a_peer_that_answers_out_of_protocol_is_skipped(settings, clock, rental, case, expected):
    chain.sleep(PERIOD)
    genuine = submission(settings, report(rental, 1))
    answers = {
        "too_many": lambda request: page([genuine] * 3),
        "not_a_page": lambda request: web.Response(body=b'{"submissions": 1}', content_type="application/json"),
        "error_status": lambda request: web.Response(status=500),
        "cursor_back": lambda request: page([], next_after=int(request.query["after"])),
    }

    outcome, _ = run(recover_from(settings, clock, answers[case], page_reports=2))
    (reason,) = outcome.failed_peers.values()
    assert expected in reason
    assert outcome.accepted == 0


def test_a_peer_that_always_has_another_page_is_read_only_up_to_the_page_bound(settings, clock):
    outcome, queries = run(
        recover_from(settings, clock, lambda request: page([], next_after=int(request.query["after"]) + 1), max_pages=5)
    )
    assert len(queries) == 5 and outcome.failed_peers == {}
    assert [int(q["after"]) for q in queries] == [0, 1, 2, 3, 4]


def test_a_rental_gap_is_filled_from_the_peers_at_most_once_per_interval(settings, clock, rental):
    async def scenario():
        async with oracle_client(settings, clock=clock) as client:
            async with hostile_peer(lambda request: page([])) as (url, queries), aiohttp.ClientSession() as session:
                recovery = PeerRecovery(
                    client.app[INGEST], [url], session, max_report_age_seconds=86_400, max_body_bytes=1024
                )
                for _ in range(3):
                    await recovery.fill(rental.rental_id, 5)
                await recovery.fill(rental.rental_id + 1, 5)
                return queries

    queries = run(scenario())
    assert [q["rental_id"] for q in queries] == [str(rental.rental_id), str(rental.rental_id + 1)]
