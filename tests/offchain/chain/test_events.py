"""`offchain.chain.events`: every event of the registry and the escrow has a record with exactly its arguments, a
raw log decodes by name to its event's record and where the log is, and a log of no known event to None."""

from __future__ import annotations

import pytest
from brownie import chain, web3
from eth_utils import keccak

from offchain.chain.contracts import abi
from offchain.chain.events import (
    CONTRACT_EVENTS,
    ChainEvent,
    ListedTerms,
    OfferCreated,
    RentalOpened,
    decode_log,
)
from offchain.chain.reads import AbiMismatch
from offchain.protocol.messages import gpu_uuid_hash
from offchain.protocol.reports import Report
from offchain.protocol.status import DeclineReason, RentalStatus, SkipReason
from scripts.deploy import SuiteParams
from tests.offchain.chain.helpers import report_args
from tests.offchain.conftest import ORACLES, PRICE

JOB = keccak(text="events test job")
ABI_EVENTS = [(name, entry) for name in CONTRACT_EVENTS for entry in abi(name) if entry["type"] == "event"]


@pytest.fixture(autouse=True)
def isolation(fn_isolation):
    pass


def argument_names(record: type[ChainEvent]) -> set[str]:
    return {field.alias or name for name, field in record.model_fields.items() if name not in ChainEvent.LOG_FIELDS}


@pytest.mark.parametrize("contract_name, event", ABI_EVENTS, ids=[f"{c}.{e['name']}" for c, e in ABI_EVENTS])
def test_every_event_has_a_record_with_exactly_its_arguments(contract_name, event):
    (record,) = [r for r in CONTRACT_EVENTS[contract_name] if r.__name__ == event["name"]]
    assert argument_names(record) == {entry["name"] for entry in event["inputs"]}


@pytest.mark.parametrize("contract_name", list(CONTRACT_EVENTS))
def test_every_record_is_of_an_event_of_its_contract(contract_name):
    assert {r.__name__ for r in CONTRACT_EVENTS[contract_name]} == {
        e["name"] for c, e in ABI_EVENTS if c == contract_name
    }


def test_the_listed_terms_have_exactly_the_fields_of_the_struct():
    (created,) = [e for c, e in ABI_EVENTS if e["name"] == "OfferCreated"]
    (terms,) = [entry for entry in created["inputs"] if entry["name"] == "terms"]
    assert {field.alias or name for name, field in ListedTerms.model_fields.items()} == {
        c["name"] for c in terms["components"]
    }


def test_a_record_is_built_by_name_and_a_renamed_argument_is_refused():
    (opened,) = [e for c, e in ABI_EVENTS if e["name"] == "RentalOpened"]
    args = {
        "rentalId": 1 << 32 | 1,
        "offerId": 1,
        "renter": "0x" + "11" * 20,
        "pricePerSecond": 5,
        "duration": 60,
        "deposit": 300,
        "jobSpecHash": JOB,
    }
    log = {"blockNumber": 7, "logIndex": 2, "transactionHash": b"\x22" * 32}
    record = RentalOpened.from_log(list(reversed(opened["inputs"])), args, log)
    assert record == RentalOpened.from_log(opened["inputs"], args, log)
    assert (record.offer_id, record.price_per_second, record.job_spec_hash) == (1, 5, JOB)
    assert (record.block_number, record.log_index, record.tx_hash) == (7, 2, "0x" + "22" * 32)
    renamed = [dict(entry, name="specHash") if entry["name"] == "jobSpecHash" else entry for entry in opened["inputs"]]
    with pytest.raises(AbiMismatch, match="specHash"):
        RentalOpened.from_log(renamed, {**args, "specHash": JOB}, log)


def contract_logs(tx, address: str) -> list:
    """The raw logs (as `eth_getLogs` returns them) that `address` emitted in `tx`."""
    return [
        log
        for log in web3.eth.get_logs({"address": address, "fromBlock": tx.block_number, "toBlock": tx.block_number})
        if log["transactionHash"] == web3.to_bytes(hexstr=tx.txid)
    ]


def brownie_json(value):
    """A record's argument as Brownie decodes it: bytes as 0x-hex, arrays as lists."""
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, tuple):
        return [brownie_json(v) for v in value]
    return value


def assert_decoded_as_brownie_does(tx, contract_name: str, address: str) -> list[ChainEvent]:
    """Decodes the contract's logs of `tx` and checks each record against Brownie's own decoding of the log."""
    logs = contract_logs(tx, address)
    records = [decode_log(contract_name, log) for log in logs]
    expected = [event for event in tx.events if event.address == address]
    assert [r.name for r in records] == [e.name for e in expected]
    for record, log, event in zip(records, logs, expected):
        assert (record.block_number, record.log_index, record.tx_hash) == (tx.block_number, log["logIndex"], tx.txid)
        arguments = record.model_dump(by_alias=True, exclude=set(ChainEvent.LOG_FIELDS))
        assert {name: brownie_json(value) for name, value in arguments.items()} == {k: event[k] for k in event.keys()}
    return records


def apply_reports(suite, reports: list[Report], relayer):
    return suite.escrow.submitReports(*report_args(suite, reports), {"from": relayer})


def test_a_rentals_logs_decode_to_the_records_of_its_events(suite, offer, provider, renter, relayer):
    escrow = suite.escrow.address
    opened = suite.escrow.openRental(offer, 3_600, PRICE, JOB, {"from": renter})
    rental_id = opened.return_value
    started = suite.escrow.start(rental_id, {"from": provider})
    chain.sleep(30)
    chain.mine()
    since = started.timestamp
    unknown = rental_id + 1
    reported = apply_reports(
        suite,
        [
            Report(rental_id=rental_id, seq=1, covered_until=since + 20, delivered_seconds=18, util_seconds=13),
            Report(rental_id=unknown, seq=1, covered_until=since + 20, delivered_seconds=18, util_seconds=13),
            Report(rental_id=rental_id, seq=2, covered_until=since + 20, delivered_seconds=21, util_seconds=13),
        ],
        relayer,
    )
    claimed = suite.escrow.claimPayout(rental_id, {"from": relayer})
    terminated = suite.escrow.terminate(rental_id, {"from": renter})
    chain.sleep(SuiteParams().report_grace + 1)
    finalized = suite.escrow.finalize(rental_id, {"from": relayer})

    txs = (opened, started, reported, claimed, terminated, finalized)
    records = [r for tx in txs for r in assert_decoded_as_brownie_does(tx, "RentalEscrow", escrow)]

    assert [(r.name, r.rental_id) for r in records] == [
        ("RentalOpened", rental_id),
        ("RentalStarted", rental_id),
        ("ReportApplied", rental_id),
        ("ReportSkipped", unknown),
        ("ReportSkipped", rental_id),
        ("EarningsClaimed", rental_id),
        ("RentalTerminated", rental_id),
        ("RentalFinalized", rental_id),
    ]
    assert records[1].started_at == since and records[1].by_report is False
    applied = records[2]
    assert (applied.seq, applied.covered_until, applied.delivered_seconds, applied.util_seconds) == (
        1,
        since + 20,
        18,
        13,
    )
    assert (records[3].reason, records[4].seq, records[4].reason) == (
        SkipReason.UNKNOWN_RENTAL,
        2,
        SkipReason.DELIVERED_ABOVE_COVERED,
    )
    assert records[5].earned == records[5].provider_payout + records[5].fee > 0
    assert records[7].status is RentalStatus.EXPIRED


def test_a_declined_rental_decodes_with_its_reason(suite, offer, provider, renter):
    rental_id = suite.escrow.openRental(offer, 3_600, PRICE, JOB, {"from": renter}).return_value
    declined = suite.escrow.decline(rental_id, DeclineReason.GPUS_UNAVAILABLE, {"from": provider})

    records = assert_decoded_as_brownie_does(declined, "RentalEscrow", suite.escrow.address)

    assert [r.name for r in records] == ["RentalDeclined", "RentalFinalized"]
    assert records[0].reason is DeclineReason.GPUS_UNAVAILABLE and records[1].status is RentalStatus.DECLINED


def test_an_oracle_set_proposal_and_its_cancellation_decode(suite, deployer):
    signers = [o.address for o in ORACLES[:2]]
    proposed = suite.escrow.scheduleOracleSet(signers, 1, {"from": deployer})
    cancelled = suite.escrow.cancelOracleSet({"from": deployer})

    (proposal,) = assert_decoded_as_brownie_does(proposed, "RentalEscrow", suite.escrow.address)
    (cancellation,) = assert_decoded_as_brownie_does(cancelled, "RentalEscrow", suite.escrow.address)

    version = suite.read(lambda r: r.oracle_set()).version + 1
    assert (proposal.version, proposal.signers, proposal.threshold) == (version, tuple(signers), 1)
    assert proposal.effective_at == proposed.timestamp + SuiteParams().governance_delay
    assert cancellation.version == version


def test_an_offer_decodes_with_its_listed_terms(suite, offer, provider):
    hashes = [gpu_uuid_hash("GPU-events-test-l4")]
    registered = suite.registry.registerGpus(hashes, {"from": provider})
    terms = (b"L4".ljust(32, b"\0"), 23_034, 2 * PRICE, 60, 7_200, b"us-east".ljust(16, b"\0"), 5_000, True, hashes)
    created = suite.registry.createOffer(terms, {"from": provider})

    (gpus,) = assert_decoded_as_brownie_does(registered, "ProviderRegistry", suite.registry.address)
    (listed,) = [decode_log("ProviderRegistry", log) for log in contract_logs(created, suite.registry.address)]

    assert gpus.uuid_hashes == tuple(hashes) and gpus.provider == provider.address
    assert isinstance(listed, OfferCreated)
    assert (listed.offer_id, listed.provider) == (created.return_value, provider.address)
    assert listed.terms == ListedTerms(
        gpu_model=terms[0],
        vram_mib=23_034,
        price_per_second=2 * PRICE,
        min_duration=60,
        max_duration=7_200,
        region=terms[5],
        util_floor_bps=5_000,
        egress=True,
        gpu_uuid_hashes=tuple(hashes),
    )


def test_a_log_of_no_known_event_decodes_to_none(suite, offer, renter):
    opened = suite.escrow.openRental(offer, 3_600, PRICE, JOB, {"from": renter})
    (escrow_log,) = contract_logs(opened, suite.escrow.address)
    transfer = contract_logs(opened, suite.payment_token.address)[0]

    assert decode_log("ProviderRegistry", escrow_log) is None
    assert decode_log("RentalEscrow", transfer) is None
    assert decode_log("RentalEscrow", {**escrow_log, "topics": []}) is None
