"""`python -m offchain.oracle`: runs one oracle from `GPUEX_ORACLE_*` settings until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from pydantic import ValidationError

from offchain.config import KeyConfigError, OracleSettings
from offchain.oracle.service import OracleService


async def _main() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await OracleService(OracleSettings()).run(stop)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s oracle %(name)s %(levelname)s %(message)s")
    try:
        asyncio.run(_main())
    except (ValidationError, KeyConfigError) as exc:
        print(f"gpuex oracle: bad settings: {exc}".splitlines()[0], file=sys.stderr)
        sys.exit(2)
