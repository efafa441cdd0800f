"""`offchain.protocol.gpustats`: a report's per-GPU figures, signed by the agent apart from the report: the fast
digest equals eth-account's, a changed figure or a summary moved to another report, rental, seq or deployment no
longer recovers to the agent, oversized or malformed summaries are refused, and a submission without one reads as
it did before summaries existed."""

from __future__ import annotations

import json

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.core import given  # hypothesis' own: no chain here for Brownie's wrapper to isolate
from pydantic import ValidationError

from offchain.protocol.digest import TelemetryDomain, recover_address
from offchain.protocol.gpustats import MAX_SUMMARY_GPUS, GpuPeriodStats, GpuSummary, canonical_bytes
from offchain.protocol.messages import TelemetryReport, TelemetrySubmission, gpu_summary_typed_data, sign_gpu_summary
from tests.offchain.conftest import GPU_UUIDS

AGENT_KEY = keccak(text="agent")
OTHER_KEY = keccak(text="someone else")
CHAIN_ID = 1337
REGISTRY = "0x" + "22" * 20
DOMAIN = TelemetryDomain(CHAIN_ID, REGISTRY)


def report(seq: int = 1, rental_id: int = 7, **overrides) -> TelemetryReport:
    values = dict(
        rental_id=rental_id,
        seq=seq,
        period_start=1_000 + 60 * (seq - 1),
        covered_until=1_000 + 60 * seq,
        delivered_seconds=60 * seq,
        util_seconds=57 * seq,
        peak_mem_mib=40_000,
        sample_count=120,
        gpu_uuids=GPU_UUIDS,
        samples_root=seq.to_bytes(32, "big"),
    )
    values.update(overrides)
    return TelemetryReport(**values)


#: Two GPUs' figures: one with every reading, one whose power and temperature NVML did not give.
GPUS = (
    GpuPeriodStats(
        uuid=GPU_UUIDS[0],
        samples=60,
        util_bps=9_512,
        mem_used_mib=40_000,
        mem_total_mib=81_559,
        power_mw=312_250,
        temp_c=66,
    ),
    GpuPeriodStats(uuid=GPU_UUIDS[1], samples=58, util_bps=0, mem_used_mib=500, mem_total_mib=81_559),
)


def signed(telemetry: TelemetryReport, gpus=GPUS, key: bytes = AGENT_KEY, domain_of: TelemetryReport | None = None):
    """A submission of `telemetry` with `gpus` signed by `key` for `domain_of` (default: this very report)."""
    bound_to = domain_of or telemetry
    summary = sign_gpu_summary(key, bound_to, DOMAIN.digest(bound_to), gpus, CHAIN_ID, REGISTRY)
    return TelemetrySubmission(
        report=telemetry, signature=telemetry.sign(AGENT_KEY, CHAIN_ID, REGISTRY), gpu_summary=summary
    )


def summary_signer(submission: TelemetrySubmission, domain: TelemetryDomain = DOMAIN) -> str:
    assert submission.gpu_summary is not None
    digest = domain.gpu_summary_digest(submission.report, domain.digest(submission.report), submission.gpu_summary)
    return "0x" + recover_address(digest, submission.gpu_summary.signature).hex()


def agent() -> str:
    return Account.from_key(AGENT_KEY).address.lower()


optional = st.none() | st.integers(0, 10_000)
gpu_stats = st.builds(
    GpuPeriodStats,
    uuid=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=96),
    samples=st.integers(0, 2**32 - 1),
    util_bps=optional,
    mem_used_mib=st.none() | st.integers(0, 2**32 - 1),
    mem_total_mib=st.none() | st.integers(0, 2**32 - 1),
    power_mw=st.none() | st.integers(0, 2**32 - 1),
    temp_c=st.none() | st.integers(-(2**15), 2**15 - 1),
)


@settings(max_examples=100, deadline=None)
@given(
    gpus=st.lists(gpu_stats, min_size=1, max_size=8, unique_by=lambda g: g.uuid), seq=st.integers(1, 2**32 // 60 - 1)
)
def test_fast_digest_equals_eth_account_typed_data_digest(gpus, seq):
    telemetry = report(seq, gpu_uuids=tuple(g.uuid for g in gpus))
    summary = GpuSummary(gpus=tuple(gpus), signature=b"\x00" * 65)
    report_digest = DOMAIN.digest(telemetry)
    signable = encode_typed_data(
        full_message=gpu_summary_typed_data(telemetry, report_digest, tuple(gpus), CHAIN_ID, REGISTRY)
    )
    expected = keccak(b"\x19" + signable.version + signable.header + signable.body)
    assert DOMAIN.gpu_summary_digest(telemetry, report_digest, summary) == expected


def test_the_agent_that_signed_the_summary_is_recovered():
    assert summary_signer(signed(report())) == agent()


def test_canonical_bytes_are_sorted_compact_json_of_integers():
    assert canonical_bytes(GPUS[1:]) == (
        b'[{"mem_total_mib":81559,"mem_used_mib":500,"power_mw":null,"samples":58,"temp_c":null,'
        b'"util_bps":0,"uuid":"GPU-7e4d2a90-15c3-4b8e-a2f6-9d0c8b7e6f22"}]'
    )


def test_a_changed_figure_no_longer_recovers_to_the_agent():
    submission = signed(report())
    assert submission.gpu_summary is not None
    forged = submission.gpu_summary.model_copy(update={"gpus": (GPUS[0].model_copy(update={"util_bps": 10_000}),)})
    assert summary_signer(submission.model_copy(update={"gpu_summary": forged})) != agent()


@pytest.mark.parametrize(
    "bound_to",
    [report(seq=2), report(rental_id=8), report(delivered_seconds=59)],
    ids=["another seq", "another rental", "another report under the same seq"],
)
def test_a_summary_signed_for_another_report_does_not_recover_to_the_agent(bound_to):
    assert summary_signer(signed(report(), domain_of=bound_to)) != agent()


def test_a_summary_signed_for_another_deployment_does_not_recover_to_the_agent():
    submission = signed(report())
    assert summary_signer(submission, TelemetryDomain(CHAIN_ID + 1, REGISTRY)) != agent()
    assert summary_signer(submission, TelemetryDomain(CHAIN_ID, "0x" + "33" * 20)) != agent()


def test_a_summary_signed_by_another_key_recovers_to_that_key():
    assert summary_signer(signed(report(), key=OTHER_KEY)) == Account.from_key(OTHER_KEY).address.lower()


def test_a_submission_without_a_summary_reads_as_before():
    telemetry = report()
    plain = TelemetrySubmission(report=telemetry, signature=telemetry.sign(AGENT_KEY, CHAIN_ID, REGISTRY))
    body = plain.model_dump_json()
    assert "gpu_summary" not in body and "gpu_summary" not in plain.model_dump()
    assert TelemetrySubmission.model_validate_json(body, strict=True) == plain
    with_summary = signed(telemetry)
    assert TelemetrySubmission.model_validate_json(with_summary.model_dump_json(), strict=True) == with_summary


def _submission_json(gpus: list[dict]) -> str:
    telemetry = report(gpu_uuids=tuple(f"GPU-{i}" for i in range(MAX_SUMMARY_GPUS)))
    plain = TelemetrySubmission(report=telemetry, signature=telemetry.sign(AGENT_KEY, CHAIN_ID, REGISTRY))
    summary = json.dumps({"gpus": gpus, "signature": "11" * 65})
    return plain.model_dump_json()[:-1] + ',"gpu_summary":' + summary + "}"


def _gpu(index: int, **overrides) -> dict:
    return {"uuid": f"GPU-{index}", "samples": 1, **overrides}


@pytest.mark.parametrize(
    "gpus, problem",
    [
        ([_gpu(i) for i in range(MAX_SUMMARY_GPUS + 1)], "at most 64 items"),
        ([], "at least 1 item"),
        ([_gpu(0), _gpu(0)], "GPU UUIDs must be distinct"),
        ([{"uuid": "GPU-x", "samples": 1}], "names 1 GPU(s) the report does not"),
        ([_gpu(0, uuid="GPU-" + "a" * 100)], "at most 96 characters"),
        ([_gpu(0, uuid="GPU 0")], "should match pattern"),
        ([_gpu(0, util_bps=10_001)], "less than or equal to 10000"),
        ([_gpu(0, power_mw=-1)], "greater than or equal to 0"),
        ([_gpu(0, samples=2**32)], "less than 4294967296"),
        ([_gpu(0, util_pct=95.0)], "Extra inputs are not permitted"),
        ([_gpu(0, temp_c=66.5)], "valid integer"),
    ],
    ids=[
        "too many GPUs",
        "no GPU",
        "a GPU twice",
        "a GPU the report does not name",
        "an oversized UUID",
        "a UUID with a space",
        "utilisation above 100 %",
        "negative power",
        "sample count beyond uint32",
        "an unknown field",
        "a fractional temperature",
    ],
)
def test_a_malformed_summary_is_refused(gpus, problem):
    with pytest.raises(ValidationError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        TelemetrySubmission.model_validate_json(_submission_json(gpus), strict=True)
