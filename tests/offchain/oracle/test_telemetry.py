"""POST /v1/telemetry on a real anvil: acceptance, every rejection class with its status and reason (and nothing
stored, nothing sent on chain), idempotent retries, conflicts and the body size limit."""

from __future__ import annotations

import asyncio
import json
from contextlib import closing

import pytest
from brownie import ZERO_ADDRESS, chain
from eth_account import Account
from eth_utils import keccak

from offchain.oracle.app import DB_FILENAME, TELEMETRY_PATH
from offchain.oracle.store import PreviousReport, ReportState, SubmissionKey, SubmissionStore
from offchain.oracle.verify import VerifyPolicy
from offchain.protocol.digest import SECP256K1_N
from offchain.protocol.messages import TelemetrySubmission
from offchain.protocol.reports import EscrowDomain, sign_batch, submit_args
from offchain.protocol.reports import rental_id as make_rental_id
from tests.offchain.conftest import AGENT_KEY, GPU_UUIDS, ORACLE_KEYS
from tests.offchain.oracle.helpers import (
    PERIOD,
    UTIL_PER_PERIOD,
    Rental,
    body,
    chain_state,
    db_rows,
    oracle_client,
    post,
    report,
    run,
    submission,
)

RENTAL_GRACE = 400  # more than SuiteParams.report_grace


async def expect_rejected(client, settings, suite, rental_id, data, status, reason) -> dict:
    """Posts `data`, checks the refusal, and that neither the oracle's database nor the chain changed."""
    rows, state = db_rows(settings), await asyncio.to_thread(chain_state, suite, rental_id)
    got_status, payload = await post(client, TELEMETRY_PATH, data)
    assert (got_status, payload.get("error")) == (status, reason), payload
    assert payload["detail"]
    assert db_rows(settings) == rows
    assert await asyncio.to_thread(chain_state, suite, rental_id) == state
    return payload


def test_accepts_consecutive_reports_and_stores_them(settings, clock, rental):
    async def scenario():
        async with oracle_client(settings, clock=clock) as client:
            for seq in (1, 2):
                status, payload = await post(client, TELEMETRY_PATH, body(settings, report(rental, seq)))
                assert status == 202
                assert payload == {"accepted": True, "rental_id": rental.rental_id, "seq": seq, "duplicate": False}

    chain.sleep(2 * PERIOD)
    run(scenario())
    with closing(SubmissionStore(settings.state_dir / DB_FILENAME)) as store:
        assert [s.report for s in store.reports(rental.rental_id)] == [report(rental, 1), report(rental, 2)]
        assert store.last_accepted(rental.rental_id) == PreviousReport.of(report(rental, 2))
        assert [store.state(SubmissionKey(rental.rental_id, seq)) for seq in (1, 2)] == [
            ReportState.SUPERSEDED,  # report 2 carries its totals: it will never land
            ReportState.HELD,
        ]
    assert all(row[-1] is None for row in db_rows(settings))  # batched_tx_key


def test_retry_of_an_accepted_report_is_acknowledged_again(settings, clock, rental):
    data = body(settings, report(rental, 1))

    async def scenario():
        async with oracle_client(settings, clock=clock) as client:
            assert (await post(client, TELEMETRY_PATH, data))[0] == 202
            status, payload = await post(client, TELEMETRY_PATH, data)
            assert status == 200
            assert payload["duplicate"] is True and payload["accepted"] is True

    chain.sleep(PERIOD)
    run(scenario())
    assert len(db_rows(settings)) == 1


def test_retry_is_acknowledged_after_a_restart_even_once_the_rental_closed(settings, clock, rental, suite, renter):
    data = body(settings, report(rental, 1))

    async def accept():
        async with oracle_client(settings, clock=clock) as client:
            assert (await post(client, TELEMETRY_PATH, data))[0] == 202

    async def retry():
        async with oracle_client(settings, clock=clock) as client:
            status, payload = await post(client, TELEMETRY_PATH, data)
            assert (status, payload["duplicate"]) == (200, True)
            changed = body(settings, report(rental, 1, util_seconds=1))
            assert (await post(client, TELEMETRY_PATH, changed))[1]["error"] == "rental_not_live"

    chain.sleep(PERIOD)
    run(accept())
    suite.escrow.terminate(rental.rental_id, {"from": renter})
    chain.sleep(RENTAL_GRACE)
    suite.escrow.finalize(rental.rental_id, {"from": renter})
    run(retry())
    assert len(db_rows(settings)) == 1


def test_different_report_with_an_accepted_seq_is_a_conflict(settings, clock, rental, suite):
    async def scenario():
        async with oracle_client(settings, clock=clock) as client:
            assert (await post(client, TELEMETRY_PATH, body(settings, report(rental, 1))))[0] == 202
            changed = report(rental, 1, util_seconds=10)
            await expect_rejected(
                client, settings, suite, rental.rental_id, body(settings, changed), 409, "seq_conflict"
            )

    chain.sleep(PERIOD)
    run(scenario())


def test_a_second_agent_signed_report_for_a_seq_is_kept_as_the_providers_equivocation(
    settings, clock, rental, suite, provider
):
    """The conflict is refused as before, and both reports are kept with their signatures; a conflicting report
    not signed by the agent is refused without being kept, and a retry of the same conflict is kept once."""
    first, changed = report(rental, 1), report(rental, 1, util_seconds=10)

    async def scenario():
        async with oracle_client(settings, clock=clock) as client:
            assert (await post(client, TELEMETRY_PATH, body(settings, first)))[0] == 202
            forged = body(settings, report(rental, 1, util_seconds=11), key=ORACLE_KEYS[1])
            assert (await post(client, TELEMETRY_PATH, forged))[0] == 403
            for _ in range(2):
                assert (await post(client, TELEMETRY_PATH, body(settings, changed)))[0] == 409
            async with client.get("/metrics") as response:
                return await response.text()

    chain.sleep(PERIOD)
    metrics = run(scenario())
    store = SubmissionStore(settings.state_dir / DB_FILENAME)
    try:
        [kept] = store.equivocations()
    finally:
        store.close()
    assert (kept.rental_id, kept.seq, kept.provider) == (rental.rental_id, 1, provider.address)
    assert (kept.held, kept.other) == (submission(settings, first), submission(settings, changed))
    assert "gpuex_oracle_equivocations 1" in metrics.splitlines()


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"",
        b"[]",
        b'{"report": {}, "signature": "00"}',
        b"\xff\xfe\x00garbage",
    ],
)
def test_body_that_is_not_a_submission_is_400(settings, clock, rental, suite, data):
    async def scenario():
        async with oracle_client(settings, clock=clock) as client:
            payload = await expect_rejected(client, settings, suite, rental.rental_id, data, 400, "invalid_body")
            assert payload["errors"] and all({"loc", "type", "msg"} <= set(e) for e in payload["errors"])

    run(scenario())


@pytest.mark.parametrize(
    "field, value, error_loc",
    [
        ("util_seconds", 2**32, ["report", "util_seconds"]),
        ("util_seconds", PERIOD + 1, ["report"]),  # above the delivered seconds
        ("covered_until", 0, ["report"]),  # before period_start
        ("seq", "1", ["report", "seq"]),  # strict: no string-to-number coercion
        ("unexpected", 1, ["report", "unexpected"]),
    ],
)
def test_out_of_bounds_or_malformed_field_is_400_naming_it(settings, clock, rental, suite, field, value, error_loc):
    valid = submission(settings, report(rental, 1)).model_dump(mode="json")
    valid["report"][field] = value
    data = json.dumps(valid).encode()

    async def scenario():
        async with oracle_client(settings, clock=clock) as client:
            payload = await expect_rejected(client, settings, suite, rental.rental_id, data, 400, "invalid_body")
            assert error_loc in [e["loc"] for e in payload["errors"]]

    chain.sleep(PERIOD)
    run(scenario())


def test_body_over_the_size_limit_is_413(settings, clock, rental, suite):
    data = b'{"pad": "' + b"x" * settings.max_body_bytes + b'"}'

    async def chunks():
        for i in range(0, len(data), 4096):
            yield data[i : i + 4096]

    async def scenario():
        async with oracle_client(settings, clock=clock) as client:
            await expect_rejected(client, settings, suite, rental.rental_id, data, 413, "body_too_large")
            # Without a Content-Length (chunked), the limit holds as well.
            async with client.post(TELEMETRY_PATH, data=chunks()) as response:
                assert response.status == 413
                assert (await response.json())["error"] == "body_too_large"
            assert db_rows(settings) == []

    run(scenario())


def test_simulated_telemetry_is_refused_unless_allowed(make_settings, clock, rental, suite):
    refusing, allowing = make_settings(0), make_settings(1, allow_simulated=True)
    simulated = report(rental, 1, simulated=True)

    async def scenario():
        async with oracle_client(refusing, clock=clock) as client:
            await expect_rejected(
                client, refusing, suite, rental.rental_id, body(refusing, simulated), 403, "simulated_refused"
            )
        async with oracle_client(allowing, clock=clock) as client:
            assert (await post(client, TELEMETRY_PATH, body(allowing, simulated)))[0] == 202

    chain.sleep(PERIOD)
    run(scenario())
    assert len(db_rows(allowing)) == 1


def test_period_ending_beyond_the_clock_skew_is_422(settings, clock, rental, suite):
    # The report's period ends PERIOD seconds after the start; the chain's clock has not got there yet.
    async def scenario():
        async with oracle_client(settings, clock=clock) as client:
            await expect_rejected(
                client,
                settings,
                suite,
                rental.rental_id,
                body(settings, report(rental, 1)),
                422,
                "period_in_future",
            )

    assert clock() + settings.max_clock_skew_seconds < rental.since + PERIOD
    run(scenario())


def test_period_older_than_the_age_limit_is_422(settings, clock, rental, suite):
    async def scenario():
        async with oracle_client(settings, clock=clock, policy=VerifyPolicy(max_report_age_seconds=600)) as client:
            await expect_rejected(
                client,
                settings,
                suite,
                rental.rental_id,
                body(settings, report(rental, 1)),
                422,
                "period_too_old",
            )

    chain.sleep(PERIOD + 700)
    run(scenario())


@pytest.mark.parametrize("defect", ["high_s", "v_zero", "r_zero", "s_zero"])
def test_non_canonical_signature_is_401(settings, clock, rental, suite, defect):
    good = submission(settings, report(rental, 1))
    r, s, v = good.signature[:32], int.from_bytes(good.signature[32:64], "big"), good.signature[64]
    signature = {
        "high_s": r + (SECP256K1_N - s).to_bytes(32, "big") + bytes((55 - v,)),  # the same signature, malleated
        "v_zero": r + s.to_bytes(32, "big") + bytes((v - 27,)),
        "r_zero": bytes(32) + s.to_bytes(32, "big") + bytes((v,)),
        "s_zero": r + bytes(32) + bytes((v,)),
    }[defect]
    data = TelemetrySubmission(report=good.report, signature=signature).model_dump_json().encode()

    async def scenario():
        async with oracle_client(settings, clock=clock) as client:
            await expect_rejected(client, settings, suite, rental.rental_id, data, 401, "bad_signature")

    chain.sleep(PERIOD)
    run(scenario())


def test_report_signed_by_another_key_is_403(settings, clock, rental, suite):
    data = body(settings, report(rental, 1), key=keccak(text="not the agent"))

    async def scenario():
        async with oracle_client(settings, clock=clock) as client:
            await expect_rejected(client, settings, suite, rental.rental_id, data, 403, "signer_not_agent")

    chain.sleep(PERIOD)
    run(scenario())


def test_report_signed_by_the_agent_for_another_registry_is_403(settings, clock, rental, suite):
    other = submission(settings, report(rental, 1))
    signature = report(rental, 1).sign(AGENT_KEY, settings.chain.chain_id, "0x" + "11" * 20)
    data = TelemetrySubmission(report=other.report, signature=signature).model_dump_json().encode()

    async def scenario():
        async with oracle_client(settings, clock=clock) as client:
            await expect_rejected(client, settings, suite, rental.rental_id, data, 403, "signer_not_agent")

    chain.sleep(PERIOD)
    run(scenario())


def test_provider_without_agent_key_is_403(settings, clock, rental, suite, provider):
    suite.registry.setAgent(ZERO_ADDRESS, {"from": provider})

    async def scenario():
        async with oracle_client(settings, clock=clock) as client:
            await expect_rejected(
                client,
                settings,
                suite,
                rental.rental_id,
                body(settings, report(rental, 1)),
                403,
                "agent_not_set",
            )

    chain.sleep(PERIOD)
    run(scenario())


@pytest.mark.parametrize(
    "uuids",
    [
        GPU_UUIDS[:1],
        (GPU_UUIDS[0], "GPU-00000000-0000-0000-0000-000000000000"),
        GPU_UUIDS + ("GPU-00000000-0000-0000-0000-000000000000",),
    ],
    ids=["subset", "substituted", "superset"],
)
def test_gpus_other_than_the_offers_are_422(settings, clock, rental, suite, uuids):
    data = body(settings, report(rental, 1, gpu_uuids=uuids))

    async def scenario():
        async with oracle_client(settings, clock=clock) as client:
            await expect_rejected(client, settings, suite, rental.rental_id, data, 422, "gpu_mismatch")

    chain.sleep(PERIOD)
    run(scenario())


def test_same_gpus_in_another_order_are_accepted(settings, clock, rental):
    async def scenario():
        async with oracle_client(settings, clock=clock) as client:
            data = body(settings, report(rental, 1, gpu_uuids=GPU_UUIDS[::-1]))
            assert (await post(client, TELEMETRY_PATH, data))[0] == 202

    chain.sleep(PERIOD)
    run(scenario())


def test_unknown_rental_is_404(settings, clock, rental, suite, offer):
    unknown = Rental(make_rental_id(offer, 99), rental.since)

    async def scenario():
        async with oracle_client(settings, clock=clock) as client:
            await expect_rejected(
                client,
                settings,
                suite,
                rental.rental_id,
                body(settings, report(unknown, 1)),
                404,
                "unknown_rental",
            )

    chain.sleep(PERIOD)
    run(scenario())


def test_cancelled_rental_is_409(settings, clock, open_rental, suite, renter):
    suite.escrow.terminate(open_rental.rental_id, {"from": renter})  # before the start: cancelled, final

    async def scenario():
        async with oracle_client(settings, clock=clock) as client:
            await expect_rejected(
                client,
                settings,
                suite,
                open_rental.rental_id,
                body(settings, report(open_rental, 1)),
                409,
                "rental_not_live",
            )

    chain.sleep(PERIOD)
    run(scenario())


def test_open_rental_past_its_start_timeout_is_409(settings, clock, open_rental, suite):
    async def scenario():
        async with oracle_client(settings, clock=clock) as client:
            await expect_rejected(
                client,
                settings,
                suite,
                open_rental.rental_id,
                body(settings, report(open_rental, 1)),
                409,
                "rental_start_timed_out",
            )

    chain.sleep(suite.read(lambda r: r.start_timeout()) + 1)
    run(scenario())


def test_first_report_of_an_open_rental_may_start_after_its_opening(settings, clock, open_rental, suite):
    late = report(open_rental, 1, period_start=open_rental.since + 5, delivered_seconds=PERIOD - 5, util_seconds=50)
    early = report(open_rental, 1, period_start=open_rental.since - 1, delivered_seconds=PERIOD)

    async def scenario():
        async with oracle_client(settings, clock=clock) as client:
            await expect_rejected(
                client,
                settings,
                suite,
                open_rental.rental_id,
                body(settings, early),
                409,
                "period_discontinuous",
            )
            assert (await post(client, TELEMETRY_PATH, body(settings, late)))[0] == 202

    chain.sleep(PERIOD)
    run(scenario())


def test_first_report_of_a_running_rental_starts_at_its_start(settings, clock, rental, suite):
    shifted = report(rental, 1, period_start=rental.since + 1, delivered_seconds=PERIOD - 1)

    async def scenario():
        async with oracle_client(settings, clock=clock) as client:
            await expect_rejected(
                client,
                settings,
                suite,
                rental.rental_id,
                body(settings, shifted),
                409,
                "period_discontinuous",
            )

    chain.sleep(PERIOD)
    run(scenario())


def test_a_report_beyond_the_next_is_accepted_across_the_gap_and_names_what_is_missing(settings, clock, rental):
    """Reports are cumulative: one that skips seqs is checked against the last totals held, and its ack names the
    first seq this oracle lacks; a missing report that arrives later is stored where it fits, never to land."""

    async def scenario():
        async with oracle_client(settings, clock=clock) as client:
            assert await post(client, TELEMETRY_PATH, body(settings, report(rental, 2))) == (
                202,
                {"accepted": True, "rental_id": rental.rental_id, "seq": 2, "duplicate": False, "missing_from_seq": 1},
            )
            status, payload = await post(client, TELEMETRY_PATH, body(settings, report(rental, 1)))
            assert (status, "missing_from_seq" in payload) == (202, False)
            status, payload = await post(client, TELEMETRY_PATH, body(settings, report(rental, 4)))
            assert (status, payload["missing_from_seq"]) == (202, 3)
            assert (await post(client, TELEMETRY_PATH, body(settings, report(rental, 3))))[0] == 202
            assert (await post(client, TELEMETRY_PATH, body(settings, report(rental, 3))))[1]["duplicate"] is True

    chain.sleep(4 * PERIOD)
    run(scenario())
    with closing(SubmissionStore(settings.state_dir / DB_FILENAME)) as store:
        assert [s.report for s in store.reports(rental.rental_id)] == [report(rental, seq) for seq in (1, 2, 3, 4)]
        assert [store.state(SubmissionKey(rental.rental_id, seq)) for seq in (1, 2, 3, 4)] == [
            ReportState.SUPERSEDED,
            ReportState.SUPERSEDED,
            ReportState.SUPERSEDED,
            ReportState.HELD,
        ]


def test_a_report_across_a_gap_that_its_totals_cannot_explain_is_refused(settings, clock, rental, suite):
    hostile = [
        (None, report(rental, 3, delivered_seconds=3 * PERIOD + 1), 422, "delivered_above_period"),
        (report(rental, 1), report(rental, 3, period_start=rental.since + PERIOD - 1), 409, "period_discontinuous"),
        (
            report(rental, 1),
            report(rental, 3, delivered_seconds=PERIOD - 1, util_seconds=UTIL_PER_PERIOD),
            409,
            "totals_decreased",
        ),
        (
            report(rental, 1),
            report(rental, 3, delivered_seconds=PERIOD + 10, util_seconds=UTIL_PER_PERIOD + 11),
            422,
            "util_above_delivered",
        ),
    ]

    async def scenario():
        async with oracle_client(settings, clock=clock) as client:
            for held, gap, status, reason in hostile:
                if held is not None:
                    assert (await post(client, TELEMETRY_PATH, body(settings, held)))[0] in (200, 202)
                await expect_rejected(client, settings, suite, rental.rental_id, body(settings, gap), status, reason)

    chain.sleep(3 * PERIOD)
    run(scenario())


def test_a_missing_report_that_does_not_fit_between_its_held_neighbours_is_refused(settings, clock, rental, suite):
    # Fits after seq 1, but seq 3 would then add more delivered seconds than its period holds.
    short_of_its_successor = report(rental, 2, delivered_seconds=2 * PERIOD - 10, util_seconds=2 * UTIL_PER_PERIOD - 20)
    overlapping_its_successor = report(rental, 2, covered_until=rental.since + 2 * PERIOD + 1)

    async def scenario():
        async with oracle_client(settings, clock=clock) as client:
            for seq in (1, 3):
                assert (await post(client, TELEMETRY_PATH, body(settings, report(rental, seq))))[0] == 202
            for hostile, status, reason in (
                (short_of_its_successor, 422, "delivered_above_period"),
                (overlapping_its_successor, 409, "period_discontinuous"),
                (report(rental, 2, prev_root=keccak(text="another history")), 409, "prev_root_mismatch"),
            ):
                payload = await expect_rejected(
                    client, settings, suite, rental.rental_id, body(settings, hostile), status, reason
                )
                assert "seq 3, held here" in payload["detail"] or reason == "prev_root_mismatch"
            assert (await post(client, TELEMETRY_PATH, body(settings, report(rental, 2))))[0] == 202

    chain.sleep(3 * PERIOD)
    run(scenario())


def test_period_not_starting_where_the_previous_ended_is_409(settings, clock, rental, suite):
    overlapping = report(rental, 2, period_start=rental.since + PERIOD - 10)

    async def scenario():
        async with oracle_client(settings, clock=clock) as client:
            assert (await post(client, TELEMETRY_PATH, body(settings, report(rental, 1))))[0] == 202
            await expect_rejected(
                client,
                settings,
                suite,
                rental.rental_id,
                body(settings, overlapping),
                409,
                "period_discontinuous",
            )

    chain.sleep(2 * PERIOD)
    run(scenario())


def test_reports_the_chain_already_applied_are_stale_and_the_next_follows_the_chain(
    settings, clock, rental, suite, relayer
):
    """An oracle that missed reports others settled continues from the chain's last applied report."""
    chain.sleep(2 * PERIOD)
    settled = report(rental, 1).to_chain_report()
    domain = EscrowDomain(
        chain_id=settings.chain.chain_id,
        escrow=suite.escrow.address,
        oracle_set_version=suite.read(lambda r: r.oracle_set()).version,
    )
    signatures = [sign_batch([settled], domain, key) for key in ORACLE_KEYS[1:]]
    suite.escrow.submitReports(*submit_args([settled], signatures, domain.oracle_set_version), {"from": relayer})

    async def scenario():
        async with oracle_client(settings, clock=clock) as client:
            await expect_rejected(
                client, settings, suite, rental.rental_id, body(settings, report(rental, 1)), 409, "seq_stale"
            )
            assert (await post(client, TELEMETRY_PATH, body(settings, report(rental, 2))))[0] == 202

    run(scenario())


def test_unreachable_chain_is_503_and_stores_nothing(make_settings, clock, rental, chain_settings):
    dead = make_settings(0, chain=chain_settings.model_copy(update={"rpc_url": "http://127.0.0.1:1"}))

    async def scenario():
        async with oracle_client(dead, clock=clock) as client:
            status, payload = await post(client, TELEMETRY_PATH, body(dead, report(rental, 1)))
            assert (status, payload["error"]) == (503, "chain_unavailable")
            async with client.get("/healthz") as response:
                health = await response.json()
                assert response.status == 503
                assert health["chain"]["ok"] is False and health["db"]["ok"] is True

    chain.sleep(PERIOD)
    run(scenario())
    assert db_rows(dead) == []


def test_healthz_reports_chain_and_database(settings, clock):
    async def scenario():
        async with oracle_client(settings, clock=clock) as client:
            async with client.get("/healthz") as response:
                assert response.status == 200
                return await response.json()

    health = run(scenario())
    assert health["ok"] is True and health["db"] == {"ok": True}
    assert health["chain"]["ok"] is True and health["chain"]["block"] >= 1


def test_metrics_count_accepted_duplicate_and_rejected_by_reason(settings, clock, rental):
    async def scenario():
        async with oracle_client(settings, clock=clock) as client:
            await post(client, TELEMETRY_PATH, body(settings, report(rental, 1)))
            await post(client, TELEMETRY_PATH, body(settings, report(rental, 1)))
            await post(client, TELEMETRY_PATH, body(settings, report(rental, 1, util_seconds=10)))
            await post(client, TELEMETRY_PATH, b"{")
            async with client.get("/metrics") as response:
                assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                return await response.text()

    chain.sleep(3 * PERIOD)
    text = run(scenario())
    lines = set(text.splitlines())
    assert "gpuex_oracle_reports_accepted_total 1" in lines
    assert "gpuex_oracle_reports_duplicate_total 1" in lines
    assert 'gpuex_oracle_reports_rejected_total{reason="seq_conflict"} 1' in lines
    assert 'gpuex_oracle_reports_rejected_total{reason="invalid_body"} 1' in lines
    assert "gpuex_oracle_ingest_seconds_count 4" in lines
    assert "# TYPE gpuex_oracle_gas_used histogram" in lines


def test_a_new_agent_key_is_honoured_once_its_event_is_seen(settings, clock, rental, suite, provider):
    """Agent keys are cached; the chain follower drops the cached key when AgentSet is emitted."""
    new_key = keccak(text="rotated agent")

    async def scenario():
        async with oracle_client(settings, clock=clock, poll_interval=0.05) as client:
            assert (await post(client, TELEMETRY_PATH, body(settings, report(rental, 1))))[0] == 202
            rotated = body(settings, report(rental, 2), key=new_key)
            assert (await post(client, TELEMETRY_PATH, rotated))[1]["error"] == "signer_not_agent"
            suite.registry.setAgent(Account.from_key(new_key).address, {"from": provider})
            for _ in range(100):
                status, _ = await post(client, TELEMETRY_PATH, rotated)
                if status == 202:
                    return
                await asyncio.sleep(0.05)
            raise AssertionError("the rotated agent key was never honoured")

    chain.sleep(2 * PERIOD)
    run(scenario())


def test_report_following_reports_settled_elsewhere_is_checked_against_a_fresh_read(
    settings, clock, rental, suite, relayer
):
    """The cache does not follow applied reports: a report beyond the next seq held here is checked against the
    rental read from the chain now, so one the chain has already passed is stale."""
    chain.sleep(3 * PERIOD)
    domain = EscrowDomain(
        chain_id=settings.chain.chain_id,
        escrow=suite.escrow.address,
        oracle_set_version=suite.read(lambda r: r.oracle_set()).version,
    )
    settled = [report(rental, seq).to_chain_report() for seq in (1, 2)]

    async def scenario():
        async with oracle_client(settings, clock=clock) as client:
            # Caches the rental with no report applied.
            foreign = body(settings, report(rental, 2), key=keccak(text="not the agent"))
            await expect_rejected(client, settings, suite, rental.rental_id, foreign, 403, "signer_not_agent")
            signatures = [sign_batch(settled, domain, key) for key in ORACLE_KEYS[1:]]
            suite.escrow.submitReports(*submit_args(settled, signatures, domain.oracle_set_version), {"from": relayer})
            await expect_rejected(
                client, settings, suite, rental.rental_id, body(settings, report(rental, 2)), 409, "seq_stale"
            )
            status, payload = await post(client, TELEMETRY_PATH, body(settings, report(rental, 3)))
            assert (status, payload["missing_from_seq"]) == (202, 1), payload

    run(scenario())


def settle_on_chain(suite, settings, relayer, reports) -> None:
    """Lands `reports` with the signatures of oracles 1 and 2, as another oracle of the set would."""
    domain = EscrowDomain(
        chain_id=settings.chain.chain_id,
        escrow=suite.escrow.address,
        oracle_set_version=suite.read(lambda r: r.oracle_set()).version,
    )
    chain_reports = [r.to_chain_report() for r in reports]
    signatures = [sign_batch(chain_reports, domain, key) for key in ORACLE_KEYS[1:]]
    suite.escrow.submitReports(*submit_args(chain_reports, signatures, domain.oracle_set_version), {"from": relayer})


HOSTILE = {
    "totals_decreased": dict(delivered_seconds=PERIOD - 1, util_seconds=UTIL_PER_PERIOD),
    "util_decreased": dict(util_seconds=UTIL_PER_PERIOD - 1),
    "prev_root_mismatch": dict(prev_root=keccak(text="another history")),
    "delivered_above_period": dict(delivered_seconds=2 * PERIOD + 1),
    "util_above_delivered": dict(delivered_seconds=PERIOD + 10, util_seconds=UTIL_PER_PERIOD + 11),
}
HOSTILE_OUTCOME = {
    "totals_decreased": (409, "totals_decreased"),
    "util_decreased": (409, "totals_decreased"),
    "prev_root_mismatch": (409, "prev_root_mismatch"),
    "delivered_above_period": (422, "delivered_above_period"),
    "util_above_delivered": (422, "util_above_delivered"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_cumulative_report_after_a_held_one_is_refused_with_its_reason(settings, clock, rental, suite, case):
    hostile = report(rental, 2, **HOSTILE[case])

    async def scenario():
        async with oracle_client(settings, clock=clock) as client:
            assert (await post(client, TELEMETRY_PATH, body(settings, report(rental, 1))))[0] == 202
            status, reason = HOSTILE_OUTCOME[case]
            await expect_rejected(client, settings, suite, rental.rental_id, body(settings, hostile), status, reason)
            assert (await post(client, TELEMETRY_PATH, body(settings, report(rental, 2))))[0] == 202

    chain.sleep(2 * PERIOD)
    run(scenario())


@pytest.mark.parametrize("case", sorted(set(HOSTILE) - {"prev_root_mismatch"}))
def test_hostile_report_is_checked_against_the_chains_applied_totals_when_none_is_held(
    settings, clock, rental, suite, relayer, case
):
    """An oracle that holds nothing of the rental checks a report against the totals the chain applied; it cannot
    check `prev_root` (the chain's root is not read), but every total is checked."""
    chain.sleep(2 * PERIOD)
    settle_on_chain(suite, settings, relayer, [report(rental, 1)])
    hostile = report(rental, 2, **HOSTILE[case])

    async def scenario():
        async with oracle_client(settings, clock=clock) as client:
            status, reason = HOSTILE_OUTCOME[case]
            await expect_rejected(client, settings, suite, rental.rental_id, body(settings, hostile), status, reason)
            assert (await post(client, TELEMETRY_PATH, body(settings, report(rental, 2))))[0] == 202

    run(scenario())


def test_first_report_must_have_a_zero_prev_root(settings, clock, rental, suite):
    async def scenario():
        async with oracle_client(settings, clock=clock) as client:
            chained = body(settings, report(rental, 1, prev_root=keccak(text="x")))
            await expect_rejected(client, settings, suite, rental.rental_id, chained, 409, "prev_root_mismatch")

    chain.sleep(PERIOD)
    run(scenario())


def test_first_report_cannot_deliver_more_than_its_period(settings, clock, rental, suite):
    async def scenario():
        async with oracle_client(settings, clock=clock) as client:
            inflated = body(settings, report(rental, 1, delivered_seconds=PERIOD + 1))
            await expect_rejected(client, settings, suite, rental.rental_id, inflated, 422, "delivered_above_period")

    chain.sleep(PERIOD)
    run(scenario())
