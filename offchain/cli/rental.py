"""`gpuex rent`, `gpuex rental status|terminate|watch|claim`, `gpuex withdraw` and `gpuex faucet`: a renter's side
of the exchange, and the provider's claim of a running rental's earnings.

The job spec (JSON, `offchain.agent.jobspec.JobSpec`) stays off chain; its hash goes on chain with the rental.
`rent` uploads the body, with the values of its secret environment variables sealed to the agent's key, to the
renter API of the provider's agent (its URL is on chain, `gpuex provider set-agent-url`); the agent checks it
against the hash. A provider that publishes no agent URL finds specs by hash in its spec directory (where `rent`
writes them on the devnet) or at its `GPUEX_AGENT_SPEC_URL`. `gpuex rental send-spec|logs|results|shell` are in
`offchain.cli.access`.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from decimal import ROUND_FLOOR, Decimal
from enum import IntEnum
from pathlib import Path

import aiohttp

from offchain.agent.jobspec import JobSpecStore
from offchain.chain import events
from offchain.cli import access, parse
from offchain.cli.args import ExitStatus, UsageError, add_command, add_group, add_job_command
from offchain.cli.network import Context, open_context
from offchain.cli.output import Output, format_duration, format_gib, money, per_hour, percent_bps, when
from offchain.market.exchange import (
    ActionResult,
    AgentEndpoint,
    ExchangeError,
    NothingToClaim,
    NothingToWithdraw,
    RentalResult,
    Withdrawal,
)
from offchain.market.figures import RentalFigures
from offchain.market.offers import OfferRecord, TokenInfo
from offchain.market.rentals import RentalHistory, ReportPeriod
from offchain.ops import devnet
from offchain.protocol.renterapi import JobStatus
from offchain.web.telemetry import GpuView, TelemetryPoint, TelemetryRefused, fetch_telemetry

#: Reports `rental status` lists (the most recent ones); `--json` has them all.
SHOWN_REPORTS = 10
TELEMETRY_TIMEOUT_SECONDS = 10.0


def register(commands: argparse._SubParsersAction) -> None:
    rent_parser = add_command(commands, "rent", rent)
    rent_parser.add_argument("offer_id", type=parse.positive_int, metavar="OFFER")
    rent_parser.add_argument("--duration", type=parse.duration, required=True, help="e.g. 90m, 2h, 3600 (seconds)")
    access.add_spec_options(rent_parser)
    rent_parser.add_argument(
        "--max-price-per-hour",
        type=parse.price,
        metavar="PRICE",
        help="refuse a price above this (default: the price listed now)",
    )
    rent_parser.add_argument(
        "--approve",
        action="store_true",
        help="approve the escrow to take exactly the deposit if the allowance falls short",
    )
    rent_parser.add_argument(
        "--spec-dir",
        type=Path,
        metavar="DIR",
        help="also save the spec here as <hash>.json (default on the devnet: its spec directory)",
    )
    add_job_command(rent_parser)

    group = add_group(commands, "rental")
    for name, handler, text in (
        ("status", status, "state, coverage, delivered seconds, utilisation, earned, claimed, refunded, slash"),
        ("terminate", terminate, "end your rental now: cancel before the start, else refund the unused time"),
        (
            "watch",
            watch,
            "print each report (utilisation, delivered seconds) as it lands, and each GPU's live telemetry between "
            "reports, until settled",
        ),
        ("claim", claim, "credit the provider what a running rental has earned so far, less the fee"),
    ):
        parser = add_command(group, name, handler, text)
        parser.add_argument("rental_id", type=parse.positive_int, metavar="RENTAL")
        if name == "watch":
            parser.add_argument("--interval", type=float, default=2.0, help="seconds between polls (default 2)")
            parser.add_argument(
                "--oracle-url",
                metavar="URL",
                help="the oracle whose page serves the rental's live per-GPU telemetry (default: the devnet's oracle)",
            )
            parser.add_argument(
                "--no-telemetry", action="store_true", help="follow the chain's events only, without live telemetry"
            )

    access.register(group)

    add_command(commands, "withdraw", withdraw)
    add_command(commands, "faucet", faucet)


def _max_price_units(token: TokenInfo, per_hour_price: Decimal) -> int:
    """A price cap per hour as whole token units per second, rounded down (a cap never rounds up)."""
    units = token.per_second(per_hour_price, rounding=ROUND_FLOOR)
    if units <= 0:
        raise UsageError(f"--max-price-per-hour {per_hour_price} is below 1 token unit per second")
    return units


async def rent(args: argparse.Namespace) -> ExitStatus:
    out = Output(args)
    spec, secrets = access.load_spec_options(args)
    async with open_context(args, key=True) as ctx:
        token = await ctx.client.payment_token()
        max_price = None if args.max_price_per_hour is None else _max_price_units(token, args.max_price_per_hour)
        offer = await ctx.client.offer(args.offer_id)
        if (missing := await ctx.client.agent_missing(offer.provider, offer.reputation.agent)) is not None:
            out.warn(f"{missing}; renting offer {args.offer_id} anyway")
        try:
            agent_url: str | None = AgentEndpoint.of(offer).url
            no_url = None
        except ExchangeError as exc:  # no agent key (warned above), no agent URL, or one that cannot be used
            agent_url, no_url = None, str(exc)
        if agent_url is None and secrets:
            raise UsageError(
                f"offer {args.offer_id}'s provider publishes no agent URL: secret values travel only "
                "through its agent's renter API"
            )
        spec_dir = args.spec_dir or (
            devnet.spec_dir(ctx.devnet_dir) if ctx.devnet is not None and agent_url is None else None
        )
        if spec_dir is not None:
            JobSpecStore(spec_dir).put(spec)
        elif missing is None and no_url is not None:
            out.warn(f"{no_url}: the spec reaches its agent only if you publish it where the agent fetches specs")
        result = await ctx.client.open_rental(args.offer_id, args.duration, spec.spec_hash(), max_price, args.approve)
        rental = result.rental
        figures = await rental_figures(ctx, rental, offer)
        if agent_url is not None:
            try:
                await access.send_spec(ctx, rental.rental_id, spec, secrets, offer)
            except ExchangeError as exc:
                raise ExchangeError(
                    f"rental {rental.rental_id} is open, but {exc}; send it again with `gpuex rental send-spec "
                    f"{rental.rental_id} {access.spec_options(args)}` (a rental without its spec is declined and "
                    "refunded in full)"
                ) from None

    def human() -> None:
        out.sent(result)
        out.print(
            f"rental {rental.rental_id} opened on offer {rental.offer_id}: "
            f"{format_duration(rental.duration)} at {per_hour(token, rental.price_per_second)}, "
            f"deposit {money(token, rental.deposit)}"
        )
        if agent_url is not None:
            out.print(
                f"job spec {rental.job_spec_hash} sent to the provider's agent at {agent_url}"
                + (f", with {len(secrets)} sealed secret value(s)" if secrets else "")
            )
        if spec_dir is not None:
            out.print(f"job spec {rental.job_spec_hash} saved in {spec_dir}")
        elif agent_url is None:
            out.print(
                f"publish the job spec as {rental.job_spec_hash}.json where the provider's agent fetches specs "
                "(its GPUEX_AGENT_SPEC_URL)"
            )
        out.print(
            f"follow it with `gpuex rental watch {rental.rental_id}` and `gpuex rental logs "
            f"{rental.rental_id} --follow`"
        )

    spec_json = {"spec_dir": str(spec_dir) if spec_dir else None, "spec_sent_to": agent_url}
    out.emit({**result_json(result, figures), **spec_json}, human)
    return ExitStatus.OK


async def rental_figures(ctx: Context, rental: RentalHistory, offer: OfferRecord | None = None) -> RentalFigures:
    """The rental's record as `rental status --json` and the web API's `/api/rentals/<id>` both send it; `offer`
    is the rental's offer where the caller read it already (a rental takes only what never changes from it)."""
    token, stake_token = await ctx.client.payment_token(), await ctx.client.stake_token()
    offer = offer if offer is not None else await ctx.client.offer(rental.offer_id)
    return RentalFigures.of_rental(rental, offer, token, stake_token)


def result_json(result: RentalResult, figures: RentalFigures) -> dict:
    """What `rent --json`, `rental terminate --json` and `rental claim --json` print of an action on a rental:
    the transactions, then the rental's record (`figures`)."""
    return {**result.model_dump(mode="json", exclude={"rental"}), "rental": figures.model_dump(mode="json")}


_EVENT_KINDS = {
    events.RentalOpened: "opened",
    events.RentalStarted: "started",
    events.ReportApplied: "report",
    events.ReportSkipped: "skipped",
    events.EarningsClaimed: "claimed",
    events.RentalTerminated: "terminated",
    events.RentalDeclined: "declined",
    events.RentalFinalized: "finalized",
}


def event_json(event: events.RentalEvent) -> dict:
    """A rental's event as `rental watch --json` prints it: its `kind`, block and arguments but the rental id (bytes
    as 0x-hex, enums by name); a decline also says what its reason means."""
    fields = event.model_dump(exclude={"rental_id", "log_index", "tx_hash"})
    body = {"kind": _EVENT_KINDS[type(event)], **{name: _json_value(value) for name, value in fields.items()}}
    if isinstance(event, events.RentalDeclined):
        body["detail"] = event.reason.describe()
    return body


def _json_value(value: object) -> object:
    if isinstance(value, IntEnum):
        return value.name
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return value


def render_rental(out: Output, token: TokenInfo, stake_token: TokenInfo, r: RentalHistory) -> None:
    """`token` is the payment token; a slash is paid in `stake_token`."""
    s = r.settlement
    rows = [
        ("status", r.status.name.lower()),
        ("offer", r.offer_id),
        ("renter", r.renter),
        ("price", per_hour(token, r.price_per_second)),
        ("duration", format_duration(r.duration)),
        ("deposit", money(token, r.deposit)),
        ("job spec", r.job_spec_hash),
        ("started", when(r.started_at)),
        ("ends", when(r.ends_at)),
        ("covered until", when(r.covered_until)),
        ("delivered", f"{r.delivered_seconds:,} s of {r.covered_seconds:,} s covered"),
        ("utilisation", percent_bps(r.avg_util_bps)),
        ("earned", money(token, r.earned)),
        ("claimed", f"{money(token, r.claimed)} ({money(token, r.claimable)} claimable)"),
        ("refunded", money(token, r.refunded)),
    ]
    if r.decline_reason is not None:
        rows.insert(1, ("declined", f"{r.decline_reason.name.lower()}: {r.decline_reason.describe()}"))
    if s is not None:
        slash = (
            "none"
            if not s.slashed
            else f"{money(stake_token, s.slashed)} to the renter ({s.slash_reason.name.lower()})"
        )
        rows += [
            ("provider payout", money(token, s.provider_payout)),
            ("fee", money(token, s.fee)),
            ("missed", f"{s.missed_seconds:,} s"),
            ("slashed", slash),
        ]
    out.fields(f"rental {r.rental_id}", rows)
    periods = r.periods
    if periods:
        earlier = len(periods) - SHOWN_REPORTS
        out.print(f"reports ({earlier} earlier not shown):" if earlier > 0 else "reports:")
        for period in periods[max(earlier, 0) :]:
            out.print("  " + _report_line(token, period))
    for skipped in r.skipped[-SHOWN_REPORTS:]:
        out.print("  " + _skipped_line(skipped))


def _report_line(token: TokenInfo, period: ReportPeriod) -> str:
    report = period.report
    return (
        f"#{report.seq} to {when(report.covered_until)}: {period.delivered_seconds} s delivered of "
        f"{report.covered_until - period.start} s, utilisation {percent_bps(period.util_bps)}, earned "
        f"{money(token, period.earned)} ({report.delivered_seconds:,} s delivered in all)"
    )


def _skipped_line(skipped: events.ReportSkipped) -> str:
    return f"report #{skipped.seq} skipped: {skipped.reason.name.lower().replace('_', ' ')}"


async def status(args: argparse.Namespace) -> ExitStatus:
    out = Output(args)
    async with open_context(args, key=False) as ctx:
        token, stake_token = await ctx.client.payment_token(), await ctx.client.stake_token()
        rental = await ctx.client.rental(args.rental_id)
        offer = await ctx.client.offer(rental.offer_id)
        figures = await rental_figures(ctx, rental, offer)
        job, job_unavailable = await access.job_status(ctx, args.rental_id, offer)

    def human() -> None:
        render_rental(out, token, stake_token, rental)
        if job is not None:
            render_job(out, job)
        else:
            out.print(f"job: no status from the provider's agent: {job_unavailable}")

    out.emit(
        {
            **figures.model_dump(mode="json"),
            "job": None if job is None else job.model_dump(mode="json"),
            **job_outcome_json(rental, job),
            "job_unavailable": job_unavailable,
        },
        human,
    )
    return ExitStatus.OK


def job_outcome_json(rental: RentalHistory, job: JobStatus | None) -> dict:
    """How the job ended, in `rental status --json`: its exit code and result digest (from the provider's agent;
    the chain holds neither) and why it failed: the agent's reason, else the decline reason the chain holds."""
    failure = None
    if job is not None:
        failure = job.reason or job.decline_detail
        if failure is None and job.exit_code not in (None, 0):
            failure = f"exited with {job.exit_code}"
    if failure is None and rental.decline_reason is not None:
        failure = f"declined by the provider: {rental.decline_reason.describe()}"
    return {
        "exit_code": None if job is None else job.exit_code,
        "failure_reason": failure,
        "result_digest": None if job is None else job.result_digest,
    }


def render_job(out: Output, job: JobStatus) -> None:
    """What the provider's agent says of the job (its renter only)."""
    container = job.container
    rows = [
        ("isolation", job.isolation),
        ("image", job.image),
        ("GPUs", ", ".join(job.gpus) or None),
        ("container", None if container is None else f"{container.name} ({container.state})"),
        ("exit code", job.exit_code),
        ("failure reason", job.reason or job.decline_detail),
        ("result digest", job.result_digest),
        ("results", "ready: `gpuex rental results` downloads them" if job.results_available else None),
    ]
    if not job.spec_received:
        rows.insert(0, ("spec", "not received yet: `gpuex rental send-spec` sends it"))
    out.fields("job (from the provider's agent)", rows)


async def terminate(args: argparse.Namespace) -> ExitStatus:
    out = Output(args)
    async with open_context(args, key=True) as ctx:
        token, stake_token = await ctx.client.payment_token(), await ctx.client.stake_token()
        result = await ctx.client.terminate(args.rental_id)
        figures = await rental_figures(ctx, result.rental)

    def human() -> None:
        out.sent(result)
        render_rental(out, token, stake_token, result.rental)

    out.emit(result_json(result, figures), human)
    return ExitStatus.OK


def _event_line(token: TokenInfo, stake_token: TokenInfo, event: events.RentalEvent, rental: RentalHistory) -> str:
    """`token` is the payment token; a slash is paid in `stake_token`."""
    """`event` as `rental watch` prints it; `rental` is the rental with `event` applied."""
    match event:
        case events.RentalOpened():
            return (
                f"opened (block {event.block_number}): offer {event.offer_id}, "
                f"{format_duration(event.duration)} at {per_hour(token, event.price_per_second)}, "
                f"deposit {money(token, event.deposit)}"
            )
        case events.RentalStarted():
            return f"started at {when(event.started_at)}{' by its first report' if event.by_report else ''}"
        case events.ReportApplied():
            return "report " + _report_line(token, rental.periods[-1])
        case events.ReportSkipped():
            return _skipped_line(event)
        case events.EarningsClaimed():
            return (
                f"claimed: {money(token, event.provider_payout)} to the provider, fee {money(token, event.fee)} "
                f"({money(token, event.earned)} claimed in all)"
            )
        case events.RentalTerminated():
            return f"terminated: ends at {when(event.ends_at)}, {money(token, event.refund)} refunded"
        case events.RentalDeclined():
            return f"declined by the provider ({event.reason.name.lower()}): {event.reason.describe()}"
        case events.RentalFinalized():
            slash = (
                f", {money(stake_token, event.slashed)} slashed ({event.slash_reason.name.lower()})"
                if event.slashed
                else ""
            )
            return (
                f"settled {event.status.name.lower()}: {event.delivered_seconds} s delivered, "
                f"{event.missed_seconds} s missed; provider {money(token, event.provider_payout)} in all, "
                f"fee {money(token, event.fee)}, refund {money(token, event.refund)}{slash}"
            )
    raise AssertionError(event)


async def watch(args: argparse.Namespace) -> ExitStatus:
    """The rental's chain events as they come and, from an oracle's page, each period's per-GPU telemetry as the
    oracle receives it (`TelemetryWatch`), until the rental is settled."""
    out = Output(args)
    async with open_context(args, key=False) as ctx:
        token, stake_token = await ctx.client.payment_token(), await ctx.client.stake_token()
        floor = (await ctx.client.rental(args.rental_id)).util_floor_bps
        oracle_url = args.oracle_url or (ctx.devnet.oracle_url if ctx.devnet is not None else None)
        async with TelemetryWatch(out, None if args.no_telemetry else oracle_url, args.rental_id) as telemetry:
            telemetry.follow(args.interval)
            rental: RentalHistory | None = None
            async for event in ctx.client.watch_rental(args.rental_id, args.interval):
                if isinstance(event, events.RentalOpened):
                    rental = RentalHistory(opened=event, util_floor_bps=floor)
                elif rental is not None:
                    rental = rental.apply(event)
                if isinstance(event, events.RentalFinalized):
                    await telemetry.finish()  # its last periods before the line that ends the watch
                if out.json:
                    out.json_line(event_json(event))
                elif rental is not None:
                    out.print(_event_line(token, stake_token, event, rental))
    return ExitStatus.OK


class TelemetryWatch:
    """Polls an oracle's page for the rental's per-GPU telemetry (`offchain.web.telemetry`) and prints each new
    period: a line per GPU for people, a JSON line per period (`"kind": "telemetry"`) with `--json`. Does nothing
    without an oracle URL. A page that serves no telemetry, or refuses the request, is said once and no longer
    polled; an oracle that does not answer (or has not indexed the rental yet) is said once and polled again."""

    def __init__(self, out: Output, oracle_url: str | None, rental_id: int) -> None:
        self._out = out
        self._oracle_url = oracle_url
        self._rental_id = rental_id
        self._since = 0
        self._said: str | None = None
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> TelemetryWatch:
        if self._oracle_url is not None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TELEMETRY_TIMEOUT_SECONDS))
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._stop()
        if self._session is not None:
            await self._session.close()

    def follow(self, interval: float) -> None:
        """Starts polling every `interval` seconds in the background."""
        if self._session is not None:
            self._task = asyncio.create_task(self._poll_every(interval), name="telemetry watch")

    async def finish(self) -> None:
        """Stops polling, then prints what the oracle received since the last poll."""
        polling = self._task is not None
        await self._stop()
        if polling:
            await self._poll()

    async def _stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _poll_every(self, interval: float) -> None:
        while await self._poll():
            await asyncio.sleep(interval)

    async def _poll(self) -> bool:
        """Prints the new periods; whether polling again is worth it."""
        assert self._session is not None and self._oracle_url is not None
        try:
            page = await fetch_telemetry(self._session, self._oracle_url, self._rental_id, self._since)
        except TelemetryRefused as exc:
            final = exc.status != 503 and exc.error != "unknown_rental"
            self._say(f"live telemetry from {self._oracle_url}: {exc}" + ("" if final else "; trying again"))
            return not final
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            self._say(f"live telemetry: no answer from {self._oracle_url} ({exc or type(exc).__name__}); trying again")
            return True
        self._said = None
        for point in page.points:
            if self._out.json:
                self._out.json_line({"kind": "telemetry", **point.model_dump(mode="json")})
            else:
                for gpu in point.gpus:
                    self._out.print(_telemetry_line(point, gpu))
            self._since = point.seq
        return True

    def _say(self, text: str) -> None:
        if text != self._said:
            self._out.note(text)
            self._said = text


def _telemetry_line(point: TelemetryPoint, gpu: GpuView) -> str:
    """A GPU's figures over one report period, as `rental watch` prints them."""
    memory = ("-" if gpu.mem_used_mib is None else format_gib(gpu.mem_used_mib).removesuffix(" GiB")) + (
        "" if gpu.mem_total_mib is None else f" of {format_gib(gpu.mem_total_mib)}"
    )
    return (
        f"telemetry #{point.seq} to {when(point.covered_until)} {gpu.uuid[:12]}: "
        f"utilisation {'-' if gpu.util_pct is None else f'{gpu.util_pct:.1f}%'}, memory {memory}, "
        f"power {'-' if gpu.power_w is None else f'{gpu.power_w:.0f} W'}, "
        f"temperature {'-' if gpu.temp_c is None else f'{gpu.temp_c} °C'} ({gpu.samples} samples)"
    )


async def claim(args: argparse.Namespace) -> ExitStatus:
    out = Output(args)
    async with open_context(args, key=True) as ctx:
        token = await ctx.client.payment_token()
        try:
            result = await ctx.client.claim(args.rental_id)
        except NothingToClaim as exc:
            detail = str(exc)
            out.emit({"rental_id": args.rental_id, "claimed": None, "detail": detail}, lambda: out.print(detail))
            return ExitStatus.OK
        figures = await rental_figures(ctx, result.rental)
    (claimed,) = result.rental.claims[-1:]

    def human() -> None:
        out.sent(result)
        out.print(
            f"rental {args.rental_id}: {money(token, claimed.provider_payout)} credited to the provider, fee "
            f"{money(token, claimed.fee)}; withdraw it with `gpuex withdraw`"
        )

    out.emit({**result_json(result, figures), "claimed": event_json(claimed)}, human)
    return ExitStatus.OK


async def withdraw(args: argparse.Namespace) -> ExitStatus:
    async def act(ctx: Context, token: TokenInfo) -> tuple[ActionResult, str]:
        stake_token = await ctx.client.stake_token()
        try:
            result = await ctx.client.withdraw()
        except NothingToWithdraw:
            return Withdrawal(account=ctx.client.address, escrow_amount=0, compensation=0), "nothing to withdraw"
        compensation = f" and {money(stake_token, result.compensation)} of compensation" if result.compensation else ""
        return result, f"withdrew {money(token, result.escrow_amount)} from the escrow{compensation}"

    return await _account_action(args, act)


async def faucet(args: argparse.Namespace) -> ExitStatus:
    async def act(ctx: Context, token: TokenInfo) -> tuple[ActionResult, str]:
        result = await ctx.client.claim_faucet()
        return result, f"claimed {money(token, result.amount)}; balance {money(token, result.balance)}"

    return await _account_action(args, act)


async def _account_action(
    args: argparse.Namespace, act: Callable[[Context, TokenInfo], Awaitable[tuple[ActionResult, str]]]
) -> ExitStatus:
    """Runs `act` with the command's account and the payment token, then shows its result and summary line."""
    async with open_context(args, key=True) as ctx:
        result, summary = await act(ctx, await ctx.client.payment_token())
    Output(args).action(result, summary)
    return ExitStatus.OK
