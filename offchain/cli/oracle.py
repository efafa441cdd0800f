"""`gpuex oracle serve|keeper`: one oracle of the k-of-n set, or a keeper on its own, until SIGINT or SIGTERM.

Both read `GPUEX_ORACLE_*` settings (`OracleSettings`: key, port, peers, submit, state directory, ...); the chain
comes from the deployment record and the command's network unless `GPUEX_ORACLE_CHAIN__*` is set.

`oracle status` shows what a running oracle waits for on its way to finality, read from its `/metrics`: the
confirmations it waits for, its transactions not final yet (by age), the reports in them, the reorgs it saw and
the reports it landed again after one.

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

import aiohttp
from pydantic import BaseModel, ConfigDict, ValidationError

from offchain.chain.reads import ChainReader
from offchain.chain.rpc import connect
from offchain.chain.tx.manager import TxManager
from offchain.cli.args import ExitStatus, UsageError, add_command, add_group, env_sets, invalid, stop_on_signals
from offchain.cli.keys import load_key
from offchain.cli.network import open_context
from offchain.cli.output import Output, format_duration
from offchain.cli.unit import add_unit_options, print_unit
from offchain.config import OracleSettings
from offchain.oracle.keeper import Keeper
from offchain.oracle.metrics import UNCONFIRMED_AGES, MetricsFormatError, parse_samples
from offchain.oracle.service import KEEPER_FILE, TXMGR_FILE, OracleService

PREFIX = "GPUEX_ORACLE_"
DEFAULT_STATUS_URL = "http://127.0.0.1:8700"
STATUS_TIMEOUT_SECONDS = 10.0
log = logging.getLogger(__name__)


def register(commands: argparse._SubParsersAction) -> None:
    group = add_group(commands, "oracle")
    serve_parser = add_command(
        group, "serve", serve, "run an oracle (ingest, co-signing; batching and keeping in its turn)"
    )
    add_unit_options(serve_parser, "oracle")
    keeper_parser = add_command(
        group, "keeper", keeper, "run a keeper: finalise ended rentals, time out unstarted ones"
    )
    add_unit_options(keeper_parser, "keeper")
    status_parser = add_command(group, "status", status, "what a running oracle waits for on its way to finality")
    status_parser.add_argument(
        "--url", default=DEFAULT_STATUS_URL, help="the oracle's base URL (default %(default)s)", metavar="URL"
    )


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
    if args.print_unit:
        print_unit(args, "gpuex oracle", runs_containers=False)
        return ExitStatus.OK
    settings, _ = await _settings(args)
    _logging("oracle")
    await OracleService(settings).run(stop_on_signals())
    return ExitStatus.OK


async def keeper(args: argparse.Namespace) -> ExitStatus:
    if args.print_unit:
        print_unit(args, "gpuex keeper", runs_containers=False)
        return ExitStatus.OK
    settings, start_block = await _settings(args)
    _logging("keeper")
    state = Path(settings.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    stop = stop_on_signals()
    w3 = connect(settings.chain.rpc_url)
    txmgr = TxManager(
        w3,
        state / TXMGR_FILE,
        settings.private_key,
        settings.chain.chain_id,
        confirmations=settings.chain.confirmations,
    )
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


class FinalityStatus(BaseModel):
    """What `oracle status` shows: an oracle's finality gauges and counters. The transaction figures are the
    batching oracle's; an oracle that sends nothing shows zeros."""

    model_config = ConfigDict(extra="forbid")

    url: str
    confirmations: int
    transactions_unconfirmed: dict[str, int]  # sent, not final, by age band (`UNCONFIRMED_AGES`)
    transactions_awaiting_confirmations: int  # mined, not yet `confirmations` deep
    oldest_unconfirmed_seconds: float
    reports_held: int
    reports_batched: int  # in a transaction not final yet
    reorgs: dict[str, int]  # by depth: unconfirmed, or final (deeper than the confirmations)
    reports_relanded: dict[str, int]  # by how: resent with their transaction, or rebatched

    @classmethod
    def of(cls, url: str, samples: dict[str, dict[str, float]]) -> FinalityStatus:
        def one(name: str) -> float:
            return samples.get(name, {}).get("", 0.0)

        def by_label(name: str) -> dict[str, int]:
            return {label: int(value) for label, value in samples.get(name, {}).items()}

        if "gpuex_oracle_confirmations" not in samples:
            raise MetricsFormatError("the page has no gpuex_oracle_confirmations: not a gpuex oracle's /metrics")
        unconfirmed = by_label("gpuex_oracle_tx_unconfirmed")
        return cls(
            url=url,
            confirmations=int(one("gpuex_oracle_confirmations")),
            transactions_unconfirmed={label: unconfirmed.get(label, 0) for label, _ in UNCONFIRMED_AGES},
            transactions_awaiting_confirmations=int(one("gpuex_oracle_tx_awaiting_confirmations")),
            oldest_unconfirmed_seconds=one("gpuex_oracle_tx_oldest_unconfirmed_seconds"),
            reports_held=int(one("gpuex_oracle_reports_held")),
            reports_batched=int(one("gpuex_oracle_reports_batched")),
            reorgs=by_label("gpuex_oracle_reorgs_total"),
            reports_relanded=by_label("gpuex_oracle_reports_relanded_total"),
        )


async def status(args: argparse.Namespace) -> ExitStatus:
    url = args.url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"--url must be an http(s) URL, not {args.url!r}")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=STATUS_TIMEOUT_SECONDS)) as session:
        async with session.get(f"{url}/metrics") as answer:
            if answer.status != 200:
                raise MetricsFormatError(f"{url}/metrics answered HTTP {answer.status}")
            text = await answer.text()
    result = FinalityStatus.of(url, parse_samples(text))
    out = Output(args)

    def human() -> None:
        waiting = sum(result.transactions_unconfirmed.values())
        ages = ", ".join(f"{count} {label}" for label, count in result.transactions_unconfirmed.items() if count)
        out.fields(
            f"oracle at {url}",
            [
                ("confirmations", f"{result.confirmations} blocks"),
                ("transactions not final", f"{waiting} ({ages})" if waiting else "none"),
                ("  mined, awaiting depth", result.transactions_awaiting_confirmations),
                (
                    "  oldest sent",
                    f"{format_duration(int(result.oldest_unconfirmed_seconds))} ago" if waiting else "-",
                ),
                ("reports waiting to land", result.reports_held),
                ("  in a transaction not final", result.reports_batched),
                ("reorgs seen", _counts(result.reorgs)),
                ("reports landed again", _counts(result.reports_relanded)),
            ],
        )

    out.emit(result, human)
    return ExitStatus.OK


def _counts(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    return f"{total} ({', '.join(f'{count} {label}' for label, count in sorted(counts.items()))})" if total else "none"
