"""Fixtures of the end-to-end tests: one suite on Brownie's anvil with a 2-of-3 oracle set, the provider staked
with the AGENT key, and `running_exchange`: three real `OracleService`s (2-of-3, each landing reports and keeping
in its turn) and one real `ProviderAgent` in-process on loopback (`offchain.ops.inprocess`, which the demo runs too).

The suite is deployed with a short start timeout and report grace so that every scenario runs on the wall clock:
the oracles judge reports by the wall clock (the agent keeps the chain's) and the chain stamps blocks with it, so
no scenario moves chain time (`chain.sleep`) and later scenarios are not thrown off by an earlier one.

Constants (keys, price) come from tests/offchain/conftest.py; the role, token and chain-settings fixtures from
tests/conftest.py.
"""

from __future__ import annotations

import itertools
import sqlite3
import uuid
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Mapping

import pytest

from offchain.config import ChainSettings
from offchain.ops import inprocess
from offchain.ops.cluster import OracleCluster
from offchain.ops.inprocess import ExchangeTimers, LocalExchange, ProviderMachine
from offchain.oracle.service import STORE_FILE
from offchain.protocol.messages import TelemetrySubmission, gpu_uuid_hash
from offchain.telemetry.source import TelemetrySource
from scripts.deploy import SuiteParams, deploy_suite
from tests.e2e.browser import browser  # noqa: F401  (the fixture, for every browser test here)
from tests.offchain.conftest import AGENT_KEY, ORACLE_KEYS, ORACLES, PRICE, fund_and_stake

#: Short timers so that the keeper's calls come due on the wall clock within seconds.
START_TIMEOUT = 8
REPORT_GRACE = 10
PARAMS = SuiteParams(start_timeout=START_TIMEOUT, report_grace=REPORT_GRACE)
UTIL_FLOOR_BPS = 10_000  # earnings = price x delivered seconds, whatever the utilisation

_gpu_names = itertools.count()


@pytest.fixture(scope="module")
def suite(deployer, treasury, token, provider, renter):
    """Registry + escrow with the 2-of-3 oracle set of ORACLE_KEYS; the provider staked with AGENT as its agent
    key, the renter funded. The agent and the oracles pay their own gas: their keys are anvil's dev accounts."""
    suite = deploy_suite(deployer, token, token, treasury, [o.address for o in ORACLES], 2, PARAMS)
    fund_and_stake(suite, token, deployer, provider, renter)
    return suite


@pytest.fixture(scope="module")
def list_offer(suite, provider):
    """Lists an offer of the given GPU UUIDs (by default two made-up ones) and returns its id."""

    def _list(uuids: list[str] | None = None, min_duration: int = 1) -> int:
        uuids = uuids or [f"GPU-{uuid.UUID(int=next(_gpu_names) + 0xE2E0000, version=4)}" for _ in range(2)]
        hashes = [gpu_uuid_hash(u) for u in uuids]
        suite.registry.registerGpus(hashes, {"from": provider})
        terms = (
            b"H100-80GB".ljust(32, b"\0"),
            81_559,
            PRICE,
            min_duration,
            86_400,
            b"eu-west".ljust(16, b"\0"),
            UTIL_FLOOR_BPS,
            False,
            hashes,
        )
        return suite.registry.createOffer(terms, {"from": provider}).return_value

    return _list


def running_exchange(
    chain_settings: ChainSettings, state_root: Path, provider: str, source: TelemetrySource | None
) -> AbstractAsyncContextManager[LocalExchange]:
    """The in-process exchange of ORACLE_KEYS and, if `source` is given, the provider's agent with AGENT_KEY."""
    machine = None if source is None else ProviderMachine(provider, AGENT_KEY, source)
    return inprocess.running_exchange(chain_settings, state_root, ORACLE_KEYS, machine)


#: Settings of every oracle process of `oracle_processes`: short epochs and hand-offs (the last of three turns
#: within half of REPORT_GRACE), simulated telemetry accepted. Every oracle lands reports and keeps in its turn.
CLUSTER_SETTINGS = {
    "ALLOW_SIMULATED": "true",
    "EPOCH_SECONDS": "1",
    "KEEPER_INTERVAL_SECONDS": "1",
    "HANDOFF_SECONDS": "2",
    "MAX_CLOCK_SKEW_SECONDS": "30",
}

#: Oracle 0 lands every report and keeps, the others only co-sign: the layout of the tests that follow what one
#: submitting oracle does (its quarantine, its recovery, its reorgs) without the others' turns in the way.
SINGLE_SUBMITTER = {0: {"SUBMIT": "always"}, 1: {"SUBMIT": "never"}, 2: {"SUBMIT": "never"}}


@asynccontextmanager
async def oracle_processes(
    chain_settings: ChainSettings,
    state_root: Path,
    settings: Mapping[str, str] | None = None,
    per_oracle: Mapping[int, Mapping[str, str]] | None = None,
) -> AsyncIterator[OracleCluster]:
    """The three oracles of ORACLE_KEYS as processes (`offchain.ops.cluster`), each with CLUSTER_SETTINGS and
    `settings`, and `per_oracle` on top; stopped on the way out. A failing test's
    message carries their logs."""
    cluster = OracleCluster(
        chain_settings,
        ORACLE_KEYS,
        state_root,
        {**CLUSTER_SETTINGS, **(settings or {})},
        per_oracle or {},
    )
    try:
        await cluster.start()
        yield cluster
    except BaseException as exc:
        exc.add_note(cluster.logs())
        raise
    finally:
        cluster.stop()


def running_agent(
    chain_settings: ChainSettings,
    state_root: Path,
    provider: str,
    source: TelemetrySource,
    oracle_urls: list[str],
    timers: ExchangeTimers | None = None,
) -> AbstractAsyncContextManager[LocalExchange]:
    """The provider's agent with AGENT_KEY (and the block producer) in this process, reporting to `oracle_urls`."""
    machine = ProviderMachine(provider, AGENT_KEY, source)
    return inprocess.running_agent(chain_settings, state_root, machine, oracle_urls, timers=timers or ExchangeTimers())


def stored_reports(state_root: Path, index: int, rental_id: int) -> list[tuple[TelemetrySubmission, str]]:
    """The submissions oracle `index` accepted for the rental, in seq order, with the state each reached on its way to
    the chain (`offchain.oracle.store.ReportState`)."""
    db = sqlite3.connect(state_root / f"oracle{index}" / STORE_FILE)
    try:
        rows = db.execute(
            "SELECT body, state FROM submissions WHERE rental_id = ? ORDER BY seq", (str(rental_id),)
        ).fetchall()
    finally:
        db.close()
    return [(TelemetrySubmission.model_validate_json(body), state) for body, state in rows]
