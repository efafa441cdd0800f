"""The agent's chain clock: the offset of the chain's time from the machine's clock, measured from block timestamps on
the real anvil, and the rules of its estimate (the largest lower bound in a window, a rewound chain measured
afresh, a skew beyond the bound logged as an ERROR)."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Callable

import aiohttp
import pytest
from brownie import chain, web3
from web3 import AsyncWeb3

from offchain.agent.chainclock import SKEW_LOG_INTERVAL_SECONDS, ChainClock
from offchain.agent.jobspec import JobSpecStore
from offchain.agent.service import ProviderAgent
from offchain.chain.rpc import connect
from offchain.protocol.renterapi import AgentInfo
from offchain.protocol.status import DeclineReason, RentalStatus
from tests.offchain.agent.harness import job, open_rental, rental_done, running, start_oracles
from tests.offchain.agent.test_service import book_row

SKEW = 20.0


class Ticker:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def chain_now() -> int:
    """What a block mined now would be stamped: anvil's pending block."""
    return int(web3.eth.get_block("pending")["timestamp"])


def machine_off_the_chain(skew: float) -> Callable[[], float]:
    """The clock of a machine `skew` seconds ahead of the chain's (behind when negative). Other suites on this anvil
    leave its clock off the wall clock (`chain.sleep`, reverts to a snapshot's time), so the skew is from the
    chain's time as it is now, not from the wall clock."""
    chain_ahead_of_wall = chain_now() + 0.5 - time.time()
    return lambda: time.time() + chain_ahead_of_wall + skew


class Clocks:
    """Chain clocks on the anvil at `rpc_url`, each with its own connection; `measured` measures one in an event
    loop of its own and closes the connection's session after."""

    def __init__(self, rpc_url: str) -> None:
        self._rpc_url = rpc_url
        self._connections: dict[int, AsyncWeb3] = {}

    def make(self, local: Callable[[], float] = time.time, bound: float = 30.0, **kwargs) -> ChainClock:
        w3 = connect(self._rpc_url)
        clock = ChainClock(w3, clock=local, max_skew_seconds=bound, **kwargs)
        self._connections[id(clock)] = w3
        return clock

    def measured(self, clock: ChainClock) -> ChainClock:
        async def measure() -> None:
            try:
                await clock.measure()
            finally:
                await self._connections[id(clock)].provider.disconnect()

        asyncio.run(measure())
        return clock


@pytest.fixture
def clocks(rpc_url) -> Clocks:
    return Clocks(rpc_url)


@pytest.mark.parametrize("skew", [SKEW, -SKEW], ids=["fast", "slow"])
def test_an_idle_chain_gives_the_offset_at_once(clocks, skew):
    clock = clocks.measured(clocks.make(machine_off_the_chain(skew)))
    # Timestamps are whole seconds and the estimate is a lower bound: within a second and a half, never ahead.
    assert clock.synchronised
    assert chain_now() - 1.5 <= clock.now() <= chain_now() + 1
    assert -skew - 2 <= clock.offset <= -skew + 1
    assert not clock.skewed


def test_before_any_block_the_clock_is_the_machines_and_not_synchronised(clocks):
    clock = clocks.make(lambda: 1_000.0)

    assert (clock.synchronised, clock.offset, clock.now(), clock.skewed) == (False, 0.0, 1_000.0, False)
    assert clock.status().model_dump() == {
        "synchronised": False,
        "offset_seconds": 0.0,
        "max_skew_seconds": 30,
        "skewed": False,
    }


def test_a_jump_of_the_chains_time_is_measured_and_a_revert_measured_afresh(clocks):
    clock = clocks.make()
    clocks.measured(clock)
    before = clock.offset
    chain.snapshot()
    try:
        chain.sleep(1_000)
        chain.mine()
        clocks.measured(clock)
        assert before + 998 <= clock.offset <= before + 1_001
    finally:
        chain.revert()
    # The latest block is now lower than one seen: the bounds of the chain that went are dropped.
    clocks.measured(clock)
    assert chain_now() - 1.5 <= clock.now() <= chain_now() + 1


def test_the_estimate_is_the_largest_lower_bound_in_the_window(clocks):
    ticker = Ticker()
    clock = clocks.make(lambda: 10_000.0, window_seconds=60, monotonic=ticker)

    clock.observe_latest(5, 10_003, seen_at=10_000.0)  # a fresh block: offset at least 3
    ticker.now = 10
    clock.observe_latest(6, 9_990, seen_at=10_000.0)  # an older stamp: the chain went back
    assert clock.offset == -10, "a rewound chain drops the earlier bounds"
    clock.observe(10_001, seen_at=10_000.0)
    clock.observe(9_999, seen_at=10_000.0)
    assert clock.offset == 1
    ticker.now = 200
    clock.observe(9_998, seen_at=10_000.0)
    assert clock.offset == -2, "bounds older than the window no longer count"
    ticker.now = 10_000
    assert clock.offset == -2, "the last bound stays when nothing newer came"


def test_the_same_latest_block_seen_again_gives_no_looser_bound(clocks):
    ticker = Ticker()
    clock = clocks.make(window_seconds=60, monotonic=ticker)

    clock.observe_latest(7, 1_000, seen_at=999.5)
    for step in range(1, 20):  # an idle chain: the same block for minutes
        ticker.now = 30.0 * step
        clock.observe_latest(7, 1_000, seen_at=999.5 + 30.0 * step)
    assert clock.offset == 0.5


def test_engine_times_convert_by_their_age_and_samples_by_the_offset(clocks):
    clock = clocks.make(lambda: 5_020.0)  # a machine clock 20 s fast of a system clock at 5,000
    clock.observe(5_001, seen_at=5_020.0)

    assert clock.to_chain(5_010.0) == 4_991.0
    assert clock.from_system_time(4_990.0, system_clock=lambda: 5_000.0) == 4_991.0
    assert clock.from_system_time(5_003.0, system_clock=lambda: 5_000.0) == 5_001.0, "no instant in the future"


def test_a_skew_beyond_the_bound_is_an_error_logged_once_a_while_and_in_the_status(clocks, caplog):
    caplog.set_level(logging.INFO, logger="offchain.agent.chainclock")
    clock = clocks.make(machine_off_the_chain(45), bound=30)

    clocks.measured(clock)
    clocks.measured(clock)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, "the error repeats only every SKEW_LOG_INTERVAL_SECONDS"
    assert "45" in errors[0].getMessage() and "ahead of the chain's" in errors[0].getMessage()
    status = clock.status()
    assert status.skewed and status.synchronised and -47 <= status.offset_seconds <= -44
    assert SKEW_LOG_INTERVAL_SECONDS >= 10

    clock.max_skew_seconds = 60
    clocks.measured(clock)
    assert not clock.skewed
    assert "within 60 s of the chain's again" in caplog.records[-1].getMessage()


def test_the_bounds_must_be_positive(clocks):
    with pytest.raises(ValueError, match="positive"):
        clocks.make(bound=0)


def test_an_agent_whose_clock_is_beyond_the_bound_says_so_and_declines_new_rentals(
    suite, renter, gpu_offer, agent_settings, caplog
):
    caplog.set_level(logging.INFO, logger="offchain.agent")
    listed = gpu_offer()
    settings = agent_settings([], max_clock_skew_seconds=10)
    spec = job("echo never")
    JobSpecStore(settings.spec_directory).put(spec)

    async def main() -> tuple[AgentInfo, int]:
        oracles = await start_oracles(settings, count=1)
        settings_ = settings.model_copy(update={"oracles": [oracles[0].url]})
        agent = ProviderAgent(settings_, listed.source, clock=machine_off_the_chain(-40))
        try:
            async with running(agent) as until, aiohttp.ClientSession() as http:
                await until(lambda: agent.chain_clock.skewed and agent.api.port is not None, 10, "the skew measured")
                async with http.get(f"http://127.0.0.1:{agent.api.port}/v1/agent") as response:
                    info = AgentInfo.model_validate_json(await response.read())
                rental = await open_rental(suite, renter, listed.offer_id, spec)
                await until(lambda: rental_done(agent, rental), 20, "the rental to be declined")
        finally:
            await oracles[0].stop()
        return info, rental

    info, rental = asyncio.run(main())

    assert info.clock is not None and info.clock.skewed and info.clock.max_skew_seconds == 10
    assert 38 <= info.clock.offset_seconds <= 41
    assert suite.read(lambda r: r.rental(rental)).status is RentalStatus.DECLINED
    row = book_row(settings, rental)
    assert row["decline_reason"] == DeclineReason.AGENT_FAILURE
    assert re.fullmatch(
        r"the provider machine's clock is \d+ s off the chain's, beyond the 10 s it allows", row["decline_detail"]
    )
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, errors
    assert "behind the chain's" in errors[0] and "new rentals are declined" in errors[0]
