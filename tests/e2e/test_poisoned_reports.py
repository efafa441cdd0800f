"""Poisoned and equivocating reports against the three oracles as processes: none of them keeps another rental's
report from landing, and each ends where it belongs.

The tests post signed reports to the oracles' `POST /v1/telemetry` themselves, as an agent would (AGENT_KEY signs
them), so that a report can be made to differ from oracle to oracle or to go bad on chain after it was accepted.
Blocks are mined on the wall clock while a test waits, as a live chain would produce them.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from pathlib import Path

import aiohttp
from brownie import chain, web3

from offchain.oracle.service import STORE_FILE
from offchain.protocol.messages import ZERO_ROOT, TelemetryReport, TelemetrySubmission
from offchain.protocol.reports import ReportStatus
from offchain.protocol.status import RentalStatus
from tests.e2e.conftest import SINGLE_SUBMITTER, oracle_processes
from tests.offchain.conftest import AGENT_KEY

#: Seconds a scenario waits for what should land or settle.
WAIT_SECONDS = 40


def rental_state(suite, rental_id: int):
    return suite.read(lambda reader: reader.rental(rental_id))


def listed(list_offer) -> tuple[int, tuple[str, ...]]:
    """A new offer of two made-up GPUs: its id and their UUIDs."""
    uuids = tuple(f"GPU-{uuid.uuid4()}" for _ in range(2))
    return list_offer(list(uuids)), uuids


def opened(suite, renter, offer_id: int) -> int:
    """A new rental of `offer_id`, opened in a block stamped with the wall clock (the oracles' clock), so that its
    short start timeout runs on both clocks alike even where the node's clock fell behind."""
    latest = web3.eth.get_block("latest").timestamp
    web3.provider.make_request("evm_setNextBlockTimestamp", [max(latest + 1, int(time.time()))])
    return suite.escrow.openRental(offer_id, 3_600, 2**64 - 1, b"\x11" * 32, {"from": renter}).return_value


def started(suite, provider, renter, list_offer) -> tuple[int, tuple[str, ...]]:
    """A running rental of a new offer: its id and the offer's GPUs."""
    offer_id, gpus = listed(list_offer)
    rental_id = opened(suite, renter, offer_id)
    suite.escrow.start(rental_id, {"from": provider})
    return rental_id, gpus


def telemetry(
    rental_id: int,
    gpus: tuple[str, ...],
    seq: int,
    period_start: int,
    covered_until: int,
    delivered: int,
    status: ReportStatus = ReportStatus.COMPLETED,
    prev_root: bytes = ZERO_ROOT,
) -> TelemetryReport:
    """A cumulative report of `delivered` seconds at full utilisation up to `covered_until`."""
    return TelemetryReport(
        rental_id=rental_id,
        seq=seq,
        period_start=period_start,
        covered_until=covered_until,
        delivered_seconds=delivered,
        util_seconds=delivered,
        peak_mem_mib=1_000,
        sample_count=max(1, covered_until - period_start),
        gpu_uuids=gpus,
        prev_root=prev_root,
        samples_root=seq.to_bytes(32, "big"),
        status=status,
        simulated=True,
    )


async def post(session: aiohttp.ClientSession, url: str, chain_settings, report: TelemetryReport) -> int:
    """Posts `report`, signed by the agent, to the oracle at `url`; the HTTP status."""
    signed = TelemetrySubmission(
        report=report, signature=report.sign(AGENT_KEY, chain_settings.chain_id, chain_settings.registry)
    )
    async with session.post(
        url + "/v1/telemetry", data=signed.model_dump_json(), headers={"Content-Type": "application/json"}
    ) as response:
        return response.status


async def until(predicate, what: str, timeout: float = WAIT_SECONDS) -> None:
    """Waits until `predicate()` (run in a thread) holds, mining a block on the wall clock every half second."""
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(predicate):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.to_thread(chain.mine)
        await asyncio.sleep(0.5)


def stored(state_root: Path, index: int, rental_id: int, seq: int) -> tuple[str, str | None]:
    """The state and quarantine reason of a report oracle `index` holds."""
    db = sqlite3.connect(state_root / f"oracle{index}" / STORE_FILE)
    try:
        return db.execute(
            "SELECT state, quarantine_reason FROM submissions WHERE rental_id = ? AND seq = ?",
            (str(rental_id), seq),
        ).fetchone()
    finally:
        db.close()


def equivocations(state_root: Path, index: int) -> list[tuple]:
    db = sqlite3.connect(state_root / f"oracle{index}" / STORE_FILE)
    try:
        return db.execute(
            "SELECT rental_id, seq, provider, held_digest != other_digest FROM equivocations ORDER BY id"
        ).fetchall()
    finally:
        db.close()


def completed(suite, rental_id: int):
    return lambda: rental_state(suite, rental_id).status is RentalStatus.COMPLETED


def test_a_report_the_chain_would_skip_is_quarantined_and_the_others_land(
    suite, chain_settings, provider, renter, list_offer, tmp_path
):
    """The provider's first report is accepted while its rental is Open; the provider then starts it, moving its
    `since` past that report, so the chain would skip the rental's next report (its delivered seconds no longer fit
    the time since the start). The leader quarantines it with the reason; another rental's report lands."""
    poisoned_offer, poisoned_gpus = listed(list_offer)
    honest, honest_gpus = started(suite, provider, renter, list_offer)
    honest_since = rental_state(suite, honest).since
    poisoned = 0

    async def scenario() -> str:
        nonlocal poisoned
        async with (
            oracle_processes(chain_settings, tmp_path, per_oracle=SINGLE_SUBMITTER) as cluster,
            aiohttp.ClientSession() as session,
        ):
            # Opened now: the rental must still be within its (short) start timeout when reported and started.
            poisoned = await asyncio.to_thread(opened, suite, renter, poisoned_offer)
            opened_at = (await asyncio.to_thread(rental_state, suite, poisoned)).since
            first = telemetry(poisoned, poisoned_gpus, 1, opened_at, opened_at + 2, 2, ReportStatus.RUNNING)
            assert [await post(session, url, chain_settings, first) for url in cluster.urls] == [202] * 3
            await asyncio.sleep(2)
            await asyncio.to_thread(suite.escrow.start, poisoned, {"from": provider})
            end = (await asyncio.to_thread(rental_state, suite, poisoned)).since + 1
            second = telemetry(
                poisoned, poisoned_gpus, 2, opened_at + 2, end, end - opened_at, prev_root=first.telemetry_root
            )
            final = telemetry(honest, honest_gpus, 1, honest_since, end, end - honest_since)
            for report in (second, final):
                assert [await post(session, url, chain_settings, report) for url in cluster.urls] == [202] * 3
            await until(completed(suite, honest), "the honest rental's report to land")
            await until(lambda: stored(tmp_path, 0, poisoned, 2)[0] != "held", "the poisoned report to leave held")
            await until(lambda: stored(tmp_path, 0, honest, 1)[0] == "landed", "the leader to settle the batch")
            return await cluster.oracles[0].metrics()

    metrics = asyncio.run(scenario())

    state, reason = stored(tmp_path, 0, poisoned, 2)
    assert state == "quarantined"
    assert reason.startswith("DELIVERED_ABOVE_COVERED: ")
    assert 'gpuex_oracle_reports_quarantined{reason="DELIVERED_ABOVE_COVERED"} 1' in metrics.splitlines()
    assert rental_state(suite, poisoned).last_seq == 0


def test_an_agent_that_signs_two_reports_for_one_seq_delays_no_other_rental(
    suite, chain_settings, provider, renter, list_offer, tmp_path
):
    """The agent sends one final report to the leader and another for the same seq to its peers, who refuse to
    co-sign the leader's: the leader splits it off and the other rental's report lands; the peers keep both
    reports as the provider's equivocation, and refuse the leader's version when the agent posts it to them too."""
    cheating, cheating_gpus = started(suite, provider, renter, list_offer)
    honest, honest_gpus = started(suite, provider, renter, list_offer)
    cheating_since, honest_since = (rental_state(suite, r).since for r in (cheating, honest))
    time.sleep(2)

    async def scenario() -> tuple[list[int], str]:
        async with (
            oracle_processes(chain_settings, tmp_path, per_oracle=SINGLE_SUBMITTER) as cluster,
            aiohttp.ClientSession() as session,
        ):
            now = max(int(time.time()), cheating_since + 2, honest_since + 2)  # past both starts, on either clock
            to_leader = telemetry(cheating, cheating_gpus, 1, cheating_since, now, now - cheating_since)
            to_peers = telemetry(cheating, cheating_gpus, 1, cheating_since, now, now - cheating_since - 1)
            assert [await post(session, url, chain_settings, to_peers) for url in cluster.urls[1:]] == [202] * 2
            assert await post(session, cluster.urls[0], chain_settings, to_leader) == 202
            final = telemetry(honest, honest_gpus, 1, honest_since, now, now - honest_since)
            assert [await post(session, url, chain_settings, final) for url in cluster.urls] == [202] * 3
            await until(completed(suite, honest), "the honest rental's report to land")
            await until(lambda: stored(tmp_path, 0, cheating, 1)[0] != "held", "the leader to split the report off")
            statuses = [await post(session, url, chain_settings, to_leader) for url in cluster.urls[1:]]
            return statuses, await cluster.oracles[1].metrics()

    statuses, peer_metrics = asyncio.run(scenario())

    state, reason = stored(tmp_path, 0, cheating, 1)
    assert state == "quarantined"
    assert reason.startswith("cosign_refused: refused by 2 of 2 peers: seq_conflict: ")
    assert statuses == [409, 409]
    for peer in (1, 2):
        assert equivocations(tmp_path, peer) == [(str(cheating), 1, provider.address, 1)]
    assert "gpuex_oracle_equivocations 1" in peer_metrics.splitlines()
    assert rental_state(suite, cheating).last_seq == 0


def test_a_report_ending_after_the_block_time_lands_once_the_chain_passes_it(
    suite, chain_settings, provider, renter, list_offer, tmp_path
):
    """A final report whose coverage ends 20 s ahead of the chain (within the oracles' clock tolerance) would be
    skipped as `CoverageInFuture` if sent now: it is held and lands once the chain's clock passes it."""
    rental_id, gpus = started(suite, provider, renter, list_offer)
    since = rental_state(suite, rental_id).since

    async def scenario() -> None:
        async with (
            oracle_processes(chain_settings, tmp_path, per_oracle=SINGLE_SUBMITTER) as cluster,
            aiohttp.ClientSession() as session,
        ):
            ahead = int(time.time()) + 20
            assert ahead > web3.eth.get_block("latest").timestamp + 5
            final = telemetry(rental_id, gpus, 1, since, ahead, ahead - since)
            assert [await post(session, url, chain_settings, final) for url in cluster.urls] == [202] * 3
            await until(completed(suite, rental_id), "the report to land")
            await until(lambda: stored(tmp_path, 0, rental_id, 1)[0] == "landed", "the leader to settle the batch")

    asyncio.run(scenario())

    state = rental_state(suite, rental_id)
    assert (state.status, state.last_seq, state.delivered_seconds) == (RentalStatus.COMPLETED, 1, state.covered_seconds)
