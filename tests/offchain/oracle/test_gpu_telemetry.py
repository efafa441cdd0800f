"""Per-GPU figures on a real anvil: an oracle keeps those its agent signed with a report, and its page serves them
(`GET /web/api/rentals/{id}/telemetry`); a forged, misplaced, malformed or oversized summary is refused with its
reason and leaves nothing behind; a report without one is accepted as before; bad parameters get a 400."""

from __future__ import annotations

import json
import sqlite3
from contextlib import asynccontextmanager, closing
from typing import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from brownie import chain, web3

from offchain.chain import deployments
from offchain.oracle import gpuperiods
from offchain.oracle.app import DB_FILENAME, TELEMETRY_PATH, create_app
from offchain.oracle.store import SubmissionStore
from offchain.protocol.digest import TelemetryDomain
from offchain.protocol.gpustats import MAX_SUMMARY_GPUS, GpuPeriodStats, GpuSummary
from offchain.protocol.messages import TelemetryReport, TelemetrySubmission, sign_gpu_summary
from offchain.web.app import create_standalone_app
from tests.offchain.conftest import AGENT_KEY, GPU_UUIDS
from tests.offchain.oracle.helpers import PERIOD, Rental, oracle_client, post, report, run, submission
from tests.offchain.oracle.test_telemetry import expect_rejected
from tests.offchain.protocol.test_gpustats import GPUS
from tests.offchain.web.conftest import POLL_SECONDS, until_block

OTHER_KEY = bytes.fromhex("5d" * 32)
SHOWN = [
    {
        "uuid": GPU_UUIDS[0],
        "util_pct": 95.12,
        "mem_used_mib": 40_000,
        "mem_total_mib": 81_559,
        "power_w": 312.25,
        "temp_c": 66,
        "samples": 60,
    },
    {
        "uuid": GPU_UUIDS[1],
        "util_pct": 0.0,
        "mem_used_mib": 500,
        "mem_total_mib": 81_559,
        "power_w": None,
        "temp_c": None,
        "samples": 58,
    },
]


@pytest.fixture
def web_settings(make_settings, deployment, tmp_path, monkeypatch):
    """Settings of an oracle that also serves the page (its deployment record in a temporary directory)."""
    monkeypatch.setenv(deployments.DIR_ENV, str(tmp_path / "deployments"))
    deployments.save(deployment)
    return make_settings(0, web=True)


@asynccontextmanager
async def page_client(settings, clock) -> AsyncIterator[TestClient]:
    """The oracle's app, serving the page, once the page's index has reached the chain's head."""
    app = create_app(settings, clock=clock, poll_interval=POLL_SECONDS)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        await until_block(client, web3.eth.block_number)
        yield client


def summarised(
    settings,
    telemetry: TelemetryReport,
    gpus: tuple[GpuPeriodStats, ...] = GPUS,
    key: bytes = AGENT_KEY,
    signed_for: TelemetryReport | None = None,
) -> TelemetrySubmission:
    """`telemetry` signed by the agent, with `gpus` signed by `key` for `signed_for` (default: this report)."""
    chain_id, registry = settings.chain.chain_id, settings.chain.registry
    bound = signed_for or telemetry
    summary = sign_gpu_summary(key, bound, TelemetryDomain(chain_id, registry).digest(bound), gpus, chain_id, registry)
    return submission(settings, telemetry).model_copy(update={"gpu_summary": summary})


def body_of(submission: TelemetrySubmission) -> bytes:
    return submission.model_dump_json().encode()


def kept(settings) -> list[tuple]:
    with closing(sqlite3.connect(settings.state_dir / DB_FILENAME)) as db:
        return db.execute("SELECT rental_id, seq FROM gpu_periods ORDER BY rental_id, seq").fetchall()


async def telemetry(client: TestClient, rental_id: object, query: str = "") -> tuple[int, dict]:
    response = await client.get(f"/web/api/rentals/{rental_id}/telemetry{query}")
    return response.status, await response.json()


def test_summaries_are_kept_with_their_reports_and_served_oldest_first(web_settings, clock, rental):
    async def scenario():
        async with page_client(web_settings, clock) as client:
            empty = await telemetry(client, rental.rental_id)
            for data in (
                body_of(summarised(web_settings, report(rental, 1))),
                body_of(submission(web_settings, report(rental, 2))),  # an agent that sends no summary
                body_of(summarised(web_settings, report(rental, 3), GPUS[:1])),
            ):
                assert (await post(client, TELEMETRY_PATH, data))[0] == 202
            return (
                empty,
                await telemetry(client, rental.rental_id),
                await telemetry(client, rental.rental_id, "?since=1"),
            )

    chain.sleep(3 * PERIOD)
    empty, every, after_first = run(scenario())
    assert empty == (200, {"rental_id": str(rental.rental_id), "latest_seq": None, "points": []})
    status, page = every
    assert status == 200 and page["rental_id"] == str(rental.rental_id) and page["latest_seq"] == 3
    first = report(rental, 1)
    assert page["points"][0] == {
        "seq": 1,
        "period_start": first.period_start,
        "covered_until": first.covered_until,
        "gpus": SHOWN,
    }
    assert [(p["seq"], len(p["gpus"])) for p in page["points"]] == [(1, 2), (3, 1)]
    assert after_first[1]["latest_seq"] == 3 and [p["seq"] for p in after_first[1]["points"]] == [3]
    assert kept(web_settings) == [(str(rental.rental_id), 1), (str(rental.rental_id), 3)]


def test_a_retried_report_keeps_its_summary_once(web_settings, clock, rental):
    data = body_of(summarised(web_settings, report(rental, 1)))

    async def scenario():
        async with page_client(web_settings, clock) as client:
            assert (await post(client, TELEMETRY_PATH, data))[0] == 202
            assert (await post(client, TELEMETRY_PATH, data))[0] == 200
            return await telemetry(client, rental.rental_id)

    chain.sleep(PERIOD)
    status, page = run(scenario())
    assert status == 200 and [p["seq"] for p in page["points"]] == [1]


def _forged(settings, rental: Rental) -> TelemetrySubmission:
    signed = summarised(settings, report(rental, 1))
    assert signed.gpu_summary is not None
    raised = (signed.gpu_summary.gpus[0].model_copy(update={"util_bps": 10_000}), *signed.gpu_summary.gpus[1:])
    return signed.model_copy(update={"gpu_summary": signed.gpu_summary.model_copy(update={"gpus": raised})})


@pytest.mark.parametrize(
    "make",
    [
        _forged,
        lambda settings, rental: summarised(settings, report(rental, 1), key=OTHER_KEY),
        lambda settings, rental: summarised(settings, report(rental, 1), signed_for=report(rental, 2)),
        lambda settings, rental: summarised(
            settings, report(rental, 1), signed_for=report(Rental(rental.rental_id + 1, rental.since), 1)
        ),
        lambda settings, rental: summarised(settings, report(rental, 1), signed_for=report(rental, 1, sample_count=1)),
    ],
    ids=["a raised figure", "another key", "another seq", "another rental", "another report under the same seq"],
)
def test_a_summary_the_agent_did_not_sign_for_this_report_is_refused(settings, clock, suite, rental, make):
    data = body_of(make(settings, rental))

    async def scenario():
        async with oracle_client(settings, clock=clock) as client:
            payload = await expect_rejected(client, settings, suite, rental.rental_id, data, 403, "gpu_summary_signer")
            assert "not to the report's signer" in payload["detail"]

    chain.sleep(PERIOD)
    run(scenario())


def test_a_malformed_summary_signature_is_refused(settings, clock, suite, rental):
    signed = summarised(settings, report(rental, 1))
    assert signed.gpu_summary is not None
    mangled = signed.gpu_summary.model_copy(update={"signature": signed.gpu_summary.signature[:64] + b"\x1d"})
    data = body_of(signed.model_copy(update={"gpu_summary": mangled}))

    async def scenario():
        async with oracle_client(settings, clock=clock) as client:
            payload = await expect_rejected(client, settings, suite, rental.rental_id, data, 401, "bad_signature")
            assert payload["detail"].startswith("gpu_summary: ")

    chain.sleep(PERIOD)
    run(scenario())


def _with_summary_json(settings, rental: Rental, gpus: list[dict]) -> bytes:
    """A correctly signed report carrying a summary of `gpus` as raw JSON (which the model would refuse to build)."""
    plain = body_of(submission(settings, report(rental, 1)))
    summary = json.dumps({"gpus": gpus, "signature": "11" * 65}).encode()
    return plain[:-1] + b',"gpu_summary":' + summary + b"}"


@pytest.mark.parametrize(
    "gpus",
    [
        [{"uuid": GPU_UUIDS[0], "samples": 1}] * (MAX_SUMMARY_GPUS + 1),
        [{"uuid": "GPU-not-in-the-report", "samples": 1}],
        [{"uuid": GPU_UUIDS[0], "samples": 1, "util_bps": 10_001}],
        [{"uuid": GPU_UUIDS[0], "samples": 1, "note": "x" * 1000}],
    ],
    ids=["oversized", "a GPU the report does not name", "utilisation above 100 %", "an unknown field"],
)
def test_a_malformed_summary_is_refused_as_an_invalid_body(settings, clock, suite, rental, gpus):
    data = _with_summary_json(settings, rental, gpus)

    async def scenario():
        async with oracle_client(settings, clock=clock) as client:
            payload = await expect_rejected(client, settings, suite, rental.rental_id, data, 400, "invalid_body")
            assert "gpu_summary" in payload["detail"]

    chain.sleep(PERIOD)
    run(scenario())


def test_bad_parameters_and_unknown_rentals_are_refused_with_a_reason(web_settings, clock, rental):
    async def scenario():
        async with page_client(web_settings, clock) as client:
            return [
                (status, payload["error"])
                for status, payload in [
                    await telemetry(client, "abc"),
                    await telemetry(client, 0),
                    await telemetry(client, 2**256),
                    await telemetry(client, rental.rental_id, "?since=-1"),
                    await telemetry(client, rental.rental_id, "?since=x"),
                    await telemetry(client, rental.rental_id, f"?since={2**32}"),
                    await telemetry(client, rental.rental_id + 1),
                ]
            ]

    assert run(scenario()) == [(400, "bad_query")] * 6 + [(404, "unknown_rental")]


def test_a_page_served_without_an_oracle_says_it_serves_no_telemetry(rpc_url, deployment, rental):
    async def scenario():
        app = create_standalone_app(rpc_url, deployment, poll_interval=POLL_SECONDS)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            return await telemetry(client, rental.rental_id)

    status, payload = run(scenario())
    assert (status, payload["error"]) == (404, "telemetry_not_served")
    assert "without an oracle" in payload["detail"]


def test_an_oracle_keeps_the_latest_periods_of_a_rental_and_none_that_ended_long_ago(tmp_path):
    rental = Rental(7, 1_000_000)
    now = rental.since + (gpuperiods.KEPT_PERIODS + 2) * PERIOD
    with (
        closing(SubmissionStore(tmp_path / "store.sqlite3")) as store,
        closing(sqlite3.connect(tmp_path / "store.sqlite3")) as db,
    ):
        for seq in range(1, gpuperiods.KEPT_PERIODS + 3):
            gpuperiods.insert(db, _signed_anyhow(report(rental, seq)), now)
        db.commit()
        latest, periods = gpuperiods.read(db, rental.rental_id, 0, 1_000)
        assert latest == gpuperiods.KEPT_PERIODS + 2
        assert [p.seq for p in periods] == list(range(3, gpuperiods.KEPT_PERIODS + 3))
        assert store.gpu_periods(rental.rental_id, 0, 1)[1][0].seq == 3

        other = Rental(8, now)
        gpuperiods.insert(db, _signed_anyhow(report(other, 1)), now + gpuperiods.RETENTION_SECONDS + PERIOD)
        assert gpuperiods.read(db, rental.rental_id, 0, 1_000) == (None, [])
        assert [p.seq for p in gpuperiods.read(db, other.rental_id, 0, 1_000)[1]] == [1]


def _signed_anyhow(telemetry: TelemetryReport) -> TelemetrySubmission:
    """What the store is given once an oracle verified it; the store itself checks no signature."""
    return TelemetrySubmission(
        report=telemetry, signature=b"\x01" * 65, gpu_summary=GpuSummary(gpus=GPUS, signature=b"\x01" * 65)
    )
