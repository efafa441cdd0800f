"""`offchain.chain.reads`: every record is built by the ABI's field names, a contract whose names drift from its
record is refused, and the reader returns the suite's state as Brownie sees it."""

from __future__ import annotations

import asyncio

import pytest

from offchain.chain.contracts import abi
from offchain.chain.reads import AbiMismatch, ChainReader, Offer, Rental, SuiteParameters, read_once
from offchain.chain.rpc import ChainUnreachable
from offchain.protocol.messages import gpu_uuid_hash
from offchain.protocol.status import OfferStatus, RentalStatus
from scripts.deploy import USDC, SuiteParams
from tests.offchain.conftest import AGENT, GPU_UUIDS, ORACLES, PRICE


@pytest.fixture(autouse=True)
def isolation(fn_isolation):
    pass


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
    values = {
        "status": 2,
        "renter": ORACLES[0].address,
        "pricePerSecond": 5,
        "duration": 60,
        "since": 100,
        "utilFloorBps": 10_000,
        "feeBps": 250,
        "lastSeq": 3,
        "coveredSeconds": 30,
        "deliveredSeconds": 29,
        "utilSeconds": 20,
        "earned": 145,
        "claimed": 45,
    }
    (struct,) = outputs
    reordered = [{**struct, "components": list(reversed(struct["components"]))}]
    rental = Rental.from_returned(reordered, [values[c["name"]] for c in reordered[0]["components"]])
    assert rental == Rental.from_returned(outputs, [values[c["name"]] for c in struct["components"]])
    assert (rental.status, rental.last_seq, rental.covered_until, rental.end) == (RentalStatus.RUNNING, 3, 130, 160)
    assert (rental.util_seconds, rental.claimable) == (20, 100)


def test_a_renamed_or_missing_field_is_refused_by_name():
    (struct,) = _outputs("RentalEscrow", "getRental")
    components = [dict(c) for c in struct["components"]]
    components[7]["name"] = "lastSequence"
    with pytest.raises(AbiMismatch, match="lastSequence"):
        Rental.from_returned([{**struct, "components": components}], range(len(components)))
    with pytest.raises(AbiMismatch):
        Rental.from_returned([{**struct, "components": components[:-1]}], range(len(components) - 1))


def test_the_reader_returns_the_suite_state_by_name(suite, offer, provider, renter):
    rental_id = suite.escrow.openRental(offer, 120, PRICE, b"\x01" * 32, {"from": renter}).return_value

    async def reads(reader: ChainReader):
        return await asyncio.gather(
            reader.offer(offer),
            reader.rental(rental_id),
            reader.provider(provider.address),
            reader.agent_of(provider.address),
            reader.live_rental_of(offer),
            reader.oracle_set(),
            reader.offer_count(),
        )

    listed, rental, account, agent, live, oracles, count = suite.read(reads)
    assert isinstance(listed, Offer)
    assert (listed.provider, listed.status, listed.price_per_second, listed.vram_mib) == (
        provider.address,
        OfferStatus.ACTIVE,
        PRICE,
        81_559,
    )
    assert listed.gpu_uuid_hashes == tuple(gpu_uuid_hash(u) for u in GPU_UUIDS)
    assert (rental.status, rental.renter, rental.duration, rental.last_seq) == (
        RentalStatus.OPEN,
        renter.address,
        120,
        0,
    )
    assert account.agent == agent == AGENT.address and account.staked > 0
    assert live == rental_id and count == offer
    assert (oracles.signers, oracles.threshold) == (tuple(o.address for o in ORACLES), 2)


def test_the_reader_returns_the_suite_wiring_and_parameters(suite, deployer, accounts):
    async def reads(reader: ChainReader):
        return await asyncio.gather(
            reader.suite_settings(), reader.fee_config(), reader.start_timeout(), reader.report_grace()
        )

    settings, fee, start_timeout, report_grace = suite.read(reads)
    assert (settings.registry_escrow, settings.escrow_registry) == (suite.escrow.address, suite.registry.address)
    assert (settings.payment_token, settings.stake_token, settings.owner) == (
        suite.payment_token.address,
        suite.stake_token.address,
        deployer.address,
    )
    expected = SuiteParams()
    assert (fee.fee_bps, fee.treasury) == (expected.fee_bps, accounts[1].address)
    assert settings.parameters.model_dump() == {name: getattr(expected, name) for name in SuiteParameters.model_fields}
    assert (start_timeout, report_grace) == (expected.start_timeout, expected.report_grace)


def test_the_reader_returns_stakes_balances_and_token_amounts(suite, offer, provider, renter):
    token = suite.payment_token.address

    async def reads(reader: ChainReader):
        return await asyncio.gather(
            reader.provider(provider.address),
            reader.collateral_of(offer),
            reader.balances(renter.address),
            reader.token_balance(token, renter.address),
            reader.token_allowance(token, renter.address, suite.escrow.address),
            reader.token_metadata(token),
        )

    account, collateral, balances, balance, allowance, metadata = suite.read(reads)
    rental_id = suite.escrow.openRental(offer, 120, PRICE, b"\x01" * 32, {"from": renter}).return_value
    while_rented, *_ = suite.read(reads)
    suite.escrow.terminate(rental_id, {"from": renter})  # before the start: cancelled, the deposit credited back
    account_after, _, balances_after, balance_after, allowance_after, _ = suite.read(reads)

    assert (account.staked, account.locked, account.unbonding) == (10_000 * USDC, 0, 0)
    assert collateral == 2 * SuiteParams().min_stake_per_gpu and while_rented.locked == collateral
    assert account_after.locked == 0
    assert (balances_after.escrow - balances.escrow, balance - balance_after) == (120 * PRICE, 120 * PRICE)
    assert balances.compensation == balances_after.compensation == 0
    assert allowance == allowance_after == 2**256 - 1
    assert (metadata.address, metadata.symbol, metadata.decimals) == (token, "tUSD", 6)


def test_a_synchronous_caller_reads_once_over_a_connection_of_its_own(rpc_url, suite, offer):
    assert read_once(rpc_url, suite.registry.address, suite.escrow.address, lambda r: r.offer_count()) == offer


def test_an_unreachable_node_is_chain_unreachable(suite):
    with pytest.raises(ChainUnreachable):
        read_once("http://127.0.0.1:9", suite.registry.address, suite.escrow.address, lambda r: r.rental(1))
