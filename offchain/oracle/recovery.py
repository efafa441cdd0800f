"""Recovery of an oracle's accepted reports from its peers: the client of `GET /v1/reports`.

An oracle that lost its state directory (or was down while agents reported) fetches the agent-signed submissions
its peers hold and takes each one through `Ingest.submit`, exactly as if its agent had posted it: agent signature,
agent key and GPUs on chain, rental live, time bounds and continuity with what it holds. A peer's word counts for
nothing; a forged or altered report fails those checks and is counted, never stored. This runs once when the
oracle starts (every peer, the reports received within the report age limit) and when a report arrives that skips
seqs this oracle lacks (that rental only, at most once per rental every `fill_interval`).

Every read is bounded: at most `max_pages` pages of at most `page_reports` submissions from each peer, each page
read up to `max_page_bytes` and within `timeout` seconds; a peer that answers anything else is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import aiohttp
from pydantic import ValidationError

from offchain.chain.rpc import ChainUnreachable
from offchain.oracle.verify import Rejected
from offchain.protocol.messages import HeldReports

if TYPE_CHECKING:
    from offchain.oracle.ingest import Ingest

log = logging.getLogger(__name__)

REPORTS_PATH = "/v1/reports"
#: Most submissions one page of `GET /v1/reports` holds.
MAX_PAGE_REPORTS = 100
#: A rental's gap is filled from peers at most once in this many seconds.
FILL_INTERVAL_SECONDS = 30.0
#: Rentals whose last fill is remembered before the ones older than FILL_INTERVAL_SECONDS are forgotten.
MAX_TRACKED_FILLS = 10_000


@dataclass
class RecoveryOutcome:
    """What a recovery took from its peers: reports newly stored, already held, and refused (by reason), and the
    peers that could not be read."""

    accepted: int = 0
    duplicates: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    failed_peers: dict[str, str] = field(default_factory=dict)


class PeerUnusable(Exception):
    """A peer did not answer a page of held reports as the endpoint does."""


@dataclass
class PeerRecovery:
    """Pulls held reports from `peers` (base URLs) into `ingest`."""

    ingest: Ingest
    peers: Sequence[str]
    session: aiohttp.ClientSession
    max_report_age_seconds: float
    max_body_bytes: int
    max_pages: int = 1_000
    page_reports: int = MAX_PAGE_REPORTS
    timeout: float = 10.0
    fill_interval: float = FILL_INTERVAL_SECONDS
    clock: Callable[[], float] = time.time
    _filled_at: dict[int, float] = field(default_factory=dict)

    @property
    def max_page_bytes(self) -> int:
        """A page carries up to `page_reports` bodies of at most `max_body_bytes`, plus its envelope."""
        return self.page_reports * (self.max_body_bytes + 8) + 1024

    async def recover(self, rental_id: int | None = None) -> RecoveryOutcome:
        """Takes every report the peers hold (of `rental_id`, or of every rental) received within the report age
        limit, peer after peer."""
        outcome = RecoveryOutcome()
        since = self.clock() - self.max_report_age_seconds
        for peer in self.peers:
            try:
                await self._pull(peer.rstrip("/"), rental_id, since, outcome)
            except PeerUnusable as exc:
                outcome.failed_peers[peer] = str(exc)
        log.info(
            "recovered from peers%s: %d accepted, %d already held, refused %s, unreadable peers %s",
            "" if rental_id is None else f" for rental {rental_id}",
            outcome.accepted,
            outcome.duplicates,
            outcome.refused,
            outcome.failed_peers,
        )
        return outcome

    async def fill(self, rental_id: int, seq: int) -> None:
        """The `Ingest.gap_filler`: takes what the peers hold of the rental before a report `seq` that skips seqs,
        unless this rental's gap was filled less than `fill_interval` ago."""
        now = self.clock()
        if now - self._filled_at.get(rental_id, -self.fill_interval) < self.fill_interval:
            return
        if len(self._filled_at) >= MAX_TRACKED_FILLS:
            self._filled_at = {r: at for r, at in self._filled_at.items() if now - at < self.fill_interval}
        self._filled_at[rental_id] = now
        await self.recover(rental_id)

    async def _pull(self, peer: str, rental_id: int | None, since: float, outcome: RecoveryOutcome) -> None:
        after = 0
        for _ in range(self.max_pages):
            page = await self._page(peer, after, rental_id, since)
            submissions = sorted(page.submissions, key=lambda s: (s.report.rental_id, s.report.seq))
            for submission in submissions:
                try:
                    ack = await self.ingest.submit(submission, submission.model_dump_json().encode(), fill_gaps=False)
                except Rejected as exc:
                    outcome.refused[exc.reason.value] = outcome.refused.get(exc.reason.value, 0) + 1
                    continue
                except ChainUnreachable as exc:
                    raise PeerUnusable(f"the chain cannot be read to check its reports: {exc}") from exc
                if ack.duplicate:
                    outcome.duplicates += 1
                else:
                    outcome.accepted += 1
            if page.next_after is None:
                return
            if page.next_after <= after:
                raise PeerUnusable(f"its cursor went back from {after} to {page.next_after}")
            after = page.next_after
        log.warning("peer %s holds more than %d pages of reports; recovery stopped there", peer, self.max_pages)

    async def _page(self, peer: str, after: int, rental_id: int | None, since: float) -> HeldReports:
        params = {"after": str(after), "limit": str(self.page_reports), "since": str(int(since))}
        if rental_id is not None:
            params["rental_id"] = str(rental_id)
        try:
            async with self.session.get(
                peer + REPORTS_PATH, params=params, timeout=aiohttp.ClientTimeout(total=self.timeout)
            ) as response:
                if response.status != 200:
                    raise PeerUnusable(f"HTTP {response.status}")
                body = await self._read_bounded(response)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise PeerUnusable(f"{type(exc).__name__}: {exc}") from exc
        try:
            page = HeldReports.model_validate_json(body, strict=True)
        except ValidationError as exc:
            raise PeerUnusable(f"not a page of held reports: {exc.error_count()} validation error(s)") from exc
        if len(page.submissions) > self.page_reports:
            raise PeerUnusable(f"{len(page.submissions)} reports in a page of at most {self.page_reports}")
        return page

    async def _read_bounded(self, response: aiohttp.ClientResponse) -> bytes:
        """The response body, or PeerUnusable as soon as it grows past `max_page_bytes`."""
        too_large = PeerUnusable(f"a page over {self.max_page_bytes} bytes")
        if response.content_length is not None and response.content_length > self.max_page_bytes:
            raise too_large
        body = bytearray()
        async for chunk in response.content.iter_chunked(64 * 1024):
            body += chunk
            if len(body) > self.max_page_bytes:
                raise too_large
        return bytes(body)
