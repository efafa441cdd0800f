"""Runs an outbox in its own process for the crash test: `python outbox_driver.py DB REPORTS ORACLE_URL...`.

Queues the reports of rental 1 with seq 1..REPORTS (continuing after the highest seq already queued, as an
agent continues its sequence after a restart), one every 20 ms, while delivering; exits 0 once every report is
queued and answered by every oracle.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from offchain.agent.outbox import Outbox, RetryPolicy
from offchain.sqlite import open_db
from tests.offchain.agent.helpers import signed_submission


async def main(db_path: Path, reports: int, oracles: list[str]) -> None:
    db = open_db(db_path)
    async with Outbox(db, oracles, retry=RetryPolicy(0.05, 0.2)) as outbox:
        delivery = asyncio.create_task(outbox.run(idle_poll_seconds=0.05))
        queued = db.execute("SELECT COALESCE(MAX(seq), 0) FROM outbox_reports").fetchone()[0]
        for seq in range(queued + 1, reports + 1):
            outbox.enqueue(signed_submission(seq))
            await asyncio.sleep(0.02)
        while outbox.pending_count():
            await asyncio.sleep(0.02)
        delivery.cancel()
        await asyncio.gather(delivery, return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]))
