"""Building signed reports and looking at what an oracle stored, for the oracle tests."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, NamedTuple

from aiohttp.test_utils import TestClient, TestServer
from brownie import web3

from offchain.config import OracleSettings
from offchain.oracle.app import DB_FILENAME, create_app
from offchain.protocol.messages import ZERO_ROOT, TelemetryReport, TelemetrySubmission, chain_root
from tests.offchain.conftest import AGENT_KEY, GPU_UUIDS

RENTAL_SECONDS = 3_600
PERIOD = 60


class Rental(NamedTuple):
    rental_id: int
    since: int


UTIL_PER_PERIOD = PERIOD * 95 // 100  # 95 % utilisation


def samples_root(seq: int) -> bytes:
    return seq.to_bytes(32, "big")


def root_after(seq: int) -> bytes:
    """The telemetry root of report `seq` of a rental whose reports are all `report`'s defaults (zero for 0)."""
    root = ZERO_ROOT
    for n in range(1, seq + 1):
        root = chain_root(root, samples_root(n))
    return root


def report(rental: Rental, seq: int = 1, **overrides: Any) -> TelemetryReport:
    """Cumulative report `seq` of a rental that reports every PERIOD seconds from `since`, all of it delivered at
    95 % utilisation, each report chained to the previous one's root."""
    start = rental.since + (seq - 1) * PERIOD
    values: dict[str, Any] = dict(
        rental_id=rental.rental_id,
        seq=seq,
        period_start=start,
        covered_until=start + PERIOD,
        delivered_seconds=seq * PERIOD,
        util_seconds=seq * UTIL_PER_PERIOD,
        peak_mem_mib=40_000,
        sample_count=PERIOD,
        gpu_uuids=GPU_UUIDS,
        prev_root=root_after(seq - 1),
        samples_root=samples_root(seq),
    )
    values.update(overrides)
    return TelemetryReport(**values)


def submission(settings: OracleSettings, telemetry: TelemetryReport, key: bytes = AGENT_KEY) -> TelemetrySubmission:
    """`telemetry` signed by `key` (the offer's agent unless told otherwise)."""
    signature = telemetry.sign(key, settings.chain.chain_id, settings.chain.registry)
    return TelemetrySubmission(report=telemetry, signature=signature)


def body(settings: OracleSettings, telemetry: TelemetryReport, key: bytes = AGENT_KEY) -> bytes:
    return submission(settings, telemetry, key).model_dump_json().encode()


@asynccontextmanager
async def oracle_client(settings: OracleSettings, **injected: Any) -> AsyncIterator[TestClient]:
    """A test client of an oracle app served on loopback."""
    async with TestClient(TestServer(create_app(settings, **injected), host="127.0.0.1")) as client:
        yield client


async def post(client: TestClient, path: str, data: bytes) -> tuple[int, dict]:
    async with client.post(path, data=data, headers={"Content-Type": "application/json"}) as response:
        return response.status, await response.json(content_type=None)


def db_rows(settings: OracleSettings) -> list[tuple]:
    """Every stored row, as SQLite has it (no rows if the database was never created)."""
    path = Path(settings.state_dir) / DB_FILENAME
    if not path.exists():
        return []
    with sqlite3.connect(path) as db:
        return db.execute("SELECT * FROM submissions ORDER BY id").fetchall()


def chain_state(suite, rental_id: int) -> tuple:
    """What a rejected request must not change on chain: the block height and the rental. It runs an event loop of
    its own: from a coroutine, call it in a thread."""
    return web3.eth.block_number, suite.read(lambda r: r.rental(rental_id))


def run(coroutine):
    return asyncio.run(coroutine)
