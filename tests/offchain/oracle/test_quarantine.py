"""The leader's quarantine on a real anvil with the 2-of-3 oracle set: a report the chain would skip for good never
enters a batch, a report the peers refuse is split off (and quarantined only when the refusals leave too few
oracles to sign it, for a reason that does not pass), a report whose batches keep failing is given up, and a peer
asked to co-sign a second report for a seq it holds keeps both as evidence."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack, asynccontextmanager

from aiohttp import web
from aiohttp.test_utils import TestServer
from brownie import chain
from eth_utils import keccak

from offchain.oracle.app import STORE, TELEMETRY_PATH
from offchain.oracle.batcher import MAX_FAILED_BATCHES
from offchain.oracle.cosign import COSIGN_PATH
from offchain.oracle.store import ReportState, SubmissionKey
from offchain.protocol.messages import CosignRequest, OracleError, RejectReason
from offchain.protocol.reports import ReportStatus
from offchain.protocol.status import RentalStatus
from scripts.deploy import SuiteParams
from tests.offchain.chain.helpers import settle
from tests.offchain.conftest import ORACLES
from tests.offchain.oracle.helpers import (
    PERIOD,
    RENTAL_SECONDS,
    Rental,
    body,
    oracle_client,
    post,
    report,
    submission,
)
from tests.offchain.oracle.test_batcher import NEVER, accept, land, leader, on_chain


@asynccontextmanager
async def refusing_peer(reason: RejectReason):
    """A peer that refuses every batch at its first report, for `reason`."""

    async def refuse(request: web.Request) -> web.Response:
        error = OracleError(error=reason, detail="refused by a test peer", index=0)
        return web.json_response(error.model_dump(mode="json"), status=409)

    async with serving(refuse) as url:
        yield url


@asynccontextmanager
async def serving(cosign):
    """A peer whose co-signing endpoint is `cosign`; its base URL."""
    app = web.Application()
    app.router.add_post(COSIGN_PATH, cosign)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


def unreachable_peer() -> str:
    return "http://127.0.0.1:9"  # the discard port: nothing listens


def final_report(rental):
    return report(rental, 1, status=ReportStatus.COMPLETED)


def test_a_report_the_chain_would_skip_for_good_is_quarantined_and_never_batched(
    settings, open_rental, suite, provider
):
    """The first report was accepted while the rental was Open; its provider then started it, so the rental's
    `since` moved past that report's coverage and the next report delivers more than the time since the start."""
    chain.sleep(2 * PERIOD)
    chain.mine()
    suite.escrow.start(open_rental.rental_id, {"from": provider})
    chain.sleep(PERIOD)
    chain.mine()

    async def scenario():
        async with leader(settings, checkpoint_interval=NEVER) as oracle:
            accept(settings, oracle, report(open_rental, 1), report(open_rental, 2, status=ReportStatus.COMPLETED))
            outcome = await oracle.batcher.close_batch()
            return (
                outcome,
                oracle.store.quarantined(),
                oracle.metrics.reports_quarantined.value("DELIVERED_ABOVE_COVERED"),
            )

    outcome, quarantined, counted = asyncio.run(scenario())
    assert (outcome.tx_key, outcome.reason) == (None, "no reports due")
    [(key, reason)] = quarantined
    assert key == SubmissionKey(open_rental.rental_id, 2)
    assert reason.startswith("DELIVERED_ABOVE_COVERED: the chain would skip it at block time ")
    assert counted == 1
    assert on_chain(suite, open_rental).last_seq == 0


def test_one_peer_refusing_a_report_cannot_keep_it_from_landing(make_settings, clock, rental, suite):
    settings = make_settings(0)
    chain.sleep(2 * PERIOD)
    chain.mine()

    async def scenario():
        async with AsyncExitStack() as stack:
            hostile = await stack.enter_async_context(refusing_peer(RejectReason.SEQ_CONFLICT))
            honest = await stack.enter_async_context(oracle_client(make_settings(1), clock=clock))
            peers = [hostile, str(honest.make_url("")).rstrip("/")]
            oracle = await stack.enter_async_context(leader(settings, NEVER, peers))
            accept(settings, oracle, final_report(rental))
            return await land(oracle), oracle.store.quarantined()

    carried, quarantined = asyncio.run(scenario())
    assert carried == [(rental.rental_id, 1)]
    assert quarantined == []
    assert on_chain(suite, rental).status is RentalStatus.COMPLETED


def test_a_report_one_peer_refuses_while_the_other_is_down_stays_held(settings, rental):
    chain.sleep(2 * PERIOD)
    chain.mine()

    async def scenario():
        async with refusing_peer(RejectReason.SEQ_CONFLICT) as hostile:
            async with leader(settings, NEVER, [hostile, unreachable_peer()]) as oracle:
                accept(settings, oracle, final_report(rental))
                outcome = await oracle.batcher.close_batch()
                return outcome, oracle.store.state(SubmissionKey(rental.rental_id, 1))

    outcome, state = asyncio.run(scenario())
    assert (outcome.tx_key, outcome.reason) == (None, "not enough co-signatures")
    assert state is ReportState.HELD


def test_a_report_every_peer_refuses_for_good_is_quarantined(settings, rental):
    chain.sleep(2 * PERIOD)
    chain.mine()

    async def scenario():
        async with refusing_peer(RejectReason.SEQ_CONFLICT) as first, refusing_peer(RejectReason.GPU_MISMATCH) as other:
            async with leader(settings, NEVER, [first, other]) as oracle:
                accept(settings, oracle, final_report(rental))
                outcome = await oracle.batcher.close_batch()
                return outcome, oracle.store.quarantined(), oracle.metrics.reports_quarantined.value("cosign_refused")

    outcome, quarantined, counted = asyncio.run(scenario())
    assert outcome.tx_key is None
    [(key, reason)] = quarantined
    assert key == SubmissionKey(rental.rental_id, 1)
    assert reason.startswith("cosign_refused: refused by 2 of 2 peers: ")
    assert "seq_conflict: refused by a test peer" in reason and "gpu_mismatch" in reason
    assert counted == 1


def test_a_report_every_peer_refuses_for_a_passing_reason_stays_held(settings, rental):
    chain.sleep(2 * PERIOD)
    chain.mine()

    async def scenario():
        async with refusing_peer(RejectReason.PERIOD_IN_FUTURE) as first, refusing_peer(RejectReason.SEQ_GAP) as other:
            async with leader(settings, NEVER, [first, other]) as oracle:
                accept(settings, oracle, final_report(rental))
                await oracle.batcher.close_batch()
                return oracle.store.state(SubmissionKey(rental.rental_id, 1))

    assert asyncio.run(scenario()) is ReportState.HELD


def test_a_report_whose_batches_keep_failing_is_quarantined_with_the_last_error(settings, rental, suite):
    """Each batch carrying the report is a transaction the escrow reverts (it carries no signature); the report
    goes back to the store after each, and after MAX_FAILED_BATCHES it is quarantined instead."""
    chain.sleep(2 * PERIOD)
    chain.mine()
    key = SubmissionKey(rental.rental_id, 1)

    async def scenario():
        async with leader(settings, NEVER) as oracle:
            accept(settings, oracle, final_report(rental))
            unsigned = suite.escrow.submitReports.encode_input(
                [final_report(rental).to_chain_report().as_tuple()], 1, []
            )
            states = []
            for attempt in range(1, MAX_FAILED_BATCHES + 1):
                tx_key = f"failing:{attempt}"
                await oracle.txmgr.submit(tx_key, suite.escrow.address, unsigned)
                oracle.store.mark_batched([key], tx_key)
                await settle(oracle.txmgr, tx_key)
                await oracle.batcher.settle_batches()
                states.append(oracle.store.state(key))
            return states, oracle.store.quarantined()

    states, quarantined = asyncio.run(scenario())
    assert states == [ReportState.HELD] * (MAX_FAILED_BATCHES - 1) + [ReportState.QUARANTINED]
    [(_, reason)] = quarantined
    assert reason.startswith(f"batch_failed: {MAX_FAILED_BATCHES} batches failed, the last dry-run reverted: Escrow_")


def test_a_peer_asked_to_cosign_a_second_report_for_a_held_seq_keeps_both_as_evidence(
    make_settings, clock, rental, suite, provider
):
    peer = make_settings(1)
    held, other = report(rental, 1), report(rental, 1, util_seconds=10)
    version = suite.read(lambda r: r.oracle_set()).version
    chain.sleep(2 * PERIOD)

    async def scenario():
        async with oracle_client(peer, clock=clock) as client:
            assert (await post(client, TELEMETRY_PATH, body(peer, held)))[0] == 202
            request = CosignRequest(oracle_set_version=version, submissions=(submission(peer, other),))
            refused = await post(client, COSIGN_PATH, request.model_dump_json().encode())
            return refused, client.app[STORE].equivocations()

    (status, error), kept = asyncio.run(scenario())
    assert (status, error["error"], error["index"]) == (409, "seq_conflict", 0)
    assert [(e.rental_id, e.seq, e.provider, e.held.report, e.other.report) for e in kept] == [
        (rental.rental_id, 1, provider.address, held, other)
    ]


def test_a_batch_whose_signatures_stop_verifying_is_not_sent_and_quarantines_nothing(
    make_settings, clock, suite, offer, deployer, renter, provider
):
    """The oracle set changes while the batch is being co-signed: its dry-run reverts for the signatures, so no
    transaction is stored, the report stays held, and the next epoch lands it under the new set."""
    suite.escrow.scheduleOracleSet([o.address for o in ORACLES], 2, {"from": deployer})
    chain.sleep(SuiteParams().governance_delay + 1)
    rental_id = suite.escrow.openRental(offer, RENTAL_SECONDS, 10**9, keccak(text="job"), {"from": renter}).return_value
    rental = Rental(rental_id, suite.escrow.start(rental_id, {"from": provider}).timestamp)
    chain.sleep(2 * PERIOD)
    chain.mine()
    settings = make_settings(0)

    async def scenario():
        async with oracle_client(make_settings(1), clock=clock) as honest:
            signing = str(honest.make_url("")).rstrip("/")
            activated = asyncio.Event()

            async def cosign_then_activate(request: web.Request) -> web.Response:
                """The honest peer's answer, given once the scheduled oracle set took effect."""
                async with honest.session.post(signing + COSIGN_PATH, data=await request.read()) as answer:
                    signed = await answer.read()
                if not activated.is_set():
                    activated.set()
                    await asyncio.to_thread(suite.escrow.activateOracleSet, {"from": deployer})
                return web.Response(body=signed, status=answer.status, content_type="application/json")

            async with serving(cosign_then_activate) as racing, leader(settings, NEVER, [racing]) as oracle:
                accept(settings, oracle, final_report(rental))
                outcome = await oracle.batcher.close_batch()
                after_race = (oracle.txmgr.records(), oracle.store.state(SubmissionKey(rental_id, 1)))
                return outcome, after_race, await land(oracle)

    outcome, (records, state), carried = asyncio.run(scenario())
    assert outcome.tx_key is None
    assert outcome.reason.startswith("dry-run reverted: Escrow_SignerNotInOracleSet")
    assert (records, state) == ([], ReportState.HELD)
    assert carried == [(rental_id, 1)]
