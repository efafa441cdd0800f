"""The renter API's signatures and sealed secrets on their own, and unpacking a hostile results tar."""

from __future__ import annotations

import io
import tarfile

import pytest
from eth_account import Account
from eth_utils import keccak

from offchain.market.renterclient import extract_results
from offchain.protocol.renterapi import (
    EXPIRY_HEADER,
    NONCE_HEADER,
    SIGNATURE_HEADER,
    Action,
    ApiErrorCode,
    RequestRefused,
    address_of_public_key,
    public_key_of,
    recover_signer,
    seal,
    sign_request,
    unseal,
)

KEY = "0x" + keccak(text="renter api unit renter").hex()
AGENT_KEY = "0x" + keccak(text="renter api unit agent").hex()
ESCROW = "0x" + "e5" * 20
NOW = 1_800_000_000.0


def test_a_signed_request_recovers_its_signer_and_nonce():
    headers = sign_request(KEY, 31337, ESCROW, 7, Action.LOGS, b"", now=NOW)

    signer, nonce, expiry = recover_signer(headers, 31337, ESCROW, 7, Action.LOGS, now=NOW)

    assert signer == Account.from_key(KEY).address
    assert nonce.hex() == headers[NONCE_HEADER][2:] and expiry == int(NOW) + 60


@pytest.mark.parametrize(
    "change",
    [
        {"chain_id": 1},
        {"escrow": "0x" + "e6" * 20},
        {"rental_id": 8},
        {"action": Action.SHELL},
        {"body": b"{}"},
    ],
)
def test_a_signature_is_for_one_chain_escrow_rental_action_and_body(change):
    """Anything else recovers another address, which is not the renter."""
    headers = sign_request(KEY, 31337, ESCROW, 7, Action.LOGS, b"", now=NOW)
    where = {"chain_id": 31337, "escrow": ESCROW, "rental_id": 7, "action": Action.LOGS, "body": b"", **change}

    signer, _, _ = recover_signer(
        headers, where["chain_id"], where["escrow"], where["rental_id"], where["action"], where["body"], now=NOW
    )

    assert signer != Account.from_key(KEY).address


@pytest.mark.parametrize(
    "headers, code",
    [
        ({}, ApiErrorCode.UNSIGNED),
        (
            {EXPIRY_HEADER: "soon", NONCE_HEADER: "0x" + "00" * 32, SIGNATURE_HEADER: "0x" + "00" * 65},
            ApiErrorCode.UNSIGNED,
        ),
        (
            {EXPIRY_HEADER: str(int(NOW) + 10), NONCE_HEADER: "0x00", SIGNATURE_HEADER: "0x" + "00" * 65},
            ApiErrorCode.UNSIGNED,
        ),
        (
            {EXPIRY_HEADER: str(int(NOW) + 10), NONCE_HEADER: "0x" + "00" * 32, SIGNATURE_HEADER: "0x" + "00" * 65},
            ApiErrorCode.BAD_SIGNATURE,
        ),
    ],
)
def test_malformed_headers_are_refused(headers, code):
    with pytest.raises(RequestRefused) as refused:
        recover_signer(headers, 31337, ESCROW, 7, Action.LOGS, now=NOW)

    assert refused.value.code is code


def test_expired_and_far_ahead_requests_are_refused():
    for headers in (
        sign_request(KEY, 31337, ESCROW, 7, Action.LOGS, now=NOW - 120),
        sign_request(KEY, 31337, ESCROW, 7, Action.LOGS, validity_seconds=600, now=NOW),
    ):
        with pytest.raises(RequestRefused) as refused:
            recover_signer(headers, 31337, ESCROW, 7, Action.LOGS, now=NOW)
        assert refused.value.code is ApiErrorCode.EXPIRED


def test_a_sealed_value_opens_with_the_agents_key_only():
    public_key = public_key_of(AGENT_KEY)
    sealed = seal(public_key, "hunter2 \u00e9")

    assert address_of_public_key(public_key) == Account.from_key(AGENT_KEY).address
    assert unseal(AGENT_KEY, sealed) == "hunter2 \u00e9"
    assert "hunter2" not in sealed and seal(public_key, "hunter2 \u00e9") != sealed, "fresh each time"
    with pytest.raises(ValueError):
        unseal(KEY, sealed)
    with pytest.raises(ValueError):
        unseal(AGENT_KEY, sealed[:-4] + "0000")


def _member(
    tar: tarfile.TarFile, name: str, *, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = ""
) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, len(data)
    tar.addfile(info, io.BytesIO(data) if data else None)


def test_a_hostile_results_tar_unpacks_nothing_outside_its_folder(tmp_path):
    path = tmp_path / "results.tar"
    with tarfile.open(path, "w") as tar:
        _member(tar, "./model.bin", data=b"weights")
        _member(tar, "../escape.txt", data=b"out")
        _member(tar, "/tmp/gpuex-absolute-0b7c.txt", data=b"abs")
        _member(tar, "./passwd", kind=tarfile.SYMTYPE, link="/etc/passwd")
        _member(tar, "./up", kind=tarfile.SYMTYPE, link="../../..")
        _member(tar, "./disk", kind=tarfile.BLKTYPE)
    target = tmp_path / "results"

    skipped = extract_results(path, target)

    assert (target / "model.bin").read_bytes() == b"weights"
    assert (target / "tmp" / "gpuex-absolute-0b7c.txt").read_bytes() == b"abs", "an absolute name lands inside"
    assert not (tmp_path / "escape.txt").exists() and not (target / "passwd").exists()
    assert not (target / "up").exists() and not (target / "disk").exists()
    assert [entry.split(" ")[0] for entry in skipped] == ["../escape.txt", "./passwd", "./up", "./disk"]
