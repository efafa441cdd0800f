"""RentalEscrow batch signatures (EIP-712 domain, oracle set, replay, malleability) and governance."""

import brownie
import pytest
from brownie import chain
from brownie.exceptions import VirtualMachineError
from eth_abi import encode
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak

from offchain.protocol.reports import EscrowDomain, ReportStatus, batch_digest, sign_batch, typed_batch
from scripts.deploy import deploy_suite
from tests.contracts.helpers import ORACLE_KEYS, ORACLES, error, report, wait
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


def _tuples(reports):
    return [r.as_tuple() for r in reports]


def _recovered(reports, domain, signature):
    """The address the escrow recovers from `signature` over the batch digest under `domain`."""
    return Account._recover_hash(batch_digest(reports, domain), signature=signature)


# positive


def test_batch_digest_on_chain_equals_offchain_digest(escrow, rid, domain):
    reports = [
        report(rid, 1, 1_700_000_000, 600, util=4_321, root=b"\x33" * 32),
        report(rid + 1, 7, 1_700_000_600, 0, status=ReportStatus.FAILED),
    ]

    assert escrow.batchDigest(_tuples(reports)) == "0x" + batch_digest(reports, domain()).hex()


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
        escrow.submitReports(_tuples(reports), signatures, {"from": stranger})


def test_batch_signed_for_another_verifying_contract_reverts(escrow, registry, reports, domain, stranger):
    other_contract = EscrowDomain(chain_id=chain.id, escrow=registry.address, oracle_set_version=1)
    signatures = _signatures(reports, other_contract, ORACLE_KEYS[:2])

    with brownie.reverts(error("Escrow_SignerNotInOracleSet", _recovered(reports, domain(), signatures[0]))):
        escrow.submitReports(_tuples(reports), signatures, {"from": stranger})


def test_replayed_batch_of_live_rental_reverts(escrow, rid, reports, domain, stranger):
    signatures = _signatures(reports, domain(), ORACLE_KEYS[:2])
    escrow.submitReports(_tuples(reports), signatures, {"from": stranger})

    with brownie.reverts(error("Escrow_UnexpectedSeq", rid, 2, 1)):
        escrow.submitReports(_tuples(reports), signatures, {"from": stranger})


def test_replayed_batch_of_final_rental_reverts(escrow, rid, domain, stranger):
    started = escrow.getRental(rid)["since"]
    wait(600)
    reports = [report(rid, 1, started + 600, 600, status=ReportStatus.COMPLETED)]
    signatures = _signatures(reports, domain(), ORACLE_KEYS[:2])
    escrow.submitReports(_tuples(reports), signatures, {"from": stranger})

    with brownie.reverts(error("Escrow_BatchHadNoEffect")):
        escrow.submitReports(_tuples(reports), signatures, {"from": stranger})


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


def test_signer_removed_from_oracle_set_stops_verifying(escrow, reports, deployer, submit):
    escrow.setOracleSet([ORACLES[1].address, ORACLES[2].address], 2, {"from": deployer})

    with brownie.reverts(error("Escrow_SignerNotInOracleSet", ORACLES[0].address)):
        submit(reports, keys=ORACLE_KEYS[:2])


def test_remaining_signers_verify_after_oracle_set_change(escrow, rid, reports, deployer, submit):
    escrow.setOracleSet([ORACLES[1].address, ORACLES[2].address], 2, {"from": deployer})

    submit(reports, keys=ORACLE_KEYS[1:])

    assert escrow.getRental(rid)["lastSeq"] == 1


def test_batch_signed_under_previous_oracle_set_version_reverts(escrow, reports, deployer, domain, stranger):
    escrow.setOracleSet([ORACLES[1].address, ORACLES[2].address], 2, {"from": deployer})
    signatures = _signatures(reports, domain(version=1), ORACLE_KEYS[1:])

    with brownie.reverts(error("Escrow_SignerNotInOracleSet", _recovered(reports, domain(), signatures[0]))):
        escrow.submitReports(_tuples(reports), signatures, {"from": stranger})


def test_escrow_without_oracle_set_reverts(deployer, treasury, token, params, reports, stranger):
    bare = deploy_suite(deployer, token, token, treasury, params=params).escrow
    domain = EscrowDomain(chain_id=chain.id, escrow=bare.address, oracle_set_version=1)

    with brownie.reverts(error("Escrow_NoOracleSet")):
        bare.submitReports(_tuples(reports), _signatures(reports, domain, ORACLE_KEYS[:2]), {"from": stranger})


# malformed signatures


def test_high_s_signature_reverts(escrow, reports, domain, stranger):
    valid = sign_batch(reports, domain(), ORACLE_KEYS[0])
    high_s = (SECP256K1_N - int.from_bytes(valid[32:64], "big")).to_bytes(32, "big")
    # The same point with the other s and flipped parity recovers the same signer: OZ must reject it.
    malleated = valid[:32] + high_s + bytes([55 - valid[64]])
    assert _recovered(reports, domain(), malleated) == ORACLES[0].address

    with brownie.reverts(error("ECDSAInvalidSignatureS", high_s)):
        escrow.submitReports(
            _tuples(reports), [malleated, sign_batch(reports, domain(), ORACLE_KEYS[1])], {"from": stranger}
        )


def test_signature_of_wrong_length_reverts(escrow, reports, domain, stranger):
    signatures = _signatures(reports, domain(), ORACLE_KEYS[:2])

    with brownie.reverts(error("ECDSAInvalidSignatureLength", 64)):
        escrow.submitReports(_tuples(reports), [signatures[0][:64], signatures[1]], {"from": stranger})


def test_signature_with_invalid_v_reverts(escrow, reports, domain, stranger):
    signatures = _signatures(reports, domain(), ORACLE_KEYS[:2])

    with brownie.reverts(error("ECDSAInvalidSignature")):
        escrow.submitReports(_tuples(reports), [signatures[0][:64] + bytes([29]), signatures[1]], {"from": stranger})


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
        [REPORT_ABI, "bytes[]"], [reports, signatures]
    )
    return sender.transfer(escrow, 0, data=calldata)


def _raw_signatures(digest, keys):
    return [bytes(Account.unsafe_sign_hash(digest, key).signature) for key in keys]


@pytest.fixture
def words(escrow, rid):
    """The seven words of a valid first report of `rid`."""
    started = escrow.getRental(rid)["since"]
    wait(600)
    return [rid, 1, started + 600, 600, 10_000, 0, 0x22]


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


# governance


def test_set_oracle_set_replaces_signers_and_bumps_version(escrow, deployer, stranger):
    signers = [ORACLES[2].address, stranger.address]

    tx = escrow.setOracleSet(signers, 1, {"from": deployer})

    assert event(tx, "OracleSetUpdated") == {"version": 2, "signers": signers, "threshold": 1}
    assert escrow.oracleSet().dict() == {"version": 2, "signers": signers, "threshold": 1}


INVALID_ORACLE_SETS = {
    "empty": ([], 1),
    "zero address": ([ORACLES[0].address, brownie.ZERO_ADDRESS], 1),
    "duplicate": ([ORACLES[0].address, ORACLES[1].address, ORACLES[0].address], 2),
    "threshold zero": ([ORACLES[0].address], 0),
    "threshold above signers": ([ORACLES[0].address, ORACLES[1].address], 3),
    "more than 255 signers": ([f"0x{i:040x}" for i in range(1, 257)], 1),
}


@pytest.mark.parametrize("signers,threshold", INVALID_ORACLE_SETS.values(), ids=INVALID_ORACLE_SETS.keys())
def test_set_oracle_set_rejects_invalid_set(escrow, deployer, signers, threshold):
    with brownie.reverts(error("Escrow_InvalidOracleSet")):
        escrow.setOracleSet(signers, threshold, {"from": deployer})


def test_set_oracle_set_of_255_signers_succeeds(escrow, deployer):
    signers = [f"0x{i:040x}" for i in range(1, 256)]

    escrow.setOracleSet(signers, 255, {"from": deployer})

    assert escrow.oracleSet()["threshold"] == 255


def test_set_fee_above_cap_reverts(escrow, deployer, params):
    with brownie.reverts(error("Escrow_FeeAboveCap", params.fee_cap_bps + 1, params.fee_cap_bps)):
        escrow.setFee(params.fee_cap_bps + 1, {"from": deployer})


def test_set_fee_at_cap_updates_fee(escrow, deployer, treasury, params):
    tx = escrow.setFee(params.fee_cap_bps, {"from": deployer})

    assert event(tx, "FeeUpdated") == {"feeBps": params.fee_cap_bps}
    assert escrow.feeConfig().dict() == {"feeBps": params.fee_cap_bps, "treasury": treasury.address}


def test_set_treasury_to_zero_address_reverts(escrow, deployer):
    with brownie.reverts(error("Escrow_ZeroAddress")):
        escrow.setTreasury(brownie.ZERO_ADDRESS, {"from": deployer})


def test_set_treasury_redirects_later_fees(escrow, rid, deployer, treasury, stranger, submit, params):
    tx = escrow.setTreasury(stranger, {"from": deployer})
    started = escrow.getRental(rid)["since"]
    wait(600)

    submit([report(rid, 1, started + 600, 600, status=ReportStatus.COMPLETED)])

    assert event(tx, "TreasuryUpdated") == {"treasury": stranger.address}
    assert escrow.balanceOf(stranger) == 600_000 * params.fee_bps // 10_000
    assert escrow.balanceOf(treasury) == 0


GOVERNANCE_CALLS = {
    "setOracleSet": lambda escrow, caller: escrow.setOracleSet([caller.address], 1, {"from": caller}),
    "setFee": lambda escrow, caller: escrow.setFee(0, {"from": caller}),
    "setTreasury": lambda escrow, caller: escrow.setTreasury(caller, {"from": caller}),
    "pause": lambda escrow, caller: escrow.pause({"from": caller}),
    "unpause": lambda escrow, caller: escrow.unpause({"from": caller}),
    "transferOwnership": lambda escrow, caller: escrow.transferOwnership(caller, {"from": caller}),
}


@pytest.mark.parametrize("call", GOVERNANCE_CALLS.values(), ids=GOVERNANCE_CALLS.keys())
def test_governance_is_owner_only(escrow, stranger, call):
    with brownie.reverts(error("OwnableUnauthorizedAccount", stranger)):
        call(escrow, stranger)


def test_ownership_transfer_waits_for_acceptance(escrow, deployer, stranger):
    escrow.transferOwnership(stranger, {"from": deployer})

    assert escrow.owner() == deployer.address
    assert escrow.pendingOwner() == stranger.address


def test_pending_owner_accepts_and_takes_over_governance(escrow, deployer, stranger):
    escrow.transferOwnership(stranger, {"from": deployer})

    escrow.acceptOwnership({"from": stranger})

    assert escrow.owner() == stranger.address
    escrow.setFee(0, {"from": stranger})
    with brownie.reverts(error("OwnableUnauthorizedAccount", deployer)):
        escrow.setFee(0, {"from": deployer})


def test_accepting_ownership_by_other_than_pending_owner_reverts(escrow, deployer, stranger, renter):
    escrow.transferOwnership(stranger, {"from": deployer})

    with brownie.reverts(error("OwnableUnauthorizedAccount", renter)):
        escrow.acceptOwnership({"from": renter})
