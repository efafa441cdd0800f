"""`gpuex oracle serve|keeper`: one oracle of the k-of-n set, or a keeper on its own, until SIGINT or SIGTERM.

Both read `GPUEX_ORACLE_*` settings (`OracleSettings`: key, port, peers, submit, state directory, ...); the chain
comes from the deployment record and the command's network unless `GPUEX_ORACLE_CHAIN__*` is set.

`oracle keeper` sends `finalize` and `claimStartTimeout` for due rentals from the key it is given, through a
transaction manager of its own: give it a key and a state directory no other process sends from (anyone may
call both functions, so it needs no oracle's key), and run the oracles with `GPUEX_ORACLE_KEEPER=false` if this
keeper replaces theirs.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from pydantic import ValidationError

from offchain.chain.reads import ChainReader
from offchain.chain.rpc import connect
from offchain.chain.tx.manager import TxManager
from offchain.cli.args import ExitStatus, add_command, add_group, env_sets, invalid, stop_on_signals
from offchain.cli.keys import load_key
from offchain.cli.network import open_context
from offchain.config import OracleSettings
from offchain.oracle.keeper import Keeper
from offchain.oracle.service import KEEPER_FILE, TXMGR_FILE, OracleService

PREFIX = "GPUEX_ORACLE_"
log = logging.getLogger(__name__)


def register(commands: argparse._SubParsersAction) -> None:
    group = add_group(commands, "oracle", "oracle services")
    add_command(group, "serve", serve, "run an oracle (ingest, co-signing; batching and keeping in its turn)")
    add_command(group, "keeper", keeper, "run a keeper: finalise ended rentals, time out unstarted ones")


async def _settings(args: argparse.Namespace) -> tuple[OracleSettings, int]:
    """The oracle's settings and the deployment block the keeper scans from."""
    load_key(f"{PREFIX}KEY", f"{PREFIX}KEY_FILE")
    async with open_context(args, key=False) as ctx:
        chain = None if env_sets(f"{PREFIX}CHAIN") else ctx.deployment.chain_settings(ctx.rpc_url)
        start_block = ctx.deployment.start_block
    try:
        return (OracleSettings() if chain is None else OracleSettings(chain=chain)), start_block
    except ValidationError as exc:
        raise invalid(exc, f"{PREFIX}* settings") from None


def _logging(role: str) -> None:
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {role} %(name)s %(levelname)s %(message)s")


async def serve(args: argparse.Namespace) -> ExitStatus:
    settings, _ = await _settings(args)
    _logging("oracle")
    await OracleService(settings).run(stop_on_signals())
    return ExitStatus.OK


async def keeper(args: argparse.Namespace) -> ExitStatus:
    settings, start_block = await _settings(args)
    _logging("keeper")
    state = Path(settings.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    stop = stop_on_signals()
    w3 = connect(settings.chain.rpc_url)
    txmgr = TxManager(w3, state / TXMGR_FILE, settings.private_key, settings.chain.chain_id)
    keeper_service = Keeper(
        ChainReader(w3, settings.chain.registry, settings.chain.escrow),
        txmgr,
        state / KEEPER_FILE,
        start_block=start_block,
    )
    try:
        await txmgr.start()
        await keeper_service.start()
        log.info(
            "keeper %s on escrow %s, every %.1f s",
            txmgr.address,
            settings.chain.escrow,
            settings.keeper_interval_seconds,
        )
        await asyncio.gather(txmgr.run(stop), keeper_service.run(stop, settings.keeper_interval_seconds))
    finally:
        keeper_service.close()
        txmgr.close()
        await w3.provider.disconnect()
    return ExitStatus.OK
