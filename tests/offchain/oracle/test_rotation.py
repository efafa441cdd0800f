"""The submitter rotation (`offchain.oracle.rotation`) on a real anvil: a due report lands from the oracle whose turn
it is at once and from a fallback only a hand-off per rank later; the keeper takes its turn the same way, holds
`finalize` back while its oracle has a report to land (for a bounded time), and a keeper beaten to a call sends
nothing. Plus the turn order itself, the check against reportGrace and the settings.

The escrow of this module has a 1-of-3 oracle set, so one oracle's signature lands a batch and every oracle has a
rank."""

from __future__ import annotations

import asyncio
import warnings
from contextlib import asynccontextmanager
from typing import AsyncIterator

import aiohttp
import pytest
from brownie import chain
from pydantic import ValidationError

from offchain.chain.contracts import contract
from offchain.chain.reads import ChainReader
from offchain.chain.rpc import connect
from offchain.chain.tx.manager import TxManager
from offchain.chain.tx.store import TxState
from offchain.config import SubmitPolicy
from offchain.oracle.batcher import Batcher, LandingReason, landing_due_at
from offchain.oracle.chainview import ChainView
from offchain.oracle.keeper import Keeper
from offchain.oracle.metrics import OracleMetrics
from offchain.oracle.rotation import HandoffTooLong, Role, Rotation, check_handoff
from offchain.oracle.store import NewSubmission, ReportState, SubmissionStore, WaitingReport
from offchain.protocol.digest import TelemetryDomain
from offchain.protocol.reports import BatchSigner, ReportStatus
from scripts.deploy import SuiteParams, deploy_suite
from tests.offchain.chain.helpers import settle
from tests.offchain.conftest import ORACLES
from tests.offchain.oracle.helpers import PERIOD, RENTAL_SECONDS, report, submission
from tests.offchain.oracle.test_batcher import Leader, accept, land, states

PARAMS = SuiteParams()
SIGNERS = ("0x" + "a1" * 20, "0x" + "b2" * 20, "0x" + "c3" * 20)


@pytest.fixture(scope="module")
def suite(deployer, treasury, token):
    """Registry + escrow whose oracle set is the three oracles, any one of which lands a batch."""
    return deploy_suite(deployer, token, token, treasury, [o.address for o in ORACLES], 1, PARAMS)


def test_the_turn_of_a_due_time_picks_the_primary_and_the_fallbacks_follow_in_the_sets_order():
    turns = [Rotation(s, SubmitPolicy.ROTATE, 10) for s in SIGNERS]
    assert [r.rank(SIGNERS, 0) for r in turns] == [0, 1, 2]
    assert [r.rank(SIGNERS, 19) for r in turns] == [2, 0, 1]  # turn 1: signer 1 first
    assert [r.rank(SIGNERS, 50) for r in turns] == [1, 2, 0]  # turn 5: signer 5 mod 3
    assert Rotation(SIGNERS[1].upper().replace("0X", "0x"), SubmitPolicy.ROTATE, 10).rank(SIGNERS, 19) == 0


def test_a_fallback_acts_only_once_the_hand_offs_before_it_passed():
    second = Rotation(SIGNERS[1], SubmitPolicy.ROTATE, 10)  # rank 1 for a call due at 100 (turn 10, signer 1)...
    third = Rotation(SIGNERS[2], SubmitPolicy.ROTATE, 10)
    assert (second.rank(SIGNERS, 100), third.rank(SIGNERS, 100)) == (0, 1)
    assert [third.role(SIGNERS, 100, now) for now in (99, 100, 109, 110, 500)] == [None] * 3 + [Role.FALLBACK] * 2
    assert second.role(SIGNERS, 100, 99) is None and second.role(SIGNERS, 100, 100) is Role.PRIMARY


def test_policies_and_strangers():
    assert Rotation(SIGNERS[2], SubmitPolicy.ALWAYS, 10).role(SIGNERS, 100, 100) is Role.PRIMARY
    assert Rotation(SIGNERS[1], SubmitPolicy.NEVER, 10).role(SIGNERS, 100, 10**9) is None
    stranger = Rotation("0x" + "dd" * 20, SubmitPolicy.ROTATE, 10)
    assert (
        stranger.rank(SIGNERS, 100) is None and stranger.role(SIGNERS, 100, 10**9) is None
    )  # its signature counts not


def test_the_hand_off_must_leave_the_last_turn_within_half_the_report_grace():
    check_handoff(60, 30, 3, 300)  # the last fallback 150 s after the due time: half of 300
    check_handoff(10**6, 30, 1, 0)  # a lone oracle hands nothing off
    with pytest.raises(HandoffTooLong, match="handoff_seconds 61 too long.*at most 60"):
        check_handoff(61, 30, 3, 300)
    with pytest.raises(HandoffTooLong):
        check_handoff(1, 1, 3, 5)


def test_settings_submit_handoff_and_the_deprecated_leader(make_settings):
    assert make_settings(0).submit is SubmitPolicy.ROTATE
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert make_settings(0, leader=True).submit is SubmitPolicy.ALWAYS
        assert make_settings(0, leader=False).submit is SubmitPolicy.NEVER
    assert [w.category for w in caught] == [DeprecationWarning] * 2
    assert make_settings(0, leader=True, submit="always").leader is None
    with pytest.raises(ValidationError, match="leader .deprecated. and submit disagree"):
        make_settings(0, leader=True, submit="never")
    for bad in ({"submit": "sometimes"}, {"handoff_seconds": 0}, {"finalize_defer_seconds": -1}):
        with pytest.raises(ValidationError):
            make_settings(0, **bad)


def test_each_reason_has_a_due_time_every_oracle_computes_alike(suite, rental):
    state = suite.read(lambda r: r.rental(rental.rental_id))
    waiting = WaitingReport(rental.rental_id, 3, rental.since + 3 * PERIOD, ReportStatus.RUNNING, None)
    assert landing_due_at(waiting, state, LandingReason.FINAL, 600) == rental.since + 3 * PERIOD
    assert landing_due_at(waiting, state, LandingReason.TIME_UP, 600) == state.end
    assert landing_due_at(waiting, state, LandingReason.TERMINATED, 600) == state.end
    assert landing_due_at(waiting, state, LandingReason.CHECKPOINT, 600) == rental.since + 600
    later = waiting._replace(landed_until=rental.since + PERIOD)
    assert landing_due_at(later, state, LandingReason.CHECKPOINT, 600) == rental.since + PERIOD + 600


@asynccontextmanager
async def rotating_oracle(
    settings, handoff: int, policy: SubmitPolicy = SubmitPolicy.ROTATE, checkpoint_interval: int = 10**9
) -> AsyncIterator[Leader]:
    """Oracle 0's batcher (with its rotation), store, tx manager and chain view, as `OracleService` wires them."""
    w3 = connect(settings.chain.rpc_url)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    view = ChainView(w3, settings.chain)
    store = SubmissionStore(settings.state_dir / "oracle.sqlite3")
    txmgr = TxManager(w3, settings.state_dir / "txmgr.sqlite3", settings.private_key, settings.chain.chain_id)
    await txmgr.start()
    metrics = OracleMetrics()
    signer = BatchSigner(settings.private_key, settings.chain.chain_id, settings.chain.escrow)
    async with aiohttp.ClientSession() as session:
        batcher = Batcher(
            store=store,
            chain=view,
            txmgr=txmgr,
            session=session,
            escrow=contract(w3, "RentalEscrow", settings.chain.escrow),
            signer=signer,
            peers=[],
            max_batch_reports=settings.max_batch_reports,
            metrics=metrics,
            checkpoint_interval_seconds=checkpoint_interval,
            rotation=Rotation(signer.address, policy, handoff),
        )
        try:
            yield Leader(
                batcher, store, metrics, txmgr, TelemetryDomain(settings.chain.chain_id, settings.chain.registry), view
            )
        finally:
            txmgr.close()
            store.close()
            await w3.provider.disconnect()


def handoff_for_rank(suite, due_at: int, rank: int, above: int) -> int:
    """A hand-off longer than `above` seconds that gives oracle 0 `rank` for a report due at `due_at`."""
    signers = suite.read(lambda r: r.oracle_set()).signers
    return next(
        h
        for h in range(above + 1, 10_000)
        if Rotation(ORACLES[0].address, SubmitPolicy.ROTATE, h).rank(signers, due_at) == rank
    )


def test_a_fallback_lands_a_due_report_only_a_hand_off_after_it_was_due(settings, rental, suite):
    """Oracle 0 has rank 1 for the final report: its turn comes `handoff` after the report's coverage ended."""
    final = report(rental, 1, status=ReportStatus.COMPLETED)
    handoff = handoff_for_rank(suite, final.covered_until, 1, above=2 * PERIOD)
    chain.sleep(2 * PERIOD)
    chain.mine()

    async def scenario():
        async with rotating_oracle(settings, handoff) as oracle:
            accept(settings, oracle, final)
            assert await land(oracle) == []  # the primary's turn
            await asyncio.to_thread(lambda: (chain.sleep(handoff), chain.mine()))
            assert await land(oracle) == [(rental.rental_id, 1)]
            return oracle.metrics.render().splitlines()

    metrics = asyncio.run(scenario())
    assert 'gpuex_oracle_reports_submitted_total{role="fallback"} 1' in metrics
    assert suite.read(lambda r: r.rental(rental.rental_id)).last_seq == 1


def test_the_primary_lands_at_once_and_a_report_another_oracle_landed_is_not_sent_again(settings, rental, suite):
    final = report(rental, 1, status=ReportStatus.COMPLETED)
    handoff = handoff_for_rank(suite, final.covered_until, 0, above=2 * PERIOD)
    chain.sleep(2 * PERIOD)
    chain.mine()

    async def scenario():
        async with rotating_oracle(settings, handoff) as oracle:
            accept(settings, oracle, final)
            assert await land(oracle) == [(rental.rental_id, 1)]
            return oracle.metrics.render().splitlines(), len(oracle.txmgr.records())

    metrics, transactions = asyncio.run(scenario())
    assert 'gpuex_oracle_reports_submitted_total{role="primary"} 1' in metrics
    assert transactions == 1


def test_a_report_another_oracle_landed_is_settled_landed_without_a_transaction(settings, make_settings, rental, suite):
    """Oracle 1 (`always`) lands the final report; oracle 0 finds the rental settled with that seq applied and
    records the report landed, sending nothing."""
    final = report(rental, 1, status=ReportStatus.COMPLETED)
    chain.sleep(2 * PERIOD)
    chain.mine()
    other = make_settings(1)

    async def scenario():
        async with rotating_oracle(other, 60, SubmitPolicy.ALWAYS) as first:
            accept(other, first, final)
            assert await land(first) == [(rental.rental_id, 1)]
        async with rotating_oracle(settings, 60, SubmitPolicy.ALWAYS) as second:
            accept(settings, second, final)
            assert await land(second) == []
            return states(second, rental, [1]), len(second.txmgr.records())

    assert asyncio.run(scenario()) == ([ReportState.LANDED], 0)


@asynccontextmanager
async def keeper_of(settings, **options) -> AsyncIterator[tuple[Keeper, TxManager]]:
    w3 = connect(settings.chain.rpc_url)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    txmgr = TxManager(w3, settings.state_dir / "txmgr.sqlite3", settings.private_key, settings.chain.chain_id)
    reader = ChainReader(w3, settings.chain.registry, settings.chain.escrow)
    keeper = Keeper(reader, txmgr, settings.state_dir / "k.sqlite", **options)
    try:
        await txmgr.start()
        await keeper.start()
        yield keeper, txmgr
    finally:
        keeper.close()
        txmgr.close()
        await w3.provider.disconnect()


def pass_time(seconds: int) -> None:
    chain.sleep(seconds)
    chain.mine()


def test_the_keeper_holds_finalize_back_while_its_oracle_has_a_report_to_land_but_not_for_ever(settings, rental, suite):
    defer = 120
    store = SubmissionStore(settings.state_dir.parent / "store.sqlite3")
    pass_time(RENTAL_SECONDS + PARAMS.report_grace)
    held = submission(settings, report(rental, 1))
    domain = TelemetryDomain(settings.chain.chain_id, settings.chain.registry)
    store.add([NewSubmission(held, domain.digest(held.report), held.model_dump_json().encode())])
    key = f"finalize:{rental.rental_id}"

    async def scenario():
        async with keeper_of(settings, pending_seq=store.pending_seq, finalize_defer_seconds=defer) as (keeper, txmgr):
            assert await keeper.tick() == []  # seq 1 is pending above the chain's 0
            await asyncio.to_thread(pass_time, defer)
            (action,) = await keeper.tick()
            (record,) = await settle(txmgr, key)
            return action.tx_key, record.state

    try:
        assert asyncio.run(scenario()) == (key, TxState.CONFIRMED)
    finally:
        store.close()
    assert suite.read(lambda r: r.rental(rental.rental_id)).status.is_final


def test_keepers_take_turns_and_one_beaten_to_a_call_sends_nothing(settings, make_settings, rental, suite):
    """Oracle 0's keeper has rank 1 for the rental's finalize: it waits a hand-off, finds the rental finalised by
    the primary and sends nothing; a finalize submitted all the same fails its dry-run and is never broadcast."""
    due_at = suite.read(lambda r: r.rental(rental.rental_id)).end + PARAMS.report_grace
    handoff = handoff_for_rank(suite, due_at, 1, above=10)
    pass_time(RENTAL_SECONDS + PARAMS.report_grace)
    key = f"finalize:{rental.rental_id}"
    me = Rotation(ORACLES[0].address, SubmitPolicy.ROTATE, handoff)

    async def scenario():
        async with keeper_of(settings, rotation=me) as (mine, my_txmgr):
            assert await mine.tick() == []  # not its turn yet
            async with keeper_of(make_settings(1)) as (other, other_txmgr):  # keeps without turns: calls at once
                (action,) = await other.tick()
                await settle(other_txmgr, action.tx_key)
            await asyncio.to_thread(pass_time, handoff)
            assert await mine.tick() == []  # its turn: the rental is final, nothing to send
            await my_txmgr.submit(key, settings.chain.escrow, suite.escrow.finalize.encode_input(rental.rental_id))
            (record,) = await settle(my_txmgr, key)
            return record, my_txmgr.attempts(key)

    record, attempts = asyncio.run(scenario())
    assert record.state is TxState.FAILED and "Escrow_" in (record.error or "") and attempts == []
