"""The oracle's fast EIP-712 digest equals eth-account's, and signer recovery accepts only canonical signatures."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.core import given  # hypothesis' own: no chain here for Brownie's wrapper to isolate

from offchain.protocol.digest import SECP256K1_N, InvalidSignature, TelemetryDomain, recover_address
from offchain.protocol.messages import TelemetryReport
from offchain.protocol.reports import ReportStatus

bytes32 = st.binary(min_size=32, max_size=32)


@st.composite
def telemetry_reports(draw) -> TelemetryReport:
    start = draw(st.integers(0, 2**40 - 2))
    end = draw(st.integers(start + 1, 2**40 - 1))
    delivered = draw(st.integers(0, 2**32 - 1))
    return TelemetryReport(
        rental_id=draw(st.integers(1, 2**256 - 1)),
        seq=draw(st.integers(1, 2**32 - 1)),
        period_start=start,
        covered_until=end,
        delivered_seconds=delivered,
        util_seconds=draw(st.integers(0, delivered)),
        peak_mem_mib=draw(st.integers(0, 2**32 - 1)),
        sample_count=draw(st.integers(0, 2**32 - 1)),
        gpu_uuids=tuple(draw(st.lists(st.text(max_size=100), min_size=1, max_size=8, unique=True))),
        prev_root=draw(bytes32),
        samples_root=draw(bytes32),
        status=draw(st.sampled_from(ReportStatus)),
        exit_code=draw(st.integers(-(2**15), 2**15 - 1)),
        result_digest=draw(bytes32),
        simulated=draw(st.booleans()),
    )


addresses = st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())


def eth_account_digest(report: TelemetryReport, chain_id: int, registry: str) -> bytes:
    signable = encode_typed_data(full_message=report.typed_data(chain_id, registry))
    return keccak(b"\x19" + signable.version + signable.header + signable.body)


@settings(max_examples=200, deadline=None)
@given(report=telemetry_reports(), chain_id=st.integers(1, 2**64), registry=addresses)
def test_fast_digest_equals_eth_account_typed_data_digest(report, chain_id, registry):
    assert TelemetryDomain(chain_id, registry).digest(report) == eth_account_digest(report, chain_id, registry)


@settings(max_examples=30, deadline=None)
@given(report=telemetry_reports(), key=st.integers(1, SECP256K1_N - 1))
def test_recovers_the_agent_that_signed_with_eth_account(report, key):
    private_key = key.to_bytes(32, "big")
    registry = "0x" + "22" * 20
    signature = report.sign(private_key, 1337, registry)
    recovered = recover_address(TelemetryDomain(1337, registry).digest(report), signature)
    assert recovered == bytes.fromhex(Account.from_key(private_key).address[2:])


def _signature() -> tuple[bytes, bytes]:
    digest = keccak(text="message")
    return digest, bytes(Account.unsafe_sign_hash(digest, keccak(text="key")).signature)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda sig: sig[:64],
        lambda sig: sig + b"\x00",
        lambda sig: sig[:64] + bytes((sig[64] - 27,)),  # v of 0/1
        lambda sig: sig[:64] + b"\x1d",  # v 29
        lambda sig: bytes(32) + sig[32:],  # r = 0
        lambda sig: SECP256K1_N.to_bytes(32, "big") + sig[32:],  # r = n
        lambda sig: sig[:32] + bytes(32) + sig[64:],  # s = 0
        lambda sig: (
            sig[:32] + (SECP256K1_N - int.from_bytes(sig[32:64], "big")).to_bytes(32, "big") + bytes((55 - sig[64],))
        ),  # the malleated twin with high s
    ],
    ids=["short", "long", "v01", "v29", "r0", "rn", "s0", "high_s"],
)
def test_rejects_non_canonical_signatures(mangle):
    digest, signature = _signature()
    recover_address(digest, signature)
    with pytest.raises(InvalidSignature):
        recover_address(digest, mangle(signature))
