"""A rental's job while it runs: started, waited for (up to its deadline), stopped, and how it ended.

Every job is a `ContainerJob`: a detached container (`offchain.agent.containers`) that outlives the agent, found
again by name after a restart (`ContainerJob.attach`). `offchain.agent.bareprocess.BareProcessJob` runs the command
as a host process instead; the agent allows it only on a local development chain, when told to.

Exit code: the job's exit status; a container stopped by a signal exits with 128 + the signal (143 for SIGTERM,
137 for SIGKILL, which is also what the kernel's out-of-memory killer sends). Results: the spec's `output_dir`,
packed into the rental's `results.tar` once the job has ended (`offchain.agent.workspace.pack_beneath`); the
result digest is keccak256 of that tar, or of the job's stdout when it left no output folder. The reason says in
words why a job did not succeed, for the renter to read.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from eth_hash.auto import keccak

from offchain.agent.containers import (
    ContainerPlan,
    Engine,
    EngineError,
    copy_engine_log,
    oom_marker,
    write_env_file,
)
from offchain.agent.logs import stream_digest
from offchain.agent.rentals import JobExit
from offchain.agent.workspace import pack_beneath

log = logging.getLogger(__name__)

ZERO_DIGEST = b"\x00" * 32
NOT_STARTED_EXIT_CODE = 127  # the exit code reported for a command that could not be started, as shells do
_DIGEST_CHUNK = 1 << 20


@dataclass(frozen=True)
class JobOutcome:
    """How a job ended. `reason` is None for a success; `finished_at` is unix time when known."""

    exit_code: int
    result_digest: bytes
    timed_out: bool
    stopped: bool  # the agent stopped it (rental terminated or ended, agent shutdown), not the job itself
    reason: str | None = None
    finished_at: float | None = None

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    @classmethod
    def not_run(cls, reason: str, *, timed_out: bool = False, stopped: bool = False) -> JobOutcome:
        """The outcome of a job that did not run to an exit of its own: it could not start, or its container went
        away."""
        return cls(NOT_STARTED_EXIT_CODE, ZERO_DIGEST, timed_out=timed_out, stopped=stopped, reason=reason)

    def as_exit(self) -> JobExit:
        """What the agent's book keeps of it."""
        return JobExit(self.exit_code, self.reason, self.finished_at, self.result_digest)


def describe_exit(
    exit_code: int,
    *,
    timed_out: bool,
    stopped: bool,
    oom_killed: bool = False,
    memory_mib: int | None = None,
    timeout_seconds: float | None = None,
) -> str | None:
    """Why a job did not succeed, in a sentence for its renter; None when it did."""
    if timed_out:
        return (
            f"stopped after running past its timeout of {timeout_seconds:g} s"
            if timeout_seconds
            else "stopped after running past its timeout"
        )
    if stopped:
        return "stopped by the provider's agent because the rental ended"
    if exit_code == 0:
        return None
    limit = f" of {memory_mib} MiB" if memory_mib else ""
    if oom_killed:
        return f"killed for using more than its memory limit{limit}"
    if exit_code in (128 + signal.SIGKILL, -signal.SIGKILL):
        return f"killed by SIGKILL (exit code {exit_code}): most likely it ran out of its memory limit{limit}"
    if exit_code > 128 or exit_code < 0:
        number = exit_code - 128 if exit_code > 128 else -exit_code
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"ended by {name} (exit code {exit_code})"
    return f"exited with code {exit_code}"


def file_digest(fd: int) -> bytes:
    """keccak256 of the rest of an open file, read in chunks (the descriptor is closed)."""
    hasher = keccak.new(b"")
    with os.fdopen(fd, "rb") as stream:
        while chunk := stream.read(_DIGEST_CHUNK):
            hasher.update(chunk)
    return hasher.digest()


def pack_results(workspace: Path, output_dir: str, results: Path) -> bytes | None:
    """Packs the job's output folder into `results` and returns the tar's keccak256; None when the job left no
    output folder (a stale tar of an earlier launch is removed)."""
    if not pack_beneath(workspace, output_dir, results):
        results.unlink(missing_ok=True)
        return None
    return file_digest(os.open(results, os.O_RDONLY | os.O_CLOEXEC))


class Job(ABC):
    """One launch of a rental's job. `start` (or `attach`), then `wait` for its outcome; `stop` ends it early.

    `deadline` (unix time) is when the job times out; the agent keeps it across its own restarts.
    """

    def __init__(self, *, deadline: float | None, stop_grace_seconds: float, timeout_seconds: float | None) -> None:
        self.deadline = deadline
        self.stop_grace_seconds = stop_grace_seconds
        self.timeout_seconds = timeout_seconds
        self._stopped = False
        self._timed_out = False
        self.started_at: float | None = None  # unix time the job began running, once known

    @property
    @abstractmethod
    def host_pid(self) -> int | None:
        """A host pid whose process group or descendants are the job (what NVML's process list should show)."""

    @abstractmethod
    async def start(self) -> None:
        """Launches the job. A job that cannot be launched is not an error here: `wait` reports it."""

    @abstractmethod
    async def _wait_exit(self) -> None:
        """Returns once the job exited."""

    @abstractmethod
    async def _terminate(self) -> None:
        """Ends the job: SIGTERM, then SIGKILL after the grace period."""

    @abstractmethod
    async def _outcome(self) -> JobOutcome:
        """How the job ended, once it has."""

    async def wait(self) -> JobOutcome:
        """Waits for the job to exit, stopping it at its deadline, and returns how it ended."""
        timeout = None if self.deadline is None else max(0.0, self.deadline - time.time())
        exited = asyncio.ensure_future(self._wait_exit())
        try:
            await asyncio.wait_for(asyncio.shield(exited), timeout)
        except TimeoutError:
            self._timed_out = True
            log.warning("job ran past its timeout: stopping it")
            await self._terminate()
            await exited
        finally:
            if not exited.done():
                exited.cancel()
        return await self._outcome()

    async def stop(self) -> None:
        """Ends the job early (the rental ended); safe to call more than once and after it exited."""
        self._stopped = True
        await self._terminate()


class ContainerJob(Job):
    """A rental's job as a detached container named `plan.name`."""

    def __init__(
        self,
        engine: Engine,
        plan: ContainerPlan,
        env: dict[str, str],
        *,
        output_dir: str,
        results: Path,
        deadline: float | None,
        stop_grace_seconds: float,
        timeout_seconds: float | None,
    ) -> None:
        super().__init__(deadline=deadline, stop_grace_seconds=stop_grace_seconds, timeout_seconds=timeout_seconds)
        self.engine = engine
        self.plan = plan
        self._env = env
        self._output_dir = output_dir
        self._results = results
        self._start_error: str | None = None
        self._pid: int | None = None

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def host_pid(self) -> int | None:
        return self._pid

    async def start(self) -> None:
        """Creates and starts the container. The environment reaches it through an env file readable by the
        agent's user only, removed as soon as the engine has read it."""
        try:
            oom_marker(self.plan).unlink(missing_ok=True)  # a marker of an earlier launch says nothing of this one
            write_env_file(self.plan.env_file, self._env)
            try:
                await self.engine.run(self.plan)
            finally:
                self.plan.env_file.unlink(missing_ok=True)
        except (EngineError, OSError, ValueError) as exc:
            self._start_error = str(exc)
            log.error("container %s did not start: %s", self.name, exc)
            return
        await self._learn_pid()
        log.info("container %s started (%s)", self.name, self.plan.image)

    async def attach(self) -> None:
        """Takes over the container of an earlier life of the agent (it exists, running or exited)."""
        await self._learn_pid()
        log.info("container %s re-attached", self.name)

    async def _learn_pid(self) -> None:
        try:
            state = await self.engine.inspect(self.name)
        except EngineError as exc:
            log.warning("container %s: inspect failed: %s", self.name, exc)
            return
        if state is not None:
            self._pid = state.pid or None
            self.started_at = state.started_at

    async def _wait_exit(self) -> None:
        if self._start_error is None:
            await self.engine.wait(self.name)

    async def _terminate(self) -> None:
        if self._start_error is None:
            await self.engine.stop(self.name, self.stop_grace_seconds)

    async def _outcome(self) -> JobOutcome:
        if self._start_error is not None:
            return JobOutcome.not_run(f"could not start: {self._start_error}")
        state = await self.engine.inspect(self.name)
        if state is None:
            return JobOutcome.not_run(
                "its container disappeared from the provider's machine",
                timed_out=self._timed_out,
                stopped=self._stopped,
            )
        await asyncio.to_thread(copy_engine_log, state, self.plan.log_path)
        digest = await asyncio.to_thread(self._digest)
        return JobOutcome(
            exit_code=state.exit_code,
            result_digest=digest,
            timed_out=self._timed_out,
            stopped=self._stopped,
            reason=describe_exit(
                state.exit_code,
                timed_out=self._timed_out,
                stopped=self._stopped,
                oom_killed=state.oom_killed or oom_marker(self.plan).exists(),
                memory_mib=self.plan.memory_mib,
                timeout_seconds=self.timeout_seconds,
            ),
            finished_at=state.finished_at,
        )

    def _digest(self) -> bytes:
        packed = pack_results(self.plan.workspace, os.path.join(self.plan.working_dir, self._output_dir), self._results)
        return (
            packed if packed is not None else stream_digest(self.plan.log_path, self.engine.settings.engine.log_format)
        )
