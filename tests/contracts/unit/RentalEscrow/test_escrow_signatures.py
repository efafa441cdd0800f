"""RentalEscrow batch signatures: EIP-712 domain, oracle set version, replay, quorum and malformed signatures.
Oracle set changes are in test_escrow_governance.py."""

import brownie
import pytest
from brownie import chain
from brownie.exceptions import VirtualMachineError
from eth_abi import encode
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak

from offchain.protocol.reports import EscrowDomain, ReportStatus, batch_digest, sign_batch, submit_args, typed_batch
from tests.contracts.helpers import ORACLE_KEYS, ORACLES, RentalStatus, SkipReason, error, report, wait
from tests.contracts.unit.RentalEscrow.escrow_helpers import event

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
OUTSIDER_KEY = keccak(text="gpuex test outsider")


@pytest.fixture
def rid(escrow, list_offer, open_rental, provider, renter):
    rid = open_rental(renter, list_offer(provider))
    escrow.start(rid, {"from": provider})
    return rid


@pytest.fixture
def reports(escrow, rid):
    """One valid report of `rid` covering its first 600 seconds."""
    started = escrow.getRental(rid)["since"]
    wait(600)
    return [report(rid, 1, started + 600, 600)]


def _signatures(reports, domain, keys):
    return [sign_batch(reports, domain, key) for key in keys]


def _args(reports, signatures, version=1):
    """submitReports' arguments for a batch signed under oracle set `version`."""
    return submit_args(reports, signatures, version)


def _recovered(reports, domain, signature):
    """The address the escrow recovers from `signature` over the batch digest under `domain`."""
    return Account._recover_hash(batch_digest(reports, domain), signature=signature)


# positive


def test_batch_digest_on_chain_equals_offchain_digest(escrow, rid, domain):
    reports = [
        report(rid, 1, 1_700_000_000, 600, util=432, root=b"\x33" * 32),
        report(rid + 1, 7, 1_700_000_600, 0, status=ReportStatus.FAILED),
    ]

    assert escrow.batchDigest([r.as_tuple() for r in reports]) == "0x" + batch_digest(reports, domain()).hex()


def test_domain_separator_on_chain_equals_offchain_domain(escrow, rid, domain):
    separator = encode_typed_data(full_message=typed_batch([report(rid, 1, 1, 0)], domain())).header

    assert escrow.domainSeparator() == "0x" + separator.hex()


def test_any_relayer_may_submit_a_signed_batch(escrow, rid, reports, renter2, submit):
    submit(reports, sender=renter2)

    assert escrow.getRental(rid)["lastSeq"] == 1


def test_batch_signed_by_every_oracle_verifies(escrow, rid, reports, submit):
    submit(reports, keys=ORACLE_KEYS)

    assert escrow.getRental(rid)["lastSeq"] == 1


# domain and replay


def test_batch_signed_for_another_chain_reverts(escrow, reports, domain, stranger):
    other_chain = EscrowDomain(chain_id=chain.id + 1, escrow=escrow.address, oracle_set_version=1)
    signatures = _signatures(reports, other_chain, ORACLE_KEYS[:2])

    with brownie.reverts(error("Escrow_SignerNotInOracleSet", _recovered(reports, domain(), signatures[0]))):
        escrow.submitReports(*_args(reports, signatures), {"from": stranger})


def test_batch_signed_for_another_verifying_contract_reverts(escrow, registry, reports, domain, stranger):
    other_contract = EscrowDomain(chain_id=chain.id, escrow=registry.address, oracle_set_version=1)
    signatures = _signatures(reports, other_contract, ORACLE_KEYS[:2])

    with brownie.reverts(error("Escrow_SignerNotInOracleSet", _recovered(reports, domain(), signatures[0]))):
        escrow.submitReports(*_args(reports, signatures), {"from": stranger})


def test_replayed_batch_of_live_rental_is_skipped(escrow, rid, reports, domain, stranger):
    signatures = _signatures(reports, domain(), ORACLE_KEYS[:2])
    escrow.submitReports(*_args(reports, signatures), {"from": stranger})
    wait(60)
    state = escrow.getRental(rid).dict()

    tx = escrow.submitReports(*_args(reports, signatures), {"from": stranger})

    assert event(tx, "ReportSkipped") == {"rentalId": rid, "seq": 1, "reason": SkipReason.SEQ_NOT_INCREASING}
    assert escrow.getRental(rid).dict() == state


def test_replayed_batch_of_final_rental_is_skipped(escrow, rid, domain, stranger):
    started = escrow.getRental(rid)["since"]
    wait(600)
    reports = [report(rid, 1, started + 600, 600, status=ReportStatus.COMPLETED)]
    signatures = _signatures(reports, domain(), ORACLE_KEYS[:2])
    escrow.submitReports(*_args(reports, signatures), {"from": stranger})
    balance = escrow.balanceOf(escrow.getRental(rid)["renter"])

    tx = escrow.submitReports(*_args(reports, signatures), {"from": stranger})

    assert event(tx, "ReportSkipped") == {"rentalId": rid, "seq": 1, "reason": SkipReason.RENTAL_CLOSED}
    assert "RentalFinalized" not in tx.events
    assert escrow.getRental(rid)["status"] == RentalStatus.COMPLETED
    assert escrow.balanceOf(escrow.getRental(rid)["renter"]) == balance


# signer set


def test_same_oracle_signing_twice_reverts(reports, submit):
    with brownie.reverts(error("Escrow_DuplicateSigner", ORACLES[0].address)):
        submit(reports, keys=[ORACLE_KEYS[0], ORACLE_KEYS[0]])


def test_duplicate_signer_beyond_threshold_reverts(reports, submit):
    with brownie.reverts(error("Escrow_DuplicateSigner", ORACLES[1].address)):
        submit(reports, keys=[ORACLE_KEYS[0], ORACLE_KEYS[1], ORACLE_KEYS[1]])


def test_fewer_signatures_than_threshold_reverts(reports, submit):
    with brownie.reverts(error("Escrow_NotEnoughSignatures", 1, 2)):
        submit(reports, keys=ORACLE_KEYS[:1])


def test_batch_without_signatures_reverts(reports, submit):
    with brownie.reverts(error("Escrow_NotEnoughSignatures", 0, 2)):
        submit(reports, keys=[])


def test_signer_outside_oracle_set_reverts(reports, submit):
    outsider = Account.from_key(OUTSIDER_KEY).address

    with brownie.reverts(error("Escrow_SignerNotInOracleSet", outsider)):
        submit(reports, keys=[ORACLE_KEYS[0], OUTSIDER_KEY])


def test_unknown_signer_beyond_a_met_threshold_reverts(escrow, rid, reports, submit):
    outsider = Account.from_key(OUTSIDER_KEY).address

    with brownie.reverts(error("Escrow_SignerNotInOracleSet", outsider)):
        submit(reports, keys=[ORACLE_KEYS[0], ORACLE_KEYS[1], OUTSIDER_KEY])
    assert escrow.getRental(rid)["lastSeq"] == 0


# malformed signatures


def test_high_s_signature_reverts(escrow, reports, domain, stranger):
    valid = sign_batch(reports, domain(), ORACLE_KEYS[0])
    high_s = (SECP256K1_N - int.from_bytes(valid[32:64], "big")).to_bytes(32, "big")
    # The same point with the other s and flipped parity recovers the same signer: OZ must reject it.
    malleated = valid[:32] + high_s + bytes([55 - valid[64]])
    assert _recovered(reports, domain(), malleated) == ORACLES[0].address

    with brownie.reverts(error("ECDSAInvalidSignatureS", high_s)):
        escrow.submitReports(
            *_args(reports, [malleated, sign_batch(reports, domain(), ORACLE_KEYS[1])]), {"from": stranger}
        )


MALFORMED_SIGNATURES = {
    "a 64-byte signature": lambda sigs: [sigs[0][:64], sigs[1]],
    "a trailing byte": lambda sigs: [sigs[0], sigs[1], b"\x1b"],
    "a lone byte": lambda sigs: [b"\x1b"],
}


@pytest.mark.parametrize("malform", MALFORMED_SIGNATURES.values(), ids=MALFORMED_SIGNATURES.keys())
def test_signatures_not_a_multiple_of_65_bytes_revert(escrow, reports, domain, stranger, malform):
    signatures = malform(_signatures(reports, domain(), ORACLE_KEYS[:2]))
    length = sum(len(signature) for signature in signatures)

    with brownie.reverts(error("Escrow_MalformedSignatures", length)):
        escrow.submitReports(*_args(reports, signatures), {"from": stranger})


def test_signature_with_invalid_v_reverts(escrow, reports, domain, stranger):
    signatures = _signatures(reports, domain(), ORACLE_KEYS[:2])

    with brownie.reverts(error("ECDSAInvalidSignature")):
        escrow.submitReports(*_args(reports, [signatures[0][:64] + bytes([29]), signatures[1]]), {"from": stranger})


# reports hashed straight from calldata

REPORT_ABI = "(uint256,uint256,uint256,uint256,uint256,uint256,bytes32)[]"


def _raw_digest(escrow, words):
    """`_batchDigest` rebuilt from the spec (abi.encode of each report's seven words), for reports given as
    raw 256-bit words, so that a field may carry bits above its declared width."""
    report_hashes = b"".join(
        keccak(bytes(escrow.REPORT_TYPEHASH()) + b"".join(w.to_bytes(32, "big") for w in report_words))
        for report_words in words
    )
    struct_hash = keccak(
        encode(
            ["bytes32", "uint64", "bytes32"],
            [bytes(escrow.BATCH_TYPEHASH()), escrow.oracleSet()["version"], keccak(report_hashes)],
        )
    )
    return keccak(b"\x19\x01" + bytes(escrow.domainSeparator()) + struct_hash)


def _raw_submit(escrow, words, signatures, sender):
    """Sends submitReports with each report field encoded as a full word, dirty high bits included."""
    reports = [tuple(w[:6]) + (w[6].to_bytes(32, "big"),) for w in words]
    calldata = bytes.fromhex(escrow.submitReports.signature[2:]) + encode(
        ["uint64", REPORT_ABI, "bytes"], [escrow.oracleSet()["version"], reports, b"".join(signatures)]
    )
    return sender.transfer(escrow, 0, data=calldata)


def _raw_signatures(digest, keys):
    return [bytes(Account.unsafe_sign_hash(digest, key).signature) for key in keys]


@pytest.fixture
def words(escrow, rid):
    """The seven words of a valid first report of `rid`."""
    started = escrow.getRental(rid)["since"]
    wait(600)
    return [rid, 1, started + 600, 600, 600, 0, 0x22]


def test_batch_hashed_from_calldata_matches_the_abi_encoding(escrow, rid, words, stranger):
    _raw_submit(escrow, [words], _raw_signatures(_raw_digest(escrow, [words]), ORACLE_KEYS[:2]), stranger)

    assert escrow.getRental(rid)["lastSeq"] == 1


def test_dirty_high_bits_in_a_report_word_change_the_digest(escrow, words, stranger):
    dirty = words[:1] + [words[1] | 1 << 32] + words[2:]
    signatures = _raw_signatures(_raw_digest(escrow, [words]), ORACLE_KEYS[:2])
    recovered = Account._recover_hash(_raw_digest(escrow, [dirty]), signature=signatures[0])

    with brownie.reverts(error("Escrow_SignerNotInOracleSet", recovered)):
        _raw_submit(escrow, [dirty], signatures, stranger)


def test_dirty_high_bits_signed_as_they_are_revert_in_the_abi_decoder(escrow, rid, words, stranger):
    dirty = words[:1] + [words[1] | 1 << 32] + words[2:]

    with pytest.raises(VirtualMachineError) as reverted:
        _raw_submit(escrow, [dirty], _raw_signatures(_raw_digest(escrow, [dirty]), ORACLE_KEYS[:2]), stranger)

    assert reverted.value.revert_msg is None
    assert escrow.getRental(rid)["lastSeq"] == 0
