"""`offchain.chain.reads`: every record is built by the ABI's field names, a contract whose names drift from its
record is refused, and the reader returns the suite's state as Brownie sees it."""

from __future__ import annotations

import asyncio

import pytest

from offchain.chain.contracts import abi
from offchain.chain.reads import AbiMismatch, ChainReader, Offer, Rental
from offchain.chain.rpc import ChainUnreachable, connect
from offchain.protocol.messages import gpu_uuid_hash
from offchain.protocol.status import OfferStatus, RentalStatus
from tests.offchain.conftest import AGENT, GPU_UUIDS, ORACLES, PRICE


@pytest.fixture(autouse=True)
def isolation(fn_isolation):
    pass


def read(rpc_url, suite, call):
    async def run():
        w3 = connect(rpc_url)
        try:
            return await call(ChainReader(w3, suite.registry.address, suite.escrow.address))
        finally:
            await w3.provider.disconnect()

    return asyncio.run(run())


def _outputs(contract_name: str, function: str) -> list[dict]:
    (entry,) = [e for e in abi(contract_name) if e["type"] == "function" and e["name"] == function]
    return entry["outputs"]


@pytest.mark.parametrize("record", list(ChainReader.RECORD_VIEWS), ids=lambda r: r.__name__)
def test_every_record_has_exactly_the_fields_its_view_returns(record):
    outputs = _outputs(*ChainReader.RECORD_VIEWS[record])
    named = outputs[0]["components"] if outputs[0]["type"] == "tuple" else outputs
    assert {o["name"] for o in named} == {f.alias or n for n, f in record.model_fields.items()}


def test_a_record_is_built_by_name_whatever_the_order_of_the_fields():
    outputs = _outputs("RentalEscrow", "getRental")
    values = {"status": 2, "renter": ORACLES[0].address, "pricePerSecond": 5, "duration": 60, "since": 100,
              "lastSeq": 3, "reportedSeconds": 30, "deliveredSeconds": 29, "earned": 145}
    reordered = list(reversed(outputs))
    rental = Rental.from_returned(reordered, [values[o["name"]] for o in reordered])
    assert rental == Rental.from_returned(outputs, [values[o["name"]] for o in outputs])
    assert (rental.status, rental.last_seq, rental.last_period_end, rental.end) == (RentalStatus.RUNNING, 3, 130, 160)


def test_a_renamed_or_missing_field_is_refused_by_name():
    outputs = [dict(o) for o in _outputs("RentalEscrow", "getRental")]
    outputs[5]["name"] = "lastSequence"
    with pytest.raises(AbiMismatch, match="lastSequence"):
        Rental.from_returned(outputs, range(len(outputs)))
    with pytest.raises(AbiMismatch):
        Rental.from_returned(outputs[:-1], range(len(outputs) - 1))


def test_the_reader_returns_the_suite_state_by_name(rpc_url, suite, offer, provider, renter):
    rental_id = suite.escrow.openRental(offer, 120, PRICE, b"\x01" * 32, {"from": renter}).return_value

    async def reads(reader: ChainReader):
        return await asyncio.gather(reader.offer(offer), reader.rental(rental_id), reader.provider(provider.address),
                                    reader.agent_of(provider.address), reader.live_rental_of(offer),
                                    reader.oracle_set(), reader.offer_count())

    listed, rental, account, agent, live, oracles, count = read(rpc_url, suite, reads)
    assert isinstance(listed, Offer)
    assert (listed.provider, listed.status, listed.price_per_second, listed.vram_mib) == (
        provider.address, OfferStatus.ACTIVE, PRICE, 81_559)
    assert listed.gpu_uuid_hashes == tuple(gpu_uuid_hash(u) for u in GPU_UUIDS)
    assert (rental.status, rental.renter, rental.duration, rental.last_seq) == (RentalStatus.OPEN, renter.address, 120, 0)
    assert account.agent == agent == AGENT.address and account.staked > 0
    assert live == rental_id and count == offer
    assert (oracles.signers, oracles.threshold) == (tuple(o.address for o in ORACLES), 2)


def test_an_unreachable_node_is_chain_unreachable(suite):
    with pytest.raises(ChainUnreachable):
        read("http://127.0.0.1:9", suite, lambda reader: reader.rental(1))
