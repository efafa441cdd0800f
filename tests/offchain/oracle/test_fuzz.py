"""Hypothesis throws random bodies at POST /v1/telemetry: random JSON, random bytes, mutations of a valid body and
well-formed reports signed by keys other than the agent's. Every one must get a 4xx (never a 5xx, never an
acceptance) and leave the database and the chain as they were.

One oracle app serves all examples of a test from an event loop the test drives. Plain `hypothesis.given`, not
Brownie's: Brownie's reverts the chain before every example, which would hide the change these tests look for.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import contextmanager

from aiohttp.test_utils import TestClient, TestServer
from brownie import chain
from hypothesis import HealthCheck, assume
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.core import given  # hypothesis' own, not the one Brownie patches in (see above)
from pydantic import ValidationError

from offchain.oracle.app import TELEMETRY_PATH, create_app
from offchain.protocol.digest import SECP256K1_N
from offchain.protocol.messages import TelemetryReport, TelemetrySubmission
from tests.offchain.conftest import GPU_UUIDS
from tests.offchain.oracle.helpers import PERIOD, body, chain_state, db_rows, post, report, submission

FUZZ = hypothesis_settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=25,
)


@contextmanager
def served(settings, clock):
    """A sync `post(data) -> (status, payload)` against one oracle app on loopback."""
    loop = asyncio.new_event_loop()
    client = TestClient(TestServer(create_app(settings, clock=clock), host="127.0.0.1"), loop=loop)
    loop.run_until_complete(client.start_server())
    try:
        yield lambda data: loop.run_until_complete(post(client, TELEMETRY_PATH, data))
    finally:
        loop.run_until_complete(client.close())
        loop.close()


def assert_always_refused(settings, clock, suite, rental, bodies):
    """Posts every example of `bodies`: each must be a 4xx that stores nothing and sends nothing."""
    rows, state = db_rows(settings), chain_state(suite, rental.rental_id)
    with served(settings, clock) as post_body:

        @FUZZ
        @given(data=bodies)
        def throw(data):
            status, payload = post_body(data)
            assert 400 <= status < 500, (status, payload, data)
            assert payload["error"] and payload["detail"]
            assert db_rows(settings) == rows

        throw()
    assert chain_state(suite, rental.rental_id) == state


def test_random_json_is_refused(settings, clock, suite, rental):
    bodies = json_values.map(lambda v: json.dumps(v).encode())
    assert_always_refused(settings, clock, suite, rental, bodies)


def test_random_bytes_are_refused(settings, clock, suite, rental):
    assert_always_refused(settings, clock, suite, rental, st.binary(max_size=4096))


def _mutations(valid: dict) -> st.SearchStrategy[bytes]:
    encoded = json.dumps(valid).encode()
    report_fields = sorted(valid["report"])

    def set_field(field_and_value):
        field, value = field_and_value
        mutated = json.loads(encoded)
        mutated["report"][field] = value
        return json.dumps(mutated).encode()

    def drop_field(field):
        mutated = json.loads(encoded)
        del mutated["report"][field]
        return json.dumps(mutated).encode()

    def set_signature(signature: bytes):
        mutated = json.loads(encoded)
        mutated["signature"] = signature.hex()
        return json.dumps(mutated).encode()

    def flip_byte(position_and_byte):
        position, byte = position_and_byte
        position %= len(encoded)
        return encoded[:position] + bytes((byte,)) + encoded[position + 1 :]

    return st.one_of(
        st.tuples(st.sampled_from(report_fields), json_values).map(set_field),
        st.tuples(st.sampled_from(report_fields), st.integers(-(2**300), 2**300)).map(set_field),
        st.sampled_from(report_fields).map(drop_field),
        st.binary(min_size=65, max_size=65).map(set_signature),
        st.tuples(st.integers(0, len(encoded)), st.integers(0, 255)).map(flip_byte),
        st.integers(0, len(encoded) - 1).map(lambda n: encoded[:n]),
    )


def test_mutations_of_a_valid_body_are_refused(settings, clock, suite, rental):
    valid = submission(settings, report(rental, 1))
    chain.sleep(PERIOD)

    def changes_the_submission(data: bytes) -> bool:
        try:
            return TelemetrySubmission.model_validate_json(data, strict=True) != valid
        except ValidationError:
            return True

    def different(data: bytes) -> bytes:
        # A mutation that decodes to the same submission (e.g. hex digits in upper case) is the valid body itself.
        assume(changes_the_submission(data))
        return data

    bodies = _mutations(valid.model_dump(mode="json")).map(different)
    assert_always_refused(settings, clock, suite, rental, bodies)
    with served(settings, clock) as post_body:
        assert post_body(valid.model_dump_json().encode())[0] == 202  # what was mutated is a valid body


@st.composite
def foreign_signed_reports(draw, settings, rental) -> bytes:
    """Well-formed reports, often for the real rental and near its period, signed by any key but the agent's."""
    start = draw(st.sampled_from([rental.since, rental.since + PERIOD]) | st.integers(0, 2**40 - 2))
    end = draw(st.sampled_from([start + PERIOD]) | st.integers(start + 1, 2**40 - 1))
    delivered = draw(st.integers(0, min(end - start, 2**32 - 1)))
    telemetry = TelemetryReport(
        rental_id=draw(st.sampled_from([rental.rental_id]) | st.integers(1, 2**256 - 1)),
        seq=draw(st.integers(1, 3) | st.integers(1, 2**32 - 1)),
        period_start=start,
        covered_until=end,
        delivered_seconds=delivered,
        util_seconds=draw(st.integers(0, delivered)),
        peak_mem_mib=draw(st.integers(0, 2**32 - 1)),
        sample_count=draw(st.integers(0, 2**32 - 1)),
        gpu_uuids=draw(
            st.just(GPU_UUIDS) | st.lists(st.text(max_size=50), min_size=1, max_size=4, unique=True).map(tuple)
        ),
        prev_root=draw(st.just(bytes(32)) | st.binary(min_size=32, max_size=32)),
        samples_root=draw(st.binary(min_size=32, max_size=32)),
        simulated=draw(st.booleans()),
    )
    key = draw(st.integers(1, SECP256K1_N - 1)).to_bytes(32, "big")
    return body(settings, telemetry, key=key)


def test_well_formed_reports_signed_by_other_keys_are_refused(settings, clock, suite, rental):
    chain.sleep(PERIOD)
    assert_always_refused(settings, clock, suite, rental, foreign_signed_reports(settings, rental))
