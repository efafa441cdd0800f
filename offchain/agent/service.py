"""The provider agent's loop: rentals from the chain, their jobs in containers, telemetry, and signed reports to the
oracles.

For each rental opened on one of the provider's offers, the agent:

1. gets the job spec of the rental's `jobSpecHash` (`JobSpecStore`), waiting for it at most `spec_wait_seconds`
   (and never more than half the escrow's start timeout);
2. checks that it can serve the rental (`offchain.agent.admission`): the offer's GPUs are on this machine, the job
   has an image and asks for no more than the offer gives, and the image is here or can be pulled. A rental it
   cannot serve, or whose spec is invalid or never came, it declines at once (`RentalEscrow.decline`, with a
   reason code): the renter gets the whole deposit back and the provider is not slashed;
3. calls `escrow.start(rentalId)` with its agent key. When `start` reverts because the rental already runs
   (its first report started it, or an earlier life of this agent did), it carries on from the rental's
   on-chain state; reports then continue from the chain's `since`, `lastSeq`, `coveredSeconds` and totals.
   `start` and `decline` go through the agent's `TxManager` (`offchain.chain.tx.manager`, stored in
   `<state_dir>/txmgr.sqlite`) under the keys `start-<rentalId>` and `decline-<rentalId>`: each is dry-run
   before it is signed and persisted before it is sent, and an agent restarted between signing and mining
   waits for the transaction it sent instead of sending another;
4. runs the job in a hardened container (`offchain.agent.containers`) and, every `report_interval_seconds`,
   summarises the telemetry samples of the period (`offchain.telemetry.window.summarize`), adds them to the
   rental's running totals, signs the cumulative `TelemetryReport` (the totals since the rental's start, this
   period's samples root chained to the previous report's root) and commits it to the outbox together with the
   rental's next seq, period start, totals and root, so a restarted agent continues the totals where they were;
   with the report goes the period's per-GPU figures (`offchain.telemetry.window.gpu_period_stats`), signed
   apart (`offchain.protocol.gpustats`), which the oracles show live between on-chain checkpoints;
5. when the job exits, sends the completion report: Completed for exit code 0, Failed otherwise (including a
   job timeout, a job killed for its memory, and a command that could not be started), with the exit code and
   result digest, and keeps the reason in words for the renter. When the renter terminates the rental, or its
   paid time runs out, it stops the job and sends a last Running report up to the rental's end; the rental is
   then settled by `finalize`. A finalised rental stops its job without a report.

Containers are not the agent's children: one left running by an agent that crashed or was stopped is found again
by name when the agent restarts, which waits for it and reports on; nothing is reported twice (reports and their
seq are committed together). A job whose container is gone is launched again with its original deadline.
Seconds without samples while the agent was down are simply not delivered. Every finished rental's folder (its
workspace, results and logs) is removed after `workspace_retention_seconds`; a janitor also removes containers of
rentals that are done.

Nothing a rental brings can take the agent down: any error while preparing or running one rental ends that
rental (declined while it is open, else a Failed report with the reason) while the agent serves the others.

Everything a report carries is on the chain's time, which the rental runs on (its `since` and end are block
timestamps): the agent keeps a `ChainClock` (`offchain.agent.chainclock`) measured from the blocks it reads, paces
its samples on it, stamps them with it and closes periods by it, so a machine clock that is off neither loses the
rental's first seconds nor bills seconds after its job ended. A machine clock further than `max_clock_skew_seconds`
from the chain's is logged as an ERROR and makes the agent decline new rentals.

Simulated telemetry (a `TelemetrySource` whose `simulated` is True: the simulator, or a replayed trace) is
refused unless the settings allow it; when allowed, every log line of the agent says SIMULATED and every report
carries `simulated=True`. Running jobs as bare host processes (`unsafe_bare_process`, local chains only) labels
every log line too.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable

from eth_account import Account
from web3.exceptions import Web3Exception

from offchain.agent.admission import RentalRefused, admit, offer_gpus_here
from offchain.agent.api import RenterApi
from offchain.agent.chainclock import ChainClock
from offchain.agent.containers import EngineError, ImageUnavailable
from offchain.agent.job import NOT_STARTED_EXIT_CODE, ZERO_DIGEST, ContainerJob, Job, JobOutcome
from offchain.agent.jobspec import JobSpec, JobSpecInvalid, JobSpecMissing, JobSpecStore
from offchain.agent.launcher import JobLauncher, PreparedJob
from offchain.agent.outbox import Outbox, RetryPolicy
from offchain.agent.rentals import Phase, RentalBook, RentalRecord
from offchain.agent.settings import ProviderAgentSettings
from offchain.agent.watcher import ChainWatcher
from offchain.chain.reads import ChainReader, Rental
from offchain.chain.rpc import ChainUnreachable, connect
from offchain.chain.tx.manager import TxManager
from offchain.chain.tx.store import TxState
from offchain.protocol.digest import TelemetryDomain
from offchain.protocol.messages import ZERO_ROOT, TelemetryReport, TelemetrySubmission, sign_gpu_summary
from offchain.protocol.reports import ReportStatus
from offchain.protocol.status import DeclineReason, RentalStatus
from offchain.sqlite import open_db, transaction
from offchain.telemetry.models import GpuSample
from offchain.telemetry.nvml import NvmlSource
from offchain.telemetry.source import TelemetryError, TelemetrySource, TraceExhausted
from offchain.telemetry.ticks import ticks
from offchain.telemetry.window import UsageTotals, gpu_period_stats, summarize

log = logging.getLogger(__name__)

#: What a chain request fails with when a retry may succeed: the node did not answer, or answered with an error.
CHAIN_ERRORS = (ChainUnreachable, Web3Exception)
AGENT_LOGGERS = (
    "offchain.agent.service",
    "offchain.agent.api",
    "offchain.agent.chainclock",
    "offchain.agent.launcher",
    "offchain.agent.job",
    "offchain.agent.bareprocess",
    "offchain.agent.containers",
    "offchain.agent.jobspec",
    "offchain.agent.outbox",
    "offchain.agent.watcher",
)
SIMULATED_LABEL = "[SIMULATED TELEMETRY] "
UNSAFE_LABEL = "[UNSAFE: JOBS RUN AS BARE HOST PROCESSES] "


class SimulatedTelemetryRefused(RuntimeError):
    """The telemetry source is simulated and the agent was not started with `allow_simulated`."""


class _Label(logging.Filter):
    """Prefixes every record of the agent's loggers, so that no log line of a simulated or unsafe run reads as one
    of a real, isolated one."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.text):
            record.msg = self.text + str(record.msg)
        return True


@dataclass
class _SampleBuffer:
    """The samples of one rental's GPUs not yet covered by a report."""

    gpu_uuids: frozenset[str]
    samples: list[GpuSample] = field(default_factory=list)

    def add(self, tick: list[GpuSample]) -> None:
        self.samples.extend(s for s in tick if s.uuid in self.gpu_uuids)

    def drop_before(self, timestamp: int) -> None:
        self.samples = [s for s in self.samples if s.timestamp >= timestamp]


class ProviderAgent:
    """One provider machine's agent. `await agent.run()` until cancelled."""

    def __init__(
        self, settings: ProviderAgentSettings, source: TelemetrySource, *, clock: Callable[[], float] = time.time
    ) -> None:
        if source.simulated and not settings.allow_simulated:
            raise SimulatedTelemetryRefused(
                "the telemetry source is simulated (not a live measurement of this machine's GPUs); "
                "start the agent with allow_simulated only for development and demos"
            )
        assert settings.key is not None  # AgentSettings resolves the key or fails validation
        self._settings = settings
        self._source = source
        self._key = settings.key.get_secret_value()
        self.address = Account.from_key(self._key).address
        self._report_domain = TelemetryDomain(settings.chain.chain_id, settings.chain.registry)
        self._w3 = connect(settings.chain.rpc_url)
        self.chain_clock = ChainClock(self._w3, max_skew_seconds=settings.max_clock_skew_seconds, clock=clock)
        self._reader = ChainReader(self._w3, settings.chain.registry, settings.chain.escrow)
        self._escrow = self._reader.escrow
        self._db = open_db(settings.db_path)
        self.txmgr = TxManager(
            self._w3,
            settings.tx_db_path,
            settings.key,
            settings.chain.chain_id,
            confirmations=settings.chain.confirmations,
        )
        self.book = RentalBook(self._db, clock)
        self.jobs = JobLauncher(settings, self.book, self._key, real_gpus=not source.simulated, clock=clock)
        self.outbox = Outbox(
            self._db,
            settings.oracles,
            retry=RetryPolicy(settings.retry_initial_seconds, settings.retry_max_seconds),
            request_timeout_seconds=settings.http_timeout_seconds,
            clock=clock,
        )
        self._watcher = ChainWatcher(
            self._reader,
            settings.provider,
            self._db,
            start_block=settings.start_block,
            confirmations=settings.confirmations,
        )
        self._specs = JobSpecStore(settings.spec_directory, settings.spec_url, settings.http_timeout_seconds)
        self.api = (
            None
            if settings.api_port is None
            else RenterApi(
                settings,
                self._key,
                self.book,
                self.jobs,
                self._specs,
                self._db,
                self._ensure_runner,
                clock,
                self.chain_clock.status,
            )
        )
        self._wakeups: dict[int, asyncio.Event] = {}
        self._buffers: dict[int, _SampleBuffer] = {}
        self._job_pids: dict[int, int] = {}
        self._sampling = asyncio.Event()
        self._start_timeout: int | None = None
        self._group: asyncio.TaskGroup | None = None
        labels_ = ([_Label(SIMULATED_LABEL)] if source.simulated else []) + (
            [_Label(UNSAFE_LABEL)] if settings.unsafe_bare_process else []
        )
        self._labels = labels_

    @property
    def isolation(self) -> str:
        """How this agent runs jobs: `container`, or `bare-process` in the unsafe development mode."""
        return self.jobs.isolation

    async def run(self) -> None:
        """Runs the agent until cancelled; on the way out, stops the jobs it supervises unless it may leave
        their containers running for its next start."""
        self._install_labels()
        try:
            engine = self.jobs.engine
            if engine is None:
                log.warning(
                    "jobs run as bare processes of this agent's user, with no isolation: a job can read the "
                    "agent's key and every other rental's files. Development chains only."
                )
            log.info(
                "agent %s for provider %s: %d oracle(s), report every %.0f s, jobs in %s",
                self.address,
                self._settings.provider,
                len(self.outbox.oracles),
                self._settings.report_interval_seconds,
                "bare processes" if engine is None else f"{engine.name} containers",
            )
            if self.api is not None:
                await self.api.start()
            await self.txmgr.start()
            async with self.outbox, asyncio.TaskGroup() as group:
                self._group = group
                group.create_task(self.txmgr.run(asyncio.Event()))  # stops when the group is cancelled
                group.create_task(self.outbox.run())
                group.create_task(self._clock_loop())
                group.create_task(self._sample_loop())
                for record in self.book.unfinished():
                    log.info("resuming rental %d (%s)", record.rental_id, record.phase)
                    self._ensure_runner(record.rental_id)
                group.create_task(self._watch_loop())
                group.create_task(self._janitor_loop())
        finally:
            self._group = None
            if self.api is not None:
                await self.api.stop()
            try:  # what finished rentals left (a removal the stop interrupted) goes now, not at the next start
                await asyncio.wait_for(self.jobs.clean_up(active=()), self._settings.container.command_timeout_seconds)
            except (EngineError, OSError, TimeoutError) as exc:
                log.warning("clean-up on the way out failed: %s", exc)
            self._db.close()
            self.txmgr.close()
            await self._w3.provider.disconnect()
            self._remove_labels()

    def _install_labels(self) -> None:
        for label in self._labels:
            for name in AGENT_LOGGERS:
                logging.getLogger(name).addFilter(label)

    def _remove_labels(self) -> None:
        for label in self._labels:
            for name in AGENT_LOGGERS:
                logging.getLogger(name).removeFilter(label)

    # ---------------------------------------------------------------- chain events

    async def _clock_loop(self) -> None:
        """Measures the chain's clock every `chain_poll_seconds` (`offchain.agent.chainclock`)."""
        while True:
            try:
                await self.chain_clock.measure()
            except CHAIN_ERRORS as exc:
                log.warning("chain clock: reading blocks failed: %r", exc)
            await asyncio.sleep(self._settings.chain_poll_seconds)

    async def _synchronise(self) -> None:
        """Measures the chain's clock now unless it has been: a rental is never timed on this machine's clock
        alone. Raises the chain's errors, which the rental's runner retries."""
        if not self.chain_clock.synchronised:
            await self.chain_clock.measure()

    def _check_skew(self) -> None:
        """Refuses a new rental while this machine's clock is beyond the bound from the chain's."""
        clock = self.chain_clock
        if clock.skewed:
            raise RentalRefused(
                DeclineReason.AGENT_FAILURE,
                f"the provider machine's clock is {abs(clock.offset):.0f} s off the chain's, beyond the "
                f"{clock.max_skew_seconds:.0f} s it allows",
            )

    async def _watch_loop(self) -> None:
        while True:
            try:
                batch = await self._watcher.poll()
            except CHAIN_ERRORS as exc:
                log.warning("chain poll failed: %r", exc)
                await asyncio.sleep(self._settings.chain_poll_seconds)
                continue
            with transaction(self._db):
                known = [event for event in batch.events if self.book.apply(event)]
                self._watcher.save_cursor(batch)
            if batch.rewound:
                log.warning("chain: blocks from %d left the chain; their events are read again", batch.next_block)
                for record in self.book.unfinished():  # each re-reads its rental from the chain as it is now
                    self._ensure_runner(record.rental_id)
            for event in known:
                log.info("chain: %s", event)
                self._ensure_runner(event.rental_id)
            if batch.caught_up:
                await asyncio.sleep(self._settings.chain_poll_seconds)

    def _ensure_runner(self, rental_id: int) -> None:
        """Starts the rental's runner, or wakes it so it rereads the rental."""
        if rental_id in self._wakeups:
            self._wakeups[rental_id].set()
            return
        record = self.book.get(rental_id)
        if record is None or record.phase is Phase.DONE or self._group is None:
            return
        self._wakeups[rental_id] = asyncio.Event()
        self._group.create_task(self._run_rental(rental_id))

    # ---------------------------------------------------------------- one rental

    async def _run_rental(self, rental_id: int) -> None:
        """Takes a rental from wherever it is to done. Chain failures retry the whole step, which is idempotent;
        any other error ends this rental only."""
        try:
            while True:
                try:
                    record = self._record(rental_id)
                    if record.phase is Phase.OPENED:
                        await self._open(record)
                    record = self._record(rental_id)
                    if record.phase is Phase.RUNNING:
                        await self._supervise(record)
                    return
                except CHAIN_ERRORS as exc:
                    log.warning("rental %d: chain request failed, retrying: %r", rental_id, exc)
                    await self._sleep_or_wake(rental_id, self._settings.chain_poll_seconds)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a rental's trouble must never end the agent: contain it to this rental
            log.exception("rental %d: unexpected error: %s", rental_id, exc)
            await self._contain(rental_id, f"the provider's agent failed: {type(exc).__name__}: {exc}")
        finally:
            self._wakeups.pop(rental_id, None)
            self._buffers.pop(rental_id, None)
            self._forget_job(rental_id)
            if self.api is not None:
                self.api.close_shells(rental_id)
            last = self.book.get(rental_id)
            if last is not None and last.phase is Phase.DONE:
                self.jobs.forget_secrets(rental_id)
            if not self._buffers:
                self._sampling.clear()

    async def _contain(self, rental_id: int, detail: str) -> None:
        """Ends a rental whose handling failed: declined while it is open, else a Failed report; the rental is
        closed in the book whatever happens here."""
        try:
            record = self._record(rental_id)
            if record.phase is Phase.OPENED:
                await self._decline(record, DeclineReason.AGENT_FAILURE, detail)
            elif record.phase is Phase.RUNNING:
                await self._fail_running(record, detail)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("rental %d: could not end it cleanly: %s", rental_id, exc)
        last = self.book.get(rental_id)
        if last is not None and last.phase is not Phase.DONE:
            self.book.finish(rental_id, f"abandoned: {detail}")

    def _record(self, rental_id: int) -> RentalRecord:
        record = self.book.get(rental_id)
        assert record is not None
        return record

    async def _open(self, record: RentalRecord) -> None:
        """Gets the spec, checks the rental can be served here and starts it on chain (or finds it started);
        declines it when it cannot be served."""
        rental_id = record.rental_id
        if record.decline_reason is not None:
            await self._decline(record, DeclineReason(record.decline_reason), record.decline_detail or "")
            return
        state = await self._rental_state(rental_id)
        if not state.status.is_live:
            self.book.finish(rental_id, f"not started: rental is {state.status.name}")
            return
        await self._synchronise()
        try:
            self._check_skew()
            spec = await self._await_spec(record, state)
            if spec is None:
                return
            prepared = await self._prepare(record, spec, state)
        except RentalRefused as refusal:
            if state.status is RentalStatus.OPEN:
                await self._decline(record, refusal.reason, refusal.detail)
                return
            # Already running (a report started it): too late to decline, so the job fails at once instead.
            self._mark_started(record, state)
            await self._fail_running(self._record(rental_id), refusal.detail)
            return
        # Sample from before the start is sent: the rental is billed from the start block's timestamp, and a
        # sampler that waited for the receipt would miss that first second and count it as not delivered. The
        # sample taken here covers the current second, whose mid-second tick may already have passed.
        buffer = self._buffers[rental_id] = _SampleBuffer(frozenset(prepared.gpu_uuids))
        try:
            buffer.add(self._on_chain_time(await self._source.sample()))
        except TelemetryError as exc:
            log.warning("telemetry sample failed: %s", exc)
        self._sampling.set()
        state, _ = await self._send_agent_tx(rental_id, "start", rental_id)
        if state.status not in (RentalStatus.RUNNING, RentalStatus.TERMINATED):
            self.book.finish(rental_id, f"not started: rental is {state.status.name}")
            log.warning("rental %d cannot be started: it is %s", rental_id, state.status.name)
            return
        self._mark_started(record, state)
        log.info(
            "rental %d started at %d on %d GPU(s): %s",
            rental_id,
            state.since,
            len(prepared.gpu_uuids),
            " ".join(prepared.spec.argv)[:200],
        )

    def _mark_started(self, record: RentalRecord, state: Rental) -> None:
        self.book.mark_started(
            record.rental_id,
            since=state.since,
            ends_at=state.end,
            next_seq=state.last_seq + 1,
            period_start=state.covered_until,
            totals=UsageTotals(delivered_seconds=state.delivered_seconds, util_seconds=Fraction(state.util_seconds)),
            # The chain keeps no root: chaining starts from zero (an oracle holding nothing checks the chain's totals).
            prev_root=ZERO_ROOT,
        )

    async def _await_spec(self, record: RentalRecord, state: Rental) -> JobSpec | None:
        """The rental's job spec, waited for until its deadline (then `RentalRefused`); None once the rental is
        no longer open. A spec that is the renter's but invalid is refused at once."""
        deadline = state.since + min(self._settings.spec_wait_seconds, await self._start_timeout_seconds() / 2)
        while True:
            try:
                spec = await self._specs.get(record.spec_hash)
                if self.jobs.has_secrets(record.rental_id, spec):
                    return spec
                raise JobSpecMissing(
                    "the sealed values of its secret environment variables have not arrived "
                    "(the renter uploads them with the spec)"
                )
            except JobSpecInvalid as exc:
                raise RentalRefused(DeclineReason.SPEC_INVALID, str(exc)) from exc
            except JobSpecMissing as exc:
                if self.chain_clock.now() >= deadline:
                    raise RentalRefused(DeclineReason.SPEC_MISSING, f"no job spec arrived in time: {exc}") from exc
                log.warning("rental %d: %s", record.rental_id, exc)
            state = await self._rental_state(record.rental_id)
            if not state.status.is_live:
                self.book.finish(record.rental_id, f"no job spec while open; rental is {state.status.name}")
                return None
            await self._sleep_or_wake(
                record.rental_id, min(self._settings.chain_poll_seconds, max(0.05, deadline - self.chain_clock.now()))
            )

    async def _prepare(self, record: RentalRecord, spec: JobSpec, state: Rental | None = None) -> PreparedJob:
        """Checks that this machine can serve the rental (`offchain.agent.admission`) and has the image;
        raises `RentalRefused` when it cannot."""
        offer = await self._reader.offer(record.offer_id)
        gpu_uuids = offer_gpus_here(offer.gpu_uuid_hashes, (gpu.uuid for gpu in self._source.gpus()), record.offer_id)
        engine = self.jobs.engine
        if engine is None:
            return PreparedJob(spec, gpu_uuids, None)
        allowance = admit(spec, self._settings.container, gpu_count=len(gpu_uuids), offer_egress=offer.egress)
        pull_window = None
        if state is not None:
            # A pull must end in time to start the rental (or decline it) before the start timeout.
            pull_window = state.since + await self._start_timeout_seconds() * 3 / 4 - self.chain_clock.now()
            if pull_window <= 0:
                raise RentalRefused(
                    DeclineReason.IMAGE_UNAVAILABLE,
                    f"no time left to get image {allowance.image} before the start timeout",
                )
        try:
            await engine.ensure_image(allowance.image, timeout=pull_window)
        except ImageUnavailable as exc:
            raise RentalRefused(DeclineReason.IMAGE_UNAVAILABLE, str(exc)) from exc
        return PreparedJob(spec, gpu_uuids, allowance)

    async def _decline(self, record: RentalRecord, reason: DeclineReason, detail: str) -> None:
        """Declines the rental on chain with `reason` (the decision is kept first, so a restarted agent sends the
        same decline), then closes it."""
        rental_id = record.rental_id
        if record.decline_reason is None:
            self.book.set_decline(rental_id, int(reason), detail)
            log.warning("rental %d: declining (%s): %s", rental_id, reason.name, detail)
        while True:
            state, failure = await self._send_agent_tx(rental_id, "decline", rental_id, int(reason))
            status = state.status
            if status is RentalStatus.DECLINED:
                self.book.finish(rental_id, f"declined ({reason.name}): {detail}")
                log.info("rental %d declined: the renter is refunded in full", rental_id)
                return
            if status is not RentalStatus.OPEN:
                self.book.finish(rental_id, f"not declined: rental is {status.name}")
                return
            if failure is not None:
                self.book.finish(rental_id, f"not declined: {failure}")
                return
            if self.chain_clock.now() > state.since + await self._start_timeout_seconds():
                self.book.finish(rental_id, "not declined before the start timeout")
                return
            await self._sleep_or_wake(rental_id, self._settings.chain_poll_seconds)

    async def _send_agent_tx(self, rental_id: int, function: str, *args: Any) -> tuple[Rental, str | None]:
        """Sends the escrow's `function(*args)` through the agent's TxManager and waits until it is mined (not until
        it is `confirmations` deep: a job must run from the start the rental is billed from, and a reorg only makes
        the manager send the transaction again); returns the rental's state on chain and, when the transaction
        failed for good, why. The idempotency key `<function>-<rentalId>`
        makes a restarted agent wait for the transaction it sent before its crash instead of sending another. A
        transaction that failed (its dry-run reverted once the rental had moved on, such as a renter who
        terminated first) is never sent again: the state says where the rental is."""
        key = f"{function}-{rental_id}"
        await self.txmgr.submit(key, self._escrow.address, self._escrow.encode_abi(function, args=list(args)))
        failure = None
        try:
            record = await self.txmgr.wait_mined(key, self._settings.tx_timeout_seconds)
        except TimeoutError:
            log.info(
                "rental %d: %s not mined within %.0f s; reading the rental",
                rental_id,
                function,
                self._settings.tx_timeout_seconds,
            )
        else:
            if record.state not in (TxState.FAILED, TxState.FATAL):
                log.info("rental %d: %s tx %s mined", rental_id, function, record.hash)
            else:
                failure = f"{function} {record.state.value}: {record.error}"
                log.warning("rental %d: %s; reading the rental", rental_id, failure)
        return await self._rental_state(rental_id), failure

    async def _rental_state(self, rental_id: int) -> Rental:
        return await self._reader.rental(rental_id)

    async def _start_timeout_seconds(self) -> int:
        """The escrow's start timeout (immutable: read once)."""
        if self._start_timeout is None:
            self._start_timeout = await self._reader.start_timeout()
        return self._start_timeout

    async def _sync_from_chain(self, record: RentalRecord) -> RentalRecord:
        """Takes the rental's end and state from the chain, for events missed while the agent was down."""
        state = await self._rental_state(record.rental_id)
        status = state.status
        self.book.sync_chain(
            record.rental_id,
            ends_at=state.end,
            terminated=record.terminated or status is RentalStatus.TERMINATED,
            finalized=record.finalized or status.is_final or status is RentalStatus.NONE,
        )
        return self._record(record.rental_id)

    async def _supervise(self, record: RentalRecord) -> None:
        """Runs the job (or takes over the one an earlier life of the agent left running) and reports until the
        rental is done."""
        rental_id = record.rental_id
        await self._synchronise()
        try:
            prepared = await self._prepare(record, await self._specs.get(record.spec_hash))
        except (RentalRefused, JobSpecMissing, JobSpecInvalid) as exc:
            await self._fail_running(record, getattr(exc, "detail", str(exc)))
            return
        record = await self._sync_from_chain(record)
        if record.finalized:
            await self.jobs.discard(record)
            self.book.finish(rental_id, "finalized on chain")
            return
        buffer = self._buffers.get(rental_id)
        if buffer is None:  # an agent restarted mid-rental: what it did not sample while down is not delivered
            buffer = self._buffers[rental_id] = _SampleBuffer(frozenset(prepared.gpu_uuids))
        self._sampling.set()
        assert record.ends_at is not None  # taken from the chain just above
        if record.terminated or self.chain_clock.now() >= record.ends_at:
            await self.jobs.discard(record)
            await self._close_period(record, prepared.gpu_uuids, buffer)
            return

        try:
            job = await self.jobs.job_for(record, prepared)
        except asyncio.CancelledError:
            if not self._settings.keep_jobs_on_exit:  # stopped while launching: the launch goes too
                await asyncio.shield(self.jobs.discard(self._record(rental_id)))
            raise
        self.book.set_job_started(rental_id, job.started_at)
        self._watch_job_pid(rental_id, job)
        exit_task = asyncio.create_task(job.wait())
        api = self.api
        if api is not None:
            exit_task.add_done_callback(lambda _: api.close_shells(rental_id))
        try:
            await self._report_until_done(rental_id, prepared.gpu_uuids, buffer, job, exit_task)
        except asyncio.CancelledError:
            if isinstance(job, ContainerJob) and self._settings.keep_jobs_on_exit:
                exit_task.cancel()
                await asyncio.gather(exit_task, return_exceptions=True)
                log.info("rental %d: container %s keeps running for the agent's next start", rental_id, job.name)
            elif isinstance(job, ContainerJob):
                await asyncio.shield(job.stop())
                await asyncio.gather(exit_task, return_exceptions=True)
                await asyncio.shield(self.jobs.remove_container(self._record(rental_id)))
            raise
        finally:
            if not exit_task.done():
                await asyncio.shield(job.stop())
                await asyncio.shield(exit_task)
        await self.jobs.remove_container(self._record(rental_id))

    def _watch_job_pid(self, rental_id: int, job: Job) -> None:
        """Tells NVML which processes are jobs, so that a sample says whether a job is on each GPU."""
        if job.host_pid is not None:
            self._job_pids[rental_id] = job.host_pid
            self._update_expected_pids()

    def _forget_job(self, rental_id: int) -> None:
        if self._job_pids.pop(rental_id, None) is not None:
            self._update_expected_pids()

    def _update_expected_pids(self) -> None:
        if isinstance(self._source, NvmlSource):
            self._source.expected_pids = set(self._job_pids.values())

    async def _report_until_done(
        self,
        rental_id: int,
        gpu_uuids: tuple[str, ...],
        buffer: _SampleBuffer,
        job: Job,
        exit_task: asyncio.Task[JobOutcome],
    ) -> None:
        interval = self._settings.report_interval_seconds
        wakeup = self._wakeups[rental_id]
        while True:
            record = self._record(rental_id)
            assert record.period_start is not None and record.ends_at is not None
            if exit_task.done():
                await self._complete(record, gpu_uuids, buffer, exit_task.result())
                return
            if record.finalized:
                await job.stop()
                self._record_exit(rental_id, await exit_task)
                self.book.finish(rental_id, "finalized on chain")
                log.info("rental %d finalised on chain: job stopped", rental_id)
                return
            now = self.chain_clock.now()
            if record.terminated or now >= record.ends_at:
                log.info(
                    "rental %d %s: stopping the job",
                    rental_id,
                    "terminated by the renter" if record.terminated else "reached its end",
                )
                await job.stop()
                self._record_exit(rental_id, await exit_task)
                await self._close_period(record, gpu_uuids, buffer)
                return
            if now >= record.period_start + interval:
                self._commit_report(record, gpu_uuids, buffer, int(now))
                continue
            wakeup.clear()
            sleep = min(record.period_start + interval, record.ends_at) - now
            woken = asyncio.ensure_future(wakeup.wait())
            try:
                await asyncio.wait({exit_task, woken}, timeout=sleep, return_when=asyncio.FIRST_COMPLETED)
            finally:
                woken.cancel()

    def _record_exit(self, rental_id: int, outcome: JobOutcome) -> None:
        self.book.record_exit(rental_id, outcome.as_exit())

    async def _complete(
        self, record: RentalRecord, gpu_uuids: tuple[str, ...], buffer: _SampleBuffer, outcome: JobOutcome
    ) -> None:
        """The completion report of a job that exited by itself (or timed out)."""
        status = ReportStatus.COMPLETED if outcome.succeeded else ReportStatus.FAILED
        log.info(
            "rental %d: job exited with %d%s: reporting %s",
            record.rental_id,
            outcome.exit_code,
            f" ({outcome.reason})" if outcome.reason else "",
            status.name,
        )
        finished_at = outcome.finished_at
        period_end = await self._period_end(
            record, None if finished_at is None else self.chain_clock.from_system_time(finished_at)
        )
        if period_end is None:
            self._record_exit(record.rental_id, outcome)
            self.book.finish(record.rental_id, f"job {status.name.lower()} after the rental's end")
            return
        self._commit_report(record, gpu_uuids, buffer, period_end, status=status, outcome=outcome)

    async def _fail_running(self, record: RentalRecord, reason: str) -> None:
        """Ends a started rental whose job cannot run (any more) with a Failed report that says why."""
        log.error("rental %d: the job cannot run: %s", record.rental_id, reason)
        await self.jobs.discard(record)
        outcome = JobOutcome(NOT_STARTED_EXIT_CODE, ZERO_DIGEST, timed_out=False, stopped=False, reason=reason)
        record = await self._sync_from_chain(record)
        period_end = None if record.finalized else await self._period_end(record)
        try:
            offer = await self._reader.offer(record.offer_id)
            gpu_uuids = offer_gpus_here(
                offer.gpu_uuid_hashes, (gpu.uuid for gpu in self._source.gpus()), record.offer_id
            )
        except RentalRefused:
            period_end = None  # a report names the offer's GPUs, and they are no longer here
        if period_end is None:
            self._record_exit(record.rental_id, outcome)
            self.book.finish(record.rental_id, f"failed: {reason}")
            return
        buffer = self._buffers.get(record.rental_id) or _SampleBuffer(frozenset(gpu_uuids))
        self._commit_report(record, gpu_uuids, buffer, period_end, status=ReportStatus.FAILED, outcome=outcome)

    async def _close_period(self, record: RentalRecord, gpu_uuids: tuple[str, ...], buffer: _SampleBuffer) -> None:
        """The last Running report, up to the rental's end, of a rental that ended before its job did."""
        period_end = await self._period_end(record)
        if period_end is None:
            self.book.finish(record.rental_id, "ended; every second was already reported")
            return
        self._commit_report(record, gpu_uuids, buffer, period_end, done="ended before the job")

    async def _period_end(self, record: RentalRecord, at: float | None = None) -> int | None:
        """The end of a rental's last period, in chain time: now (or `at`, when the job ended earlier), but at most
        the rental's end and at least one second after the period start (waiting for it); None when the period
        start already reached the end."""
        assert record.period_start is not None and record.ends_at is not None
        if record.period_start >= record.ends_at:
            return None
        earliest = record.period_start + 1
        now = self.chain_clock.now()
        if now < earliest:
            await asyncio.sleep(earliest - now)
        now = self.chain_clock.now()
        end = now if at is None else min(now, math.ceil(at))
        return min(max(int(end), earliest), record.ends_at)

    def _commit_report(
        self,
        record: RentalRecord,
        gpu_uuids: tuple[str, ...],
        buffer: _SampleBuffer,
        period_end: int,
        *,
        status: ReportStatus = ReportStatus.RUNNING,
        outcome: JobOutcome | None = None,
        done: str | None = None,
    ) -> None:
        """Builds, signs and queues the cumulative report up to `period_end`, with the samples of [period_start,
        period_end), advancing the rental's seq, period start, totals and root (and, for a completion, recording how
        its job ended) in the same transaction."""
        assert record.period_start is not None
        exit_code = 0 if outcome is None else outcome.exit_code
        summary = summarize(buffer.samples, list(gpu_uuids), record.period_start, period_end)
        totals = record.totals.plus(summary)
        report = TelemetryReport(
            rental_id=record.rental_id,
            seq=record.next_seq,
            period_start=record.period_start,
            covered_until=period_end,
            delivered_seconds=totals.delivered_seconds,
            util_seconds=totals.reported_util_seconds,
            peak_mem_mib=summary.peak_mem_mib,
            sample_count=summary.sample_count,
            gpu_uuids=tuple(gpu_uuids),
            prev_root=record.prev_root,
            samples_root=summary.samples_root,
            status=status,
            exit_code=exit_code,
            result_digest=ZERO_DIGEST if outcome is None else outcome.result_digest,
            simulated=self._source.simulated or summary.simulated,
        )
        chain_id, registry = self._settings.chain.chain_id, self._settings.chain.registry
        signature = report.sign(self._key, chain_id, registry)
        gpu_summary = sign_gpu_summary(
            self._key,
            report,
            self._report_domain.digest(report),
            gpu_period_stats(buffer.samples, gpu_uuids, record.period_start, period_end),
            chain_id,
            registry,
        )
        if status is not ReportStatus.RUNNING:
            done = f"job {status.name.lower()} (exit code {exit_code})"
        with transaction(self._db):
            self.outbox.enqueue(TelemetrySubmission(report=report, signature=signature, gpu_summary=gpu_summary))
            self.book.advance(
                record.rental_id,
                next_seq=record.next_seq + 1,
                period_start=period_end,
                totals=totals,
                prev_root=report.telemetry_root,
                done=done,
                job_exit=None if outcome is None else outcome.as_exit(),
            )
        buffer.drop_before(period_end)
        log.info(
            "rental %d: report %d [%d, %d) %s: %d s delivered at %d bps, %d samples; %d s in total",
            record.rental_id,
            report.seq,
            report.period_start,
            report.covered_until,
            status.name,
            summary.delivered_seconds,
            summary.avg_util_bps,
            report.sample_count,
            report.delivered_seconds,
        )

    async def _sleep_or_wake(self, rental_id: int, seconds: float) -> None:
        wakeup = self._wakeups[rental_id]
        wakeup.clear()
        try:
            await asyncio.wait_for(wakeup.wait(), seconds)
        except TimeoutError:
            pass

    # ---------------------------------------------------------------- housekeeping

    async def _janitor_loop(self) -> None:
        """Clears finished rentals' containers and (after the retention period) folders, now and every
        `janitor_interval_seconds`."""
        while True:
            try:
                await self.jobs.clean_up(active=set(self._wakeups))
            except (EngineError, OSError) as exc:
                log.warning("clean-up failed: %s", exc)
            await asyncio.sleep(self._settings.janitor_interval_seconds)

    # ---------------------------------------------------------------- telemetry

    def _on_chain_time(self, tick: list[GpuSample]) -> list[GpuSample]:
        """A tick's samples stamped on the chain's time instead of this machine's clock, which the source read."""
        return [s.model_copy(update={"timestamp": self.chain_clock.to_chain(s.timestamp)}) for s in tick]

    async def _sample_loop(self) -> None:
        """Samples every GPU once per `sample_interval_seconds` of the chain's time while any rental is supervised;
        the samples are stamped on the chain's time."""
        interval = self._settings.sample_interval_seconds
        while True:
            await self._sampling.wait()
            try:
                async for tick in ticks(self._source, interval=interval, clock=self.chain_clock.now):
                    chain_tick = self._on_chain_time(tick)
                    for buffer in self._buffers.values():
                        buffer.add(chain_tick)
                    if not self._buffers:
                        break
            except TraceExhausted as exc:
                log.error("telemetry ended: %s; no further second counts as delivered", exc)
                return
            except TelemetryError as exc:
                log.warning("telemetry sample failed: %s", exc)
                await asyncio.sleep(self._settings.sample_interval_seconds)
