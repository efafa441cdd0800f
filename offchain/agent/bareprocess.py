"""A rental's job as a bare host process, for `--unsafe-bare-process` on a local development chain only.

The job runs as the agent's own user with nothing between it and the machine: it can read the agent's key and
database, every other rental's workspace, and reach every local port. The agent refuses this mode on any chain
but a local one (`offchain.agent.settings.LOCAL_CHAIN_IDS`) and labels every log line while it is on.

The job is the leader of a new session (`start_new_session=True`), so its process group id is its pid and every
process it forks stays in that group unless it leaves on purpose. Stopping signals the whole group: SIGTERM,
then SIGKILL to whatever is left after the grace period. Processes of the group that outlive the leader are
stopped the same way when the leader exits.

Every job carries `GPUEX_JOB_TOKEN` (random, per launch) in its environment. An agent restarted after a crash
cannot wait for a process it did not start, so it stops what is left of the job it lost track of, found by that
token (`kill_stale_job`), and launches the job again; it never signals an unrelated process that happens to reuse
an old pid. Exit code: the process's exit status, or `-N` when signal N ended it (Python's convention). Each
launch starts with empty `stdout.log` / `stderr.log`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import time
from pathlib import Path

from offchain.agent.job import (
    Job,
    JobOutcome,
    describe_exit,
    file_digest,
    pack_results,
)
from offchain.agent.jobspec import JobSpec
from offchain.agent.workspace import RentalFiles

log = logging.getLogger(__name__)

JOB_TOKEN_VAR = "GPUEX_JOB_TOKEN"
_GROUP_POLL_SECONDS = 0.05


def new_token() -> str:
    return secrets.token_hex(16)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass


async def _wait_group_gone(pgid: int, seconds: float) -> bool:
    """Waits up to `seconds` for the group to have no process left; whether it is gone."""
    deadline = time.monotonic() + seconds
    while _group_alive(pgid):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(_GROUP_POLL_SECONDS)
    return True


class BareProcessJob(Job):
    """`spec`'s command as a host process in `files.work`. Its environment is the spec's `env` and `secrets`, plus,
    set by the
    agent and not overridable by the spec, `PATH` (the agent's), `HOME` (the workspace), `CUDA_VISIBLE_DEVICES`
    (the rental's GPU UUIDs), `GPUEX_RENTAL_ID` and `GPUEX_JOB_TOKEN`."""

    def __init__(
        self,
        spec: JobSpec,
        files: RentalFiles,
        *,
        rental_id: int,
        gpu_uuids: tuple[str, ...],
        token: str,
        deadline: float | None,
        stop_grace_seconds: float,
        secrets: dict[str, str] | None = None,
    ) -> None:
        super().__init__(deadline=deadline, stop_grace_seconds=stop_grace_seconds, timeout_seconds=spec.timeout_seconds)
        self.spec = spec
        self.files = files
        self.token = token
        self.env = {
            **spec.env,
            **(secrets or {}),
            "CUDA_VISIBLE_DEVICES": ",".join(gpu_uuids),
            "GPUEX_RENTAL_ID": str(rental_id),
            JOB_TOKEN_VAR: token,
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": str(files.work),
        }
        self._process: asyncio.subprocess.Process | None = None
        self._start_error: str | None = None
        self._stopping = asyncio.Lock()

    @property
    def cwd(self) -> Path:
        return self.files.work / self.spec.working_dir

    @property
    def host_pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    async def start(self) -> None:
        """Spawns the job in a new session with its output going to the log files (truncated)."""
        self.files.prepare(self.spec.working_dir, owner=None)
        try:
            with self.files.stdout_log.open("wb") as stdout, self.files.stderr_log.open("wb") as stderr:
                self._process = await asyncio.create_subprocess_exec(
                    *self.spec.argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=stdout,
                    stderr=stderr,
                    cwd=self.cwd,
                    env=self.env,
                    start_new_session=True,
                )
        except OSError as exc:
            self._start_error = exc.strerror or str(exc)
            log.error("job could not be started: %s", exc)
            return
        self.started_at = time.time()
        log.info("job started: pid %d, %s", self._process.pid, self.spec.argv[0])

    async def _wait_exit(self) -> None:
        if self._process is not None:
            await self._process.wait()
            await self._stop_group()

    async def _terminate(self) -> None:
        if self._process is not None:
            await self._stop_group()
            await self._process.wait()

    async def _outcome(self) -> JobOutcome:
        if self._process is None:
            return JobOutcome.not_run(f"could not start: {self._start_error}")
        assert self._process.returncode is not None
        code = self._process.returncode
        digest = await asyncio.to_thread(self._digest)
        return JobOutcome(
            code,
            digest,
            timed_out=self._timed_out,
            stopped=self._stopped and not self._timed_out,
            reason=describe_exit(
                code, timed_out=self._timed_out, stopped=self._stopped, timeout_seconds=self.timeout_seconds
            ),
            finished_at=time.time(),
        )

    def _digest(self) -> bytes:
        packed = pack_results(
            self.files.work, os.path.join(self.spec.working_dir, self.spec.output_dir), self.files.results
        )
        return packed if packed is not None else file_digest(os.open(self.files.stdout_log, os.O_RDONLY | os.O_CLOEXEC))

    async def _stop_group(self) -> None:
        assert self._process is not None
        async with self._stopping:
            pgid = self._process.pid
            if not _group_alive(pgid):
                return
            _signal_group(pgid, signal.SIGTERM)
            if await _wait_group_gone(pgid, self.stop_grace_seconds):
                return
            log.warning("job group %d still alive %.1f s after SIGTERM: killing it", pgid, self.stop_grace_seconds)
            _signal_group(pgid, signal.SIGKILL)
            await _wait_group_gone(pgid, self.stop_grace_seconds)


def processes_with_token(token: str, proc: Path = Path("/proc")) -> list[int]:
    """Pids of this user's processes whose environment carries `GPUEX_JOB_TOKEN=token` (Linux /proc)."""
    marker = f"{JOB_TOKEN_VAR}={token}".encode()
    pids = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            pids.append(int(entry.name))
    return pids


async def kill_stale_job(token: str, grace_seconds: float) -> int:
    """Stops the processes of a job launched by an earlier life of the agent (found by its token): SIGTERM,
    then SIGKILL after the grace period. Returns how many processes it found."""
    pids = processes_with_token(token)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_seconds
    while processes_with_token(token) and time.monotonic() < deadline:
        await asyncio.sleep(_GROUP_POLL_SECONDS)
    for pid in processes_with_token(token):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(pids)
