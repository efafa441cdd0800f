"""RentalEscrow governance: the oracle set fixed at deployment and changed only through a proposal that waits the
governance delay, the fee, the treasury, pausing and two-step ownership."""

import brownie
import pytest
from brownie import ProviderRegistry, RentalEscrow
from eth_account import Account
from eth_utils import keccak

from offchain.chain.deployments import create_address
from offchain.ops.deploy import escrow_args, registry_args
from offchain.protocol.reports import ReportStatus
from scripts.deploy import deploy_suite
from tests.contracts.helpers import ORACLE_KEYS, ORACLES, at_next_block, block_time, error, report, wait
from tests.contracts.unit.RentalEscrow.escrow_helpers import event

NEW_ORACLE_KEY = keccak(text="gpuex test new oracle")
NEW_ORACLE = Account.from_key(NEW_ORACLE_KEY).address
SUITE_SET = [o.address for o in ORACLES]  # the suite fixture's 2-of-3 set


@pytest.fixture
def reports(escrow, rid, started):
    """One valid report of the started rental `rid` covering its first 600 seconds."""
    wait(600)
    return [report(rid, 1, started + 600, 600)]


@pytest.fixture
def propose(escrow, deployer):
    """Proposes `signers` with `threshold` as the owner; returns the time the set can take effect."""

    def _propose(signers, threshold):
        return escrow.scheduleOracleSet(signers, threshold, {"from": deployer}).events["OracleSetScheduled"][
            "effectiveAt"
        ]

    return _propose


@pytest.fixture
def rotate(escrow, propose, params, stranger):
    """Proposes `signers` with `threshold`, waits the governance delay and activates them."""

    def _rotate(signers, threshold):
        propose(signers, threshold)
        wait(params.governance_delay)
        return escrow.activateOracleSet({"from": stranger})

    return _rotate


# the set at deployment


def test_constructor_installs_its_oracle_set_as_version_1(escrow):
    assert event(escrow.tx, "OracleSetUpdated") == {"version": 1, "signers": SUITE_SET, "threshold": 2}
    assert escrow.oracleSet().dict() == {"version": 1, "signers": SUITE_SET, "threshold": 2}
    assert escrow.upcomingOracleSet().dict() == {"signers": [], "threshold": 0, "effectiveAt": 0}


def test_suite_deployed_without_oracles_is_signed_by_its_deployer_alone(deployer, treasury, token, params):
    bare = deploy_suite(deployer, token, token, treasury, params=params).escrow

    assert bare.oracleSet().dict() == {"version": 1, "signers": [deployer.address], "threshold": 1}


def test_governance_delay_is_the_deployment_parameter(escrow, params):
    assert escrow.governanceDelay() == params.governance_delay


INVALID_ORACLE_SETS = {
    "empty": ([], 1),
    "zero address": ([ORACLES[0].address, brownie.ZERO_ADDRESS], 1),
    "duplicate": ([ORACLES[0].address, ORACLES[1].address, ORACLES[0].address], 2),
    "threshold zero": ([ORACLES[0].address], 0),
    "threshold above signers": ([ORACLES[0].address, ORACLES[1].address], 3),
    "more than MAX_ORACLES (100) signers": ([f"0x{i:040x}" for i in range(1, 102)], 1),
}


@pytest.mark.parametrize("signers,threshold", INVALID_ORACLE_SETS.values(), ids=INVALID_ORACLE_SETS.keys())
def test_constructor_rejects_invalid_oracle_set(deployer, treasury, token, params, signers, threshold):
    registry = ProviderRegistry.deploy(
        *registry_args(params, token, create_address(deployer.address, deployer.nonce + 1)), {"from": deployer}
    )

    with brownie.reverts(error("Escrow_InvalidOracleSet")):
        RentalEscrow.deploy(
            *escrow_args(params, token, registry, deployer, treasury, signers, threshold), {"from": deployer}
        )


# proposals


def test_propose_announces_the_set_and_when_it_can_take_effect(escrow, deployer, stranger, params):
    signers = [ORACLES[2].address, stranger.address]

    tx = escrow.scheduleOracleSet(signers, 1, {"from": deployer})

    effective_at = tx.timestamp + params.governance_delay
    assert event(tx, "OracleSetScheduled") == {
        "version": 2,
        "signers": signers,
        "threshold": 1,
        "effectiveAt": effective_at,
    }
    assert escrow.upcomingOracleSet().dict() == {"signers": signers, "threshold": 1, "effectiveAt": effective_at}
    assert escrow.oracleSet().dict() == {"version": 1, "signers": SUITE_SET, "threshold": 2}


@pytest.mark.parametrize("signers,threshold", INVALID_ORACLE_SETS.values(), ids=INVALID_ORACLE_SETS.keys())
def test_propose_rejects_invalid_oracle_set(escrow, deployer, signers, threshold):
    with brownie.reverts(error("Escrow_InvalidOracleSet")):
        escrow.scheduleOracleSet(signers, threshold, {"from": deployer})


def test_a_set_of_max_oracles_signers_can_be_scheduled_and_activated(escrow, rotate):
    count = escrow.MAX_ORACLES()
    signers = [f"0x{i:040x}" for i in range(1, count + 1)]

    rotate(signers, count)

    assert escrow.oracleSet().dict() == {"version": 2, "signers": signers, "threshold": count}


def test_later_proposal_replaces_the_pending_one_and_restarts_the_delay(escrow, deployer, propose, params):
    first = propose([NEW_ORACLE], 1)
    wait(params.governance_delay // 2)

    second = propose([ORACLES[0].address, NEW_ORACLE], 2)

    assert second > first
    assert escrow.upcomingOracleSet().dict() == {
        "signers": [ORACLES[0].address, NEW_ORACLE],
        "threshold": 2,
        "effectiveAt": second,
    }
    at_next_block(first)
    with brownie.reverts(error("Escrow_OracleSetNotYetEffective", second)):
        escrow.activateOracleSet({"from": deployer})


# activation


def test_activation_before_the_delay_reverts(escrow, propose, stranger):
    effective_at = propose([NEW_ORACLE], 1)
    at_next_block(effective_at - 1)

    with brownie.reverts(error("Escrow_OracleSetNotYetEffective", effective_at)):
        escrow.activateOracleSet({"from": stranger})


def test_anyone_activates_the_set_once_its_delay_has_passed(escrow, propose, stranger):
    signers = [ORACLES[2].address, NEW_ORACLE]
    effective_at = propose(signers, 2)
    at_next_block(effective_at)

    tx = escrow.activateOracleSet({"from": stranger})

    assert tx.timestamp == effective_at
    assert event(tx, "OracleSetUpdated") == {"version": 2, "signers": signers, "threshold": 2}
    assert escrow.oracleSet().dict() == {"version": 2, "signers": signers, "threshold": 2}
    assert escrow.upcomingOracleSet().dict() == {"signers": [], "threshold": 0, "effectiveAt": 0}


def test_activation_without_a_proposal_reverts(escrow, stranger):
    with brownie.reverts(error("Escrow_NoOracleSetScheduled")):
        escrow.activateOracleSet({"from": stranger})


def test_a_proposal_activates_once(escrow, rotate, stranger):
    rotate([NEW_ORACLE], 1)

    with brownie.reverts(error("Escrow_NoOracleSetScheduled")):
        escrow.activateOracleSet({"from": stranger})


def test_proposed_set_cannot_sign_before_its_delay_and_can_after(escrow, rid, reports, propose, stranger, submit):
    new_keys = [NEW_ORACLE_KEY, ORACLE_KEYS[2]]
    effective_at = propose([NEW_ORACLE, ORACLES[2].address], 2)

    with brownie.reverts(error("Escrow_SignerNotInOracleSet", NEW_ORACLE)):
        submit(reports, keys=new_keys, version=2)
    at_next_block(effective_at)
    with brownie.reverts(error("Escrow_SignerNotInOracleSet", NEW_ORACLE)):
        submit(reports, keys=new_keys, version=2)
    escrow.activateOracleSet({"from": stranger})
    submit(reports, keys=new_keys, version=2)

    assert escrow.getRental(rid)["lastSeq"] == 1


def test_proposed_set_cannot_sign_under_the_current_version(escrow, reports, propose, submit):
    propose([NEW_ORACLE, ORACLES[2].address], 2)

    with brownie.reverts(error("Escrow_SignerNotInOracleSet", NEW_ORACLE)):
        submit(reports, keys=[NEW_ORACLE_KEY, ORACLE_KEYS[2]], version=1)


OLD_SET_SIGNATURES = {
    "remaining oracles under the old version": ([1, 2], 1, ORACLES[1].address),
    "removed oracle under the old version": ([0, 1], 1, ORACLES[0].address),
    "removed oracle under the new version": ([0, 1], 2, ORACLES[0].address),
}


@pytest.mark.parametrize("signers,version,refused", OLD_SET_SIGNATURES.values(), ids=OLD_SET_SIGNATURES.keys())
def test_old_set_signatures_fail_after_activation(escrow, rid, reports, rotate, submit, signers, version, refused):
    rotate([ORACLES[1].address, ORACLES[2].address], 2)

    with brownie.reverts(error("Escrow_SignerNotInOracleSet", refused)):
        submit(reports, keys=[ORACLE_KEYS[i] for i in signers], version=version)
    assert escrow.getRental(rid)["lastSeq"] == 0


def test_remaining_oracles_sign_under_the_new_version(escrow, rid, reports, rotate, submit):
    rotate([ORACLES[1].address, ORACLES[2].address], 2)

    submit(reports, keys=ORACLE_KEYS[1:], version=2)

    assert escrow.getRental(rid)["lastSeq"] == 1


def test_new_threshold_applies_after_activation(escrow, rid, reports, rotate, submit):
    rotate(SUITE_SET, 3)

    with brownie.reverts(error("Escrow_NotEnoughSignatures", 2, 3)):
        submit(reports, keys=ORACLE_KEYS[:2], version=2)
    submit(reports, keys=ORACLE_KEYS, version=2)

    assert escrow.getRental(rid)["lastSeq"] == 1


# cancellation


def test_cancel_withdraws_the_pending_proposal(escrow, deployer, propose, stranger, params):
    propose([NEW_ORACLE], 1)

    tx = escrow.cancelOracleSet({"from": deployer})

    assert event(tx, "OracleSetCancelled") == {"version": 2}
    assert escrow.upcomingOracleSet().dict() == {"signers": [], "threshold": 0, "effectiveAt": 0}
    wait(params.governance_delay)
    with brownie.reverts(error("Escrow_NoOracleSetScheduled")):
        escrow.activateOracleSet({"from": stranger})
    assert escrow.oracleSet()["version"] == 1


def test_cancel_without_a_proposal_reverts(escrow, deployer):
    with brownie.reverts(error("Escrow_NoOracleSetScheduled")):
        escrow.cancelOracleSet({"from": deployer})


def test_proposal_after_a_cancel_waits_its_own_delay(escrow, deployer, propose, stranger):
    propose([NEW_ORACLE], 1)
    escrow.cancelOracleSet({"from": deployer})
    wait(60)

    effective_at = propose([ORACLES[0].address], 1)

    assert effective_at > block_time()
    at_next_block(effective_at - 1)
    with brownie.reverts(error("Escrow_OracleSetNotYetEffective", effective_at)):
        escrow.activateOracleSet({"from": stranger})


# fee, treasury, pause and ownership


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


def test_set_treasury_redirects_later_fees(escrow, rid, started, deployer, treasury, stranger, submit, params):
    tx = escrow.setTreasury(stranger, {"from": deployer})
    wait(600)

    submit([report(rid, 1, started + 600, 600, status=ReportStatus.COMPLETED)])

    assert event(tx, "TreasuryUpdated") == {"treasury": stranger.address}
    assert escrow.balanceOf(stranger) == 600_000 * params.fee_bps // 10_000
    assert escrow.balanceOf(treasury) == 0


GOVERNANCE_CALLS = {
    "scheduleOracleSet": lambda escrow, caller: escrow.scheduleOracleSet([caller.address], 1, {"from": caller}),
    "cancelOracleSet": lambda escrow, caller: escrow.cancelOracleSet({"from": caller}),
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


def test_only_the_owner_cancels_a_pending_proposal(escrow, propose, stranger):
    effective_at = propose([NEW_ORACLE], 1)

    with brownie.reverts(error("OwnableUnauthorizedAccount", stranger)):
        escrow.cancelOracleSet({"from": stranger})
    assert escrow.upcomingOracleSet()["effectiveAt"] == effective_at


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
