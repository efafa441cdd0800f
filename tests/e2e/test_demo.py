"""`make demo` in CI: the whole demo (its own suite, the real oracles and agent in-process) on Brownie's anvil, run
once for the module; its ledger and settlements are checked here again, against the chain and the protocol's
arithmetic, not only through the demo's own checks."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from brownie import web3
from matplotlib.image import imread
from rich.console import Console

from offchain.protocol.reports import split_rental_id
from offchain.protocol.status import RentalStatus
from scripts.demo import BPS, PARAMS, DemoResult, Ending, run_demo

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> DemoResult:
    return run_demo(tmp_path_factory.mktemp("demo"), Console(width=132))


def test_every_check_of_the_demo_passes(demo):
    assert demo.failed == []


def test_the_ledger_sums_to_zero_and_matches_the_chain(demo):
    assert sum(row.change for row in demo.ledger) == 0
    token = demo.token.address
    balances = demo.suite.read(lambda r: asyncio.gather(*(r.token_balance(token, row.address) for row in demo.ledger)))
    assert [row.after for row in demo.ledger] == balances
    assert [row.after for row in demo.ledger if row.is_contract] == [0, 0]


def finalized(demo, rental_id: int) -> dict:
    escrow = web3.eth.contract(address=demo.suite.escrow.address, abi=demo.suite.escrow.abi)
    (log,) = escrow.events.RentalFinalized().get_logs(from_block=0, argument_filters={"rentalId": rental_id})
    return dict(log["args"])


def test_each_rental_ends_as_the_demo_plays_it(demo):
    completed, terminated, timed_out = (demo.settlement(e) for e in Ending)
    for settlement in (completed, terminated, timed_out):
        final = finalized(demo, settlement.rental_id)
        assert (RentalStatus(final["status"]), final["deliveredSeconds"]) == (
            settlement.status,
            settlement.delivered_seconds,
        )
    assert completed.status is RentalStatus.COMPLETED and not completed.terminated
    assert completed.delivered_seconds > 0 and completed.utilisation
    assert terminated.terminated and terminated.status is RentalStatus.EXPIRED
    assert terminated.refund == terminated.deposit - terminated.price_per_second * terminated.delivered_seconds > 0
    assert timed_out.status is RentalStatus.TIMED_OUT
    assert (timed_out.delivered_seconds, timed_out.provider_payout, timed_out.fee, timed_out.refund) == (
        0,
        0,
        0,
        timed_out.deposit,
    )


def test_providers_are_paid_price_times_delivered_seconds_less_the_fee(demo):
    started = [demo.settlement(Ending.COMPLETES), demo.settlement(Ending.TERMINATED)]
    for s in started:
        earned = s.price_per_second * s.delivered_seconds
        fee = earned * PARAMS.fee_bps // BPS
        assert (s.fee, s.provider_payout) == (fee, earned - fee)
    assert demo.row("provider A").change == sum(s.provider_payout - s.slashed for s in started)


def test_the_treasury_gets_the_fees(demo):
    assert demo.row("treasury").change == sum(s.fee for s in demo.settlements) > 0


def test_the_timed_out_providers_slash_goes_to_the_renter(demo):
    timed_out = demo.settlement(Ending.NEVER_STARTS)
    offer_id, _ = split_rental_id(timed_out.rental_id)
    slash = demo.suite.read(lambda r: r.collateral_of(offer_id)) * PARAMS.start_slash_bps // BPS
    assert timed_out.slashed == slash > 0
    assert demo.row(timed_out.provider).change == -slash
    renter_rentals = [s for s in demo.settlements if s.renter == timed_out.renter]
    assert demo.row(timed_out.renter).change == sum(s.refund - s.deposit + s.slashed for s in renter_rentals)


def test_the_plot_is_a_png(demo):
    assert demo.plot.read_bytes().startswith(PNG_SIGNATURE)
    height, width, _ = imread(demo.plot).shape
    assert width > 1000 and height > 400


def test_no_job_process_is_left_running(demo):
    children = [pid for pid in _children(os.getpid()) if "anvil" not in _cmdline(pid)]
    assert children == []


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
