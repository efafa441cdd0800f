"""The provider agent's loop: rentals from the chain, their jobs, telemetry, and signed reports to the oracles.

For each rental opened on one of the provider's offers, the agent:

1. gets the job spec of the rental's `jobSpecHash` (`JobSpecStore`), retrying while the rental is open;
2. checks it can run it here: every GPU of the offer is one this machine's telemetry source sees, and a spec
   that names a container image has a container runtime to go with it;
3. calls `escrow.start(rentalId)` with its agent key. When `start` reverts because the rental already runs
   (its first report started it, or an earlier life of this agent did), it carries on from the rental's
   on-chain state; reports always continue from the chain's `since`, `lastSeq` and `reportedSeconds`;
4. launches the job (`SupervisedJob`) and, every `report_interval_seconds`, summarises the telemetry samples of
   the period (`offchain.telemetry.window.summarize`), signs the `TelemetryReport` and commits it to the outbox
   together with the rental's next seq and period start;
5. when the job exits, sends the completion report: Completed for exit code 0, Failed otherwise (including a
   job timeout, and a command that cannot be started, reported as exit code 127), with the exit code and result
   digest. When the renter terminates the rental, or its paid time
   runs out, it stops the job and sends a last Running report up to the rental's end; the rental is then
   settled by `finalize`. A finalised rental stops its job without a report.

An agent restarted after a crash resumes every unfinished rental: it stops what is left of the job it lost
(found by the job's token), launches the job again with its original deadline, and continues the report
sequence; seconds without samples while it was down are simply not delivered.

Simulated telemetry (a `TelemetrySource` whose `simulated` is True: the simulator, or a replayed trace) is
refused unless the settings allow it; when allowed, every log line of the agent says SIMULATED and every report
carries `simulated=True`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import aiohttp
from eth_account import Account
from web3.exceptions import Web3Exception

from offchain.agent.job import (
    NOT_STARTED_EXIT_CODE,
    ZERO_DIGEST,
    JobOutcome,
    SupervisedJob,
    kill_stale_job,
    plan_job,
)
from offchain.agent.jobspec import JobSpec, JobSpecError, JobSpecStore
from offchain.agent.outbox import Outbox, RetryPolicy
from offchain.agent.rentals import Phase, RentalBook, RentalRecord
from offchain.agent.settings import ProviderAgentSettings
from offchain.sqlite import open_db, transaction
from offchain.agent.watcher import ChainWatcher, RentalStatus
from offchain.chain import connect, contract
from offchain.messages import TelemetryReport, TelemetrySubmission, gpu_uuid_hash
from offchain.reports import ReportStatus
from offchain.telemetry.models import GpuSample
from offchain.telemetry.nvml import NvmlSource
from offchain.telemetry.source import TelemetryError, TelemetrySource, TraceExhausted
from offchain.telemetry.ticks import ticks
from offchain.telemetry.window import summarize

log = logging.getLogger(__name__)

CHAIN_ERRORS = (Web3Exception, aiohttp.ClientError, TimeoutError)
AGENT_LOGGERS = ("offchain.agent.service", "offchain.agent.job", "offchain.agent.jobspec",
                 "offchain.agent.outbox", "offchain.agent.watcher")
SIMULATED_LABEL = "[SIMULATED TELEMETRY] "


class SimulatedTelemetryRefused(RuntimeError):
    """The telemetry source is simulated and the agent was not started with `allow_simulated`."""


class RentalNotRunnable(Exception):
    """This machine cannot serve the rental (its GPUs are not here, or the spec needs what is not configured)."""


class _SimulatedLabel(logging.Filter):
    """Prefixes every record of the agent's loggers, so no log line of a simulated run reads as a real one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(SIMULATED_LABEL):
            record.msg = SIMULATED_LABEL + str(record.msg)
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
                "start the agent with allow_simulated only for development and demos")
        assert settings.key is not None  # AgentSettings resolves the key or fails validation
        self._settings = settings
        self._source = source
        self._clock = clock
        self._key = settings.key.get_secret_value()
        self.address = Account.from_key(self._key).address
        self._w3 = connect(settings.chain.rpc_url)
        self._escrow = contract(self._w3, "RentalEscrow", settings.chain.escrow)
        self._registry = contract(self._w3, "ProviderRegistry", settings.chain.registry)
        self._db = open_db(settings.db_path)
        self.book = RentalBook(self._db)
        self.outbox = Outbox(
            self._db, settings.oracles,
            retry=RetryPolicy(settings.retry_initial_seconds, settings.retry_max_seconds),
            request_timeout_seconds=settings.http_timeout_seconds, clock=clock)
        self._watcher = ChainWatcher(self._w3, self._escrow, self._registry, settings.provider, self._db,
                                     start_block=settings.start_block, confirmations=settings.confirmations)
        self._specs = JobSpecStore(settings.spec_directory, settings.spec_url, settings.http_timeout_seconds)
        self._wakeups: dict[int, asyncio.Event] = {}
        self._buffers: dict[int, _SampleBuffer] = {}
        self._sampling = asyncio.Event()
        self._tx_lock = asyncio.Lock()
        self._group: asyncio.TaskGroup | None = None
        self._label = _SimulatedLabel() if source.simulated else None

    async def run(self) -> None:
        """Runs the agent until cancelled; on the way out, stops the jobs it supervises."""
        self._install_label()
        try:
            log.info("agent %s for provider %s: %d oracle(s), report every %.0f s", self.address,
                     self._settings.provider, len(self.outbox.oracles), self._settings.report_interval_seconds)
            async with self.outbox, asyncio.TaskGroup() as group:
                self._group = group
                group.create_task(self.outbox.run())
                group.create_task(self._sample_loop())
                for record in self.book.unfinished():
                    log.info("resuming rental %d (%s)", record.rental_id, record.phase)
                    self._ensure_runner(record.rental_id)
                group.create_task(self._watch_loop())
        finally:
            self._group = None
            self._db.close()
            await self._w3.provider.disconnect()
            self._remove_label()

    def _install_label(self) -> None:
        if self._label is not None:
            for name in AGENT_LOGGERS:
                logging.getLogger(name).addFilter(self._label)

    def _remove_label(self) -> None:
        if self._label is not None:
            for name in AGENT_LOGGERS:
                logging.getLogger(name).removeFilter(self._label)

    # ---------------------------------------------------------------- chain events

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
                self._watcher.save_cursor(batch.next_block)
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
        """Takes a rental from wherever it is to done. Chain failures before its job is launched (the only
        point where the runner talks to the chain) retry the whole step, which is idempotent."""
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
                except (RentalNotRunnable, JobSpecError) as exc:
                    log.error("rental %d: not served: %s", rental_id, exc)
                    self.book.finish(rental_id, f"not runnable: {exc}")
                    return
        finally:
            self._wakeups.pop(rental_id, None)
            self._buffers.pop(rental_id, None)
            if not self._buffers:
                self._sampling.clear()

    def _record(self, rental_id: int) -> RentalRecord:
        record = self.book.get(rental_id)
        assert record is not None
        return record

    async def _open(self, record: RentalRecord) -> None:
        """Gets the spec, checks the rental can run here and starts it on chain (or finds it started)."""
        rental_id = record.rental_id
        spec = await self._await_spec(record)
        if spec is None:
            return
        gpu_uuids = await self._offer_gpus(record.offer_id)
        if spec.image is not None and self._settings.container_runtime is None:
            raise RentalNotRunnable("the job spec names a container image and no container runtime is configured")
        # Sample from before the start is sent: the rental is billed from the start block's timestamp, and a
        # sampler that waited for the receipt would miss that first second and count it as not delivered. The
        # sample taken here covers the current second, whose mid-second tick may already have passed.
        buffer = self._buffers[rental_id] = _SampleBuffer(frozenset(gpu_uuids))
        try:
            buffer.add(await self._source.sample())
        except TelemetryError as exc:
            log.warning("telemetry sample failed: %s", exc)
        self._sampling.set()
        state = await self._start_on_chain(rental_id)
        if state["status"] not in (RentalStatus.RUNNING, RentalStatus.TERMINATED):
            self.book.finish(rental_id, f"not started: rental is {state['status'].name}")
            log.warning("rental %d cannot be started: it is %s", rental_id, state["status"].name)
            return
        since = state["since"]
        self.book.mark_started(rental_id, since=since, ends_at=since + state["duration"],
                               next_seq=state["lastSeq"] + 1, period_start=since + state["reportedSeconds"])
        log.info("rental %d started at %d on %d GPU(s): %s", rental_id, since, len(gpu_uuids), " ".join(spec.argv))

    async def _await_spec(self, record: RentalRecord) -> JobSpec | None:
        """The rental's job spec, retried while the rental is open; None once it is not."""
        while True:
            try:
                return await self._specs.get(record.spec_hash)
            except JobSpecError as exc:
                log.warning("rental %d: %s", record.rental_id, exc)
            state = await self._rental_state(record.rental_id)
            if state["status"] is not RentalStatus.OPEN:
                self.book.finish(record.rental_id, f"no job spec while open; rental is {state['status'].name}")
                return None
            await self._sleep_or_wake(record.rental_id, self._settings.chain_poll_seconds)

    async def _start_on_chain(self, rental_id: int) -> dict[str, Any]:
        """Sends `start(rentalId)` signed by the agent key, then returns the rental's state on chain. A start
        that reverts (the rental already runs, or can no longer start) is not an error: the state says which."""
        async with self._tx_lock:
            try:
                tx = await self._escrow.functions.start(rental_id).build_transaction({
                    "from": self.address,
                    "nonce": await self._w3.eth.get_transaction_count(self.address, "pending"),
                    "chainId": self._settings.chain.chain_id,
                })
                signed = Account.sign_transaction(tx, self._key)
                tx_hash = await self._w3.eth.send_raw_transaction(signed.raw_transaction)
                receipt = await self._w3.eth.wait_for_transaction_receipt(
                    tx_hash, timeout=self._settings.tx_timeout_seconds)
                log.info("rental %d: start tx %s status %d", rental_id, tx_hash.hex(), receipt["status"])
            except Web3Exception as exc:
                log.info("rental %d: start not sent or reverted (%s); reading the rental", rental_id, exc)
        return await self._rental_state(rental_id)

    async def _rental_state(self, rental_id: int) -> dict[str, Any]:
        function = self._escrow.functions.getRental(rental_id)
        values = await function.call()
        state = dict(zip((o["name"] for o in function.abi["outputs"]), values))
        state["status"] = RentalStatus(state["status"])
        return state

    async def _offer_gpus(self, offer_id: int) -> list[str]:
        """The UUIDs of the offer's GPUs, in the offer's order, as this machine's telemetry source names them."""
        function = self._registry.functions.getOffer(offer_id)
        offer = await function.call()
        names = [c["name"] for c in function.abi["outputs"][0]["components"]]
        hashes = [bytes(h) for h in dict(zip(names, offer))["gpuUuidHashes"]]
        here = {gpu_uuid_hash(gpu.uuid): gpu.uuid for gpu in self._source.gpus()}
        missing = [h for h in hashes if h not in here]
        if missing:
            raise RentalNotRunnable(f"{len(missing)} GPU(s) of offer {offer_id} are not on this machine "
                                    f"(first: 0x{missing[0].hex()})")
        return [here[h] for h in hashes]

    async def _sync_from_chain(self, record: RentalRecord) -> RentalRecord:
        """Takes the rental's end and state from the chain, for events missed while the agent was down."""
        state = await self._rental_state(record.rental_id)
        status = state["status"]
        self.book.sync_chain(
            record.rental_id, ends_at=state["since"] + state["duration"],
            terminated=record.terminated or status is RentalStatus.TERMINATED,
            finalized=record.finalized or status.is_final or status is RentalStatus.NONE)
        return self._record(record.rental_id)

    async def _supervise(self, record: RentalRecord) -> None:
        """Runs the job and reports until the rental is done."""
        rental_id = record.rental_id
        spec = await self._specs.get(record.spec_hash)
        gpu_uuids = await self._offer_gpus(record.offer_id)
        if record.job_token is not None:
            found = await kill_stale_job(record.job_token, record.job_kill_argv, self._settings.stop_grace_seconds)
            log.warning("rental %d: stopped %d process(es) left by the agent's previous run", rental_id, found)
        record = await self._sync_from_chain(record)
        if record.finalized:
            self.book.finish(rental_id, "finalized on chain")
            return
        buffer = self._buffers.get(rental_id)
        if buffer is None:  # an agent restarted mid-rental: what it did not sample while down is not delivered
            buffer = self._buffers[rental_id] = _SampleBuffer(frozenset(gpu_uuids))
        self._sampling.set()
        if record.terminated or self._clock() >= record.ends_at:
            await self._close_period(record, gpu_uuids, buffer)
            return

        try:
            launch = plan_job(spec, rental_id=rental_id, rental_dir=self._settings.rentals_dir / str(rental_id),
                              gpu_uuids=gpu_uuids, runtime=self._settings.container_runtime)
        except ValueError as exc:
            raise RentalNotRunnable(str(exc)) from exc
        deadline = record.job_deadline
        if deadline is None and spec.timeout_seconds is not None:
            deadline = self._clock() + spec.timeout_seconds
        self.book.set_launch(rental_id, token=launch.token, kill_argv=launch.kill_argv, deadline=deadline)
        job = SupervisedJob(launch, self._settings.stop_grace_seconds, deadline)
        try:
            await job.start()
        except OSError as exc:
            log.error("rental %d: the job could not be started: %s", rental_id, exc)
            outcome = JobOutcome(NOT_STARTED_EXIT_CODE, ZERO_DIGEST, timed_out=False, stopped=False)
            await self._complete(self._record(rental_id), gpu_uuids, buffer, outcome)
            return
        if isinstance(self._source, NvmlSource):
            # The job leads its own process group; NVML's process list then tells whether it is on each GPU.
            self._source.expected_pids = {job.pid}
        exit_task = asyncio.create_task(job.wait())
        try:
            await self._report_until_done(rental_id, gpu_uuids, buffer, job, exit_task)
        finally:
            if not exit_task.done():
                await asyncio.shield(job.stop())
                await asyncio.shield(exit_task)

    async def _report_until_done(self, rental_id: int, gpu_uuids: list[str], buffer: _SampleBuffer,
                                 job: SupervisedJob, exit_task: asyncio.Task[JobOutcome]) -> None:
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
                self.book.finish(rental_id, "finalized on chain")
                log.info("rental %d finalised on chain: job stopped", rental_id)
                return
            now = self._clock()
            if record.terminated or now >= record.ends_at:
                log.info("rental %d %s: stopping the job", rental_id,
                         "terminated by the renter" if record.terminated else "reached its end")
                await job.stop()
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

    async def _complete(self, record: RentalRecord, gpu_uuids: list[str], buffer: _SampleBuffer,
                        outcome: JobOutcome) -> None:
        """The completion report of a job that exited by itself (or timed out)."""
        status = ReportStatus.COMPLETED if outcome.succeeded else ReportStatus.FAILED
        log.info("rental %d: job exited with %d%s: reporting %s", record.rental_id, outcome.exit_code,
                 " after its timeout" if outcome.timed_out else "", status.name)
        period_end = await self._period_end(record)
        if period_end is None:
            self.book.finish(record.rental_id, f"job {status.name.lower()} after the rental's end")
            return
        self._commit_report(record, gpu_uuids, buffer, period_end, status=status, exit_code=outcome.exit_code,
                            result_digest=outcome.result_digest)

    async def _close_period(self, record: RentalRecord, gpu_uuids: list[str], buffer: _SampleBuffer) -> None:
        """The last Running report, up to the rental's end, of a rental that ended before its job did."""
        period_end = await self._period_end(record)
        if period_end is None:
            self.book.finish(record.rental_id, "ended; every second was already reported")
            return
        self._commit_report(record, gpu_uuids, buffer, period_end, done="ended before the job")

    async def _period_end(self, record: RentalRecord) -> int | None:
        """The end of a rental's last period: now, but at most its end and at least one second after the period
        start (waiting for it); None when the period start already reached the end."""
        assert record.period_start is not None and record.ends_at is not None
        if record.period_start >= record.ends_at:
            return None
        earliest = record.period_start + 1
        now = self._clock()
        if now < earliest:
            await asyncio.sleep(earliest - now)
        return min(max(int(self._clock()), earliest), record.ends_at)

    def _commit_report(self, record: RentalRecord, gpu_uuids: list[str], buffer: _SampleBuffer, period_end: int,
                       *, status: ReportStatus = ReportStatus.RUNNING, exit_code: int = 0,
                       result_digest: bytes = ZERO_DIGEST, done: str | None = None) -> None:
        """Builds, signs and queues the report of [period_start, period_end), advancing the rental in the same
        transaction."""
        assert record.period_start is not None
        summary = summarize(buffer.samples, gpu_uuids, record.period_start, period_end)
        report = TelemetryReport(
            rental_id=record.rental_id, seq=record.next_seq, period_start=record.period_start,
            period_end=period_end, delivered_seconds=summary.delivered_seconds, avg_util_bps=summary.avg_util_bps,
            peak_mem_mib=summary.peak_mem_mib, sample_count=summary.sample_count, gpu_uuids=tuple(gpu_uuids),
            telemetry_root=summary.telemetry_root, status=status, exit_code=exit_code,
            result_digest=result_digest, simulated=self._source.simulated or summary.simulated)
        signature = report.sign(self._key, self._settings.chain.chain_id, self._settings.chain.registry)
        if status is not ReportStatus.RUNNING:
            done = f"job {status.name.lower()} (exit code {exit_code})"
        with transaction(self._db):
            self.outbox.enqueue(TelemetrySubmission(report=report, signature=signature))
            self.book.advance(record.rental_id, next_seq=record.next_seq + 1, period_start=period_end, done=done)
        buffer.drop_before(period_end)
        log.info("rental %d: report %d [%d, %d) %s: %d s delivered, %d bps, %d samples", record.rental_id,
                 report.seq, report.period_start, report.period_end, status.name, report.delivered_seconds,
                 report.avg_util_bps, report.sample_count)

    async def _sleep_or_wake(self, rental_id: int, seconds: float) -> None:
        wakeup = self._wakeups[rental_id]
        wakeup.clear()
        try:
            await asyncio.wait_for(wakeup.wait(), seconds)
        except TimeoutError:
            pass

    # ---------------------------------------------------------------- telemetry

    async def _sample_loop(self) -> None:
        """Samples every GPU once per `sample_interval_seconds` while any rental is supervised."""
        interval = self._settings.sample_interval_seconds
        while True:
            await self._sampling.wait()
            try:
                async for tick in ticks(self._source, interval=interval, clock=self._clock):
                    for buffer in self._buffers.values():
                        buffer.add(tick)
                    if not self._buffers:
                        break
            except TraceExhausted as exc:
                log.error("telemetry ended: %s; no further second counts as delivered", exc)
                return
            except TelemetryError as exc:
                log.warning("telemetry sample failed: %s", exc)
                await asyncio.sleep(interval)
