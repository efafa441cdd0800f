"""Co-signing between three oracle apps (2-of-3): a peer verifies every report of a batch itself, signs it, and
the escrow accepts the signatures; refusals carry their reason and the index of the submission at fault."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack, asynccontextmanager

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from brownie import chain
from eth_utils import keccak

from offchain.oracle.app import STORE, TELEMETRY_PATH
from offchain.oracle.cosign import COSIGN_PATH, collect_cosignatures
from offchain.protocol.messages import CosignRequest, CosignResponse, chain_reports
from offchain.protocol.reports import EscrowDomain, ReportStatus, sign_batch, submit_args
from offchain.protocol.status import RentalStatus
from tests.offchain.conftest import ORACLE_KEYS, ORACLES
from tests.offchain.oracle.helpers import (
    PERIOD,
    UTIL_PER_PERIOD,
    body,
    chain_state,
    db_rows,
    oracle_client,
    post,
    report,
    run,
    submission,
)


def escrow_domain(suite, settings) -> EscrowDomain:
    return EscrowDomain(
        chain_id=settings.chain.chain_id,
        escrow=suite.escrow.address,
        oracle_set_version=suite.read(lambda r: r.oracle_set()).version,
    )


def base_url(client) -> str:
    return str(client.make_url("")).rstrip("/")


def test_two_of_three_cosigned_batch_settles_the_rental_on_chain(make_settings, clock, rental, suite, relayer):
    oracles = [make_settings(i) for i in range(3)]
    first = report(rental, 1, delivered_seconds=PERIOD - 6, util_seconds=50)
    completion = report(
        rental,
        2,
        delivered_seconds=2 * PERIOD - 6,
        util_seconds=50 + UTIL_PER_PERIOD,
        status=ReportStatus.COMPLETED,
        result_digest=keccak(text="result"),
    )
    domain = escrow_domain(suite, oracles[0])
    chain.sleep(2 * PERIOD)

    async def scenario():
        async with AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(oracle_client(s, clock=clock)) for s in oracles]
            # The agent reached oracles 0 and 1; oracle 2 missed both reports and must verify them itself.
            for telemetry in (first, completion):
                for client, settings in zip(clients[:2], oracles[:2]):
                    assert (await post(client, TELEMETRY_PATH, body(settings, telemetry)))[0] == 202
            batch = clients[0].app[STORE].reports(rental.rental_id)  # every report oracle 0 holds
            request = CosignRequest(oracle_set_version=domain.oracle_set_version, submissions=tuple(batch))
            async with aiohttp.ClientSession() as session:
                collected = await collect_cosignatures(
                    session,
                    [base_url(c) for c in clients[1:]],
                    request,
                    domain,
                    [o.address for o in ORACLES],
                    needed=2,
                    timeout=10,
                )
            return batch, collected

    batch, collected = run(scenario())
    assert collected.failures == {}
    assert set(collected.signatures) == {ORACLES[1].address, ORACLES[2].address}
    assert [s.report for s in batch] == [first, completion]
    assert len(db_rows(oracles[2])) == 2  # oracle 2 now holds what it verified and signed

    reports = chain_reports(batch)
    leader_signature = sign_batch(reports, domain, ORACLE_KEYS[0])
    signatures = [leader_signature, collected.signatures[ORACLES[2].address]]
    suite.escrow.submitReports(*submit_args(reports, signatures, domain.oracle_set_version), {"from": relayer})
    settled = suite.read(lambda r: r.rental(rental.rental_id))
    assert (settled.status, settled.last_seq, settled.covered_seconds, settled.delivered_seconds) == (
        RentalStatus.COMPLETED,
        2,
        2 * PERIOD,
        2 * PERIOD - 6,
    )
    assert settled.util_seconds == 50 + UTIL_PER_PERIOD


def test_peer_signs_a_batch_it_already_holds(make_settings, clock, rental, suite):
    peer = make_settings(1)
    chain.sleep(PERIOD)
    held = submission(peer, report(rental, 1))
    version = suite.read(lambda r: r.oracle_set()).version

    async def scenario():
        async with oracle_client(peer, clock=clock) as client:
            assert (await post(client, TELEMETRY_PATH, held.model_dump_json().encode()))[0] == 202
            request = CosignRequest(oracle_set_version=version, submissions=(held,))
            return await post(client, COSIGN_PATH, request.model_dump_json().encode())

    status, payload = run(scenario())
    assert status == 200
    answer = CosignResponse.model_validate(payload)
    assert answer.signer == ORACLES[1].address
    assert answer.signature == sign_batch(chain_reports([held]), escrow_domain(suite, peer), ORACLE_KEYS[1])
    assert len(db_rows(peer)) == 1


def test_peer_that_lacks_earlier_reports_co_signs_the_latest_across_the_gap(make_settings, clock, rental, suite):
    """A peer that lost its state (or missed reports) checks a batch's report against the last totals it knows:
    reports are cumulative, so a missing intermediate report is harmless."""
    peer = make_settings(1)
    domain = escrow_domain(suite, peer)
    chain.sleep(3 * PERIOD)
    latest = submission(peer, report(rental, 3))

    async def scenario():
        async with oracle_client(peer, clock=clock) as client:
            request = CosignRequest(oracle_set_version=domain.oracle_set_version, submissions=(latest,))
            return await post(client, COSIGN_PATH, request.model_dump_json().encode())

    status, payload = run(scenario())
    assert status == 200, payload
    assert CosignResponse.model_validate(payload).signature == sign_batch(
        chain_reports([latest]), domain, ORACLE_KEYS[1]
    )
    assert len(db_rows(peer)) == 1


def test_peer_signs_a_report_that_follows_reports_settled_elsewhere(make_settings, clock, rental, suite, relayer):
    peer = make_settings(1)
    domain = escrow_domain(suite, peer)
    chain.sleep(2 * PERIOD)
    settled = report(rental, 1).to_chain_report()
    follower = submission(peer, report(rental, 2))

    async def scenario():
        async with oracle_client(peer, clock=clock) as client:
            signatures = [sign_batch([settled], domain, key) for key in (ORACLE_KEYS[0], ORACLE_KEYS[2])]
            suite.escrow.submitReports(
                *submit_args([settled], signatures, domain.oracle_set_version), {"from": relayer}
            )
            request = CosignRequest(oracle_set_version=domain.oracle_set_version, submissions=(follower,))
            return await post(client, COSIGN_PATH, request.model_dump_json().encode())

    status, payload = run(scenario())
    assert status == 200, payload
    assert len(db_rows(peer)) == 1


async def expect_refused(client, settings, suite, rental, request: bytes, status, reason, index=None):
    rows, state = db_rows(settings), await asyncio.to_thread(chain_state, suite, rental.rental_id)
    got_status, payload = await post(client, COSIGN_PATH, request)
    assert (got_status, payload.get("error"), payload.get("index")) == (status, reason, index), payload
    assert db_rows(settings) == rows
    assert await asyncio.to_thread(chain_state, suite, rental.rental_id) == state


@pytest.mark.parametrize(
    "case, status, reason, index",
    [
        ("other_version", 409, "oracle_set_mismatch", None),
        ("foreign_signature_second", 403, "signer_not_agent", 1),
        ("gap_claiming_more_than_its_time", 422, "delivered_above_period", 0),
        ("conflicts_with_held", 409, "seq_conflict", 0),
        ("discontinuous_within_batch", 409, "period_discontinuous", 1),
        ("duplicate_within_batch", 409, "seq_stale", 1),
    ],
)
def test_peer_refuses_a_batch_it_cannot_verify_and_stores_none_of_it(
    make_settings, clock, rental, suite, case, status, reason, index
):
    peer = make_settings(1)
    version = suite.read(lambda r: r.oracle_set()).version
    chain.sleep(2 * PERIOD)
    good = [submission(peer, report(rental, seq)) for seq in (1, 2)]
    batches = {
        "other_version": (version + 1, good),
        "foreign_signature_second": (version, [good[0], submission(peer, report(rental, 2), key=keccak(text="x"))]),
        "gap_claiming_more_than_its_time": (
            version,
            [submission(peer, report(rental, 2, delivered_seconds=2 * PERIOD + 1, util_seconds=0))],
        ),
        "conflicts_with_held": (version, [submission(peer, report(rental, 1, util_seconds=1))] + good[1:]),
        "discontinuous_within_batch": (
            version,
            [
                good[0],
                submission(peer, report(rental, 2, period_start=rental.since + PERIOD + 1)),
            ],
        ),
        "duplicate_within_batch": (version, [good[0], good[0]]),
    }
    batch_version, batch = batches[case]
    request = CosignRequest(oracle_set_version=batch_version, submissions=tuple(batch)).model_dump_json().encode()

    async def scenario():
        async with oracle_client(peer, clock=clock) as client:
            if case == "conflicts_with_held":
                assert (await post(client, TELEMETRY_PATH, good[0].model_dump_json().encode()))[0] == 202
            await expect_refused(client, peer, suite, rental, request, status, reason, index)

    run(scenario())


def test_oracle_outside_the_set_refuses_to_sign(make_settings, clock, rental, suite):
    outsider = make_settings(3, key=keccak(text="not an oracle"))
    chain.sleep(PERIOD)
    request = CosignRequest(
        oracle_set_version=suite.read(lambda r: r.oracle_set()).version,
        submissions=(submission(outsider, report(rental, 1)),),
    )

    async def scenario():
        async with oracle_client(outsider, clock=clock) as client:
            await expect_refused(
                client, outsider, suite, rental, request.model_dump_json().encode(), 403, "not_in_oracle_set"
            )

    run(scenario())


def test_batch_larger_than_the_cap_is_413(make_settings, clock, rental, suite):
    peer = make_settings(1, max_batch_reports=1)
    chain.sleep(2 * PERIOD)
    request = CosignRequest(
        oracle_set_version=suite.read(lambda r: r.oracle_set()).version,
        submissions=tuple(submission(peer, report(rental, seq)) for seq in (1, 2)),
    )

    async def scenario():
        async with oracle_client(peer, clock=clock) as client:
            too_many = request.model_dump_json().encode()
            await expect_refused(client, peer, suite, rental, too_many, 413, "batch_too_large")
            await expect_refused(client, peer, suite, rental, b'{"submissions": []}', 400, "invalid_body")

    run(scenario())


@asynccontextmanager
async def fake_peer(handler):
    app = web.Application()
    app.router.add_post(COSIGN_PATH, handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


def test_collect_keeps_only_valid_member_signatures_and_bounds_the_wait(make_settings, clock, rental, suite):
    """Peers that are down, hang, refuse or answer with a forged signature give failures, not signatures."""
    honest, outsider = make_settings(1), make_settings(3, key=keccak(text="not an oracle"))
    domain = escrow_domain(suite, honest)
    chain.sleep(PERIOD)
    request = CosignRequest(
        oracle_set_version=domain.oracle_set_version, submissions=(submission(honest, report(rental, 1)),)
    )

    async def forged(_request):
        signature = sign_batch(chain_reports(request.submissions), domain, keccak(text="forger"))
        return web.json_response(CosignResponse(signer=ORACLES[2].address, signature=signature).model_dump(mode="json"))

    async def scenario():
        release = asyncio.Event()

        async def hangs(_request):
            await release.wait()
            return web.Response(status=503)

        async with AsyncExitStack() as stack:
            good = await stack.enter_async_context(oracle_client(honest, clock=clock))
            refusing = await stack.enter_async_context(oracle_client(outsider, clock=clock))
            hung = await stack.enter_async_context(fake_peer(hangs))
            forger = await stack.enter_async_context(fake_peer(forged))
            peers = ["http://127.0.0.1:1", hung, base_url(refusing), forger, base_url(good)]
            started = time.monotonic()
            async with aiohttp.ClientSession() as session:
                collected = await collect_cosignatures(
                    session, peers, request, domain, [o.address for o in ORACLES], needed=2, timeout=1.0
                )
            elapsed = time.monotonic() - started
            release.set()
            return collected, elapsed, peers

    collected, elapsed, peers = run(scenario())
    assert set(collected.signatures) == {ORACLES[1].address}
    assert set(collected.failures) == set(peers) - {peers[-1]}
    assert "not_in_oracle_set" in collected.failures[peers[2]]
    assert "claimed signer" in collected.failures[peers[3]]
    assert "Timeout" in collected.failures[peers[1]]
    assert elapsed < 5
