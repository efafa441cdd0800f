"""Simulated provider agents for the ingest benchmark and the scale simulation: signed telemetry requests, a
keep-alive HTTP/1.1 connection to the oracle on loopback, and the pinning that keeps the oracle on one core and
its load on another.

Requests are written by hand (a few hundred bytes of HTTP/1.1) and the agent key signs with coincurve, so that
the load generator costs a fraction of what the oracle it measures costs.
"""

from __future__ import annotations

import asyncio
import os
import re
import resource
from contextlib import contextmanager
from typing import Iterator, Sequence

from coincurve import PrivateKey
from eth_utils import keccak

from bench.fleet import FleetRental
from offchain.oracle.app import TELEMETRY_PATH
from offchain.protocol.digest import TelemetryDomain
from offchain.protocol.messages import ZERO_ROOT, TelemetryReport, TelemetrySubmission, chain_root

HOST = "127.0.0.1"


def core_plan() -> tuple[int, int]:
    """(the oracle's core, the load generator's core): two of the cores this process may use (one on a one-core
    machine). Read before pinning anything: a child inherits its parent's affinity."""
    cores = sorted(os.sched_getaffinity(0))
    return cores[0], cores[1 % len(cores)]


@contextmanager
def pinned(core: int) -> Iterator[None]:
    """Runs the block on `core` alone, then restores the affinity."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def cpu_seconds() -> float:
    """User and system CPU seconds of this process (all threads) so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


class ReportSigner:
    """Signs each rental's cumulative reports with its agent's key, as the agent does: report `seq` covers the
    rental's first `seq` periods, 90 % utilised, and its `prev_root` is the previous report's telemetry root."""

    def __init__(self, chain_id: int, registry: str, agent_keys: Sequence[bytes]) -> None:
        self._domain = TelemetryDomain(chain_id, registry)
        self._keys = [PrivateKey(k) for k in agent_keys]
        self._roots: dict[int, tuple[int, bytes]] = {}  # rental id -> (seq, telemetry root) of its latest report

    def report(self, rental: FleetRental, seq: int, period_seconds: int) -> TelemetryReport:
        """The `seq`-th report of the rental, its periods `period_seconds` long from the rental's start."""
        period_start = rental.since + (seq - 1) * period_seconds
        delivered = seq * period_seconds
        report = TelemetryReport(
            rental_id=rental.rental_id,
            seq=seq,
            period_start=period_start,
            covered_until=period_start + period_seconds,
            delivered_seconds=delivered,
            util_seconds=delivered * 9 // 10,
            peak_mem_mib=40_000,
            sample_count=period_seconds,
            gpu_uuids=rental.gpu_uuids,
            prev_root=self._root_before(rental.rental_id, seq),
            samples_root=_samples_root(seq),
            simulated=True,
        )
        self._roots[rental.rental_id] = (seq, report.telemetry_root)
        return report

    def body(self, rental: FleetRental, seq: int, period_seconds: int) -> bytes:
        """The JSON body of `POST /v1/telemetry` for the `seq`-th report of the rental, signed."""
        report = self.report(rental, seq, period_seconds)
        recoverable = self._keys[rental.agent].sign_recoverable(self._domain.digest(report), hasher=None)
        signature = recoverable[:64] + bytes((recoverable[64] + 27,))
        return TelemetrySubmission(report=report, signature=signature).model_dump_json().encode()

    def _root_before(self, rental_id: int, seq: int) -> bytes:
        """The telemetry root of the rental's report `seq - 1`: from the last one signed when that is it (reports are
        usually signed in order), else chained again from the first."""
        latest_seq, root = self._roots.get(rental_id, (0, ZERO_ROOT))
        if latest_seq != seq - 1:
            latest_seq, root = 0, ZERO_ROOT
        for earlier in range(latest_seq + 1, seq):
            root = chain_root(root, _samples_root(earlier))
        return root


def _samples_root(seq: int) -> bytes:
    """A stand-in for the Merkle root of a period's samples, distinct per period."""
    return keccak(seq.to_bytes(32, "big"))


def http_request(port: int, body: bytes) -> bytes:
    """`body` as a POST of a telemetry submission to the oracle on `port`, HTTP/1.1 written by hand."""
    return (
        f"POST {TELEMETRY_PATH} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


_CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length: *(\d+)")


class Connection:
    """One keep-alive HTTP/1.1 connection to the oracle; one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, port: int) -> "Connection":
        return cls(*await asyncio.open_connection(HOST, port))

    async def post(self, request: bytes) -> tuple[int, bytes]:
        """(HTTP status, body) of the answer to `request`."""
        self._writer.write(request)
        head = await self._reader.readuntil(b"\r\n\r\n")
        body = await self._reader.readexactly(int(_CONTENT_LENGTH.search(head).group(1)))
        return int(head[9:12]), body

    async def close(self) -> None:
        self._writer.close()
        await self._writer.wait_closed()
