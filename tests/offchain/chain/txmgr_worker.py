"""A TxManager in its own process, for the crash tests: `python txmgr_worker.py MODE ...`, key in $TXMGR_WORKER_KEY.

Modes:
- `send-then-hang`: submits, ticks once (the transaction is sent), prints its record as JSON, then waits to be
  killed;
- `die-on-broadcast`: submits, ticks, and SIGKILLs itself right after the node accepted the transaction, before
  the database learnt of it;
- `resume`: submits the same key again (as a restarted oracle would), runs until it is final and prints its
  record as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

from pydantic import SecretStr

from offchain.chain.rpc import connect
from offchain.chain.tx.manager import TxManager


async def main(args: argparse.Namespace) -> int:
    w3 = connect(args.rpc_url)
    manager = TxManager(w3, args.db, SecretStr(os.environ["TXMGR_WORKER_KEY"]), args.chain_id)
    if args.mode == "die-on-broadcast":
        broadcast = manager._broadcast

        async def broadcast_then_die(raw: bytes):
            await broadcast(raw)
            os.kill(os.getpid(), signal.SIGKILL)

        manager._broadcast = broadcast_then_die
    await manager.start()
    await manager.submit(args.key, args.to, args.data)
    if args.mode == "resume":
        stop = asyncio.Event()
        runner = asyncio.create_task(manager.run(stop, interval=0.1))
        try:
            record = await manager.wait_confirmed(args.key, timeout=args.deadline)
        finally:
            stop.set()
            await asyncio.wait_for(runner, timeout=10)
        print(record.model_dump_json(), flush=True)
        return 0
    await manager.tick()
    print(manager.record(args.key).model_dump_json(), flush=True)
    await asyncio.sleep(args.deadline)
    return 3  # nobody killed it


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("send-then-hang", "die-on-broadcast", "resume"))
    parser.add_argument("--rpc-url", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--chain-id", type=int, required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--to", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--deadline", type=float, default=60.0)
    sys.exit(asyncio.run(main(parser.parse_args())))
