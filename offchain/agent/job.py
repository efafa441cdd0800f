"""A rental's job as a supervised subprocess: its own process group, output to log files, a timeout, a stop
that escalates from SIGTERM to SIGKILL, the exit code and a result digest.

The job is the leader of a new session (`start_new_session=True`), so its process group id is its pid and every
process it forks stays in that group unless it leaves on purpose. Stopping signals the whole group: SIGTERM,
then SIGKILL to whatever is left after the grace period. Processes of the group that outlive the leader are
stopped the same way when the leader exits.

Every job carries `GPUEX_JOB_TOKEN` (random, per launch) in its environment. An agent restarted after a crash
finds the processes of the job it lost track of by that token (`kill_stale_job`), so it never signals an
unrelated process that happens to reuse an old pid.

Exit code: the process's exit status, or `-N` when signal N ended it (Python's convention). Result digest:
keccak256 of the spec's `result_file` (zero bytes32 if the job did not write it), else of the job's stdout.
Each launch starts with empty `stdout.log` / `stderr.log`, so a job launched again after an agent restart is
digested over its last launch only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Iterable

from eth_hash.auto import keccak

from offchain.agent.jobspec import JobSpec

log = logging.getLogger(__name__)

CONTAINER_WORKSPACE = "/workspace"
JOB_TOKEN_VAR = "GPUEX_JOB_TOKEN"
ZERO_DIGEST = b"\x00" * 32
NOT_STARTED_EXIT_CODE = 127  # the exit code reported for a command that could not be started, as shells do
_GROUP_POLL_SECONDS = 0.05
_DIGEST_CHUNK = 1 << 20


class ContainerRuntime(StrEnum):
    """A container runtime the agent can run images with."""

    DOCKER = "docker"
    PODMAN = "podman"


@dataclass(frozen=True)
class JobLaunch:
    """Everything needed to start one job: the command line, its environment and where its files go.

    `kill_argv`, set in container mode, kills the container by name: a container runtime client killed with
    SIGKILL cannot forward the signal, and the container would keep running without it.
    """

    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: Path
    stdout_path: Path
    stderr_path: Path
    result_path: Path | None
    token: str
    kill_argv: tuple[str, ...] | None = None


@dataclass(frozen=True)
class JobOutcome:
    """How a job ended."""

    exit_code: int
    result_digest: bytes
    timed_out: bool
    stopped: bool  # the agent stopped it (rental terminated or ended, agent shutdown), not the job itself

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


def container_name(rental_id: int, token: str) -> str:
    """The container name of a rental's job launch."""
    return f"gpuex-{rental_id:x}-{token[:12]}"


def container_argv(
    runtime: ContainerRuntime,
    spec: JobSpec,
    *,
    name: str,
    workspace: Path,
    gpu_uuids: Iterable[str],
    env_names: Iterable[str],
) -> tuple[str, ...]:
    """The `docker run` / `podman run` command line of a containerised job.

    The workspace is mounted at /workspace and the spec's working directory is taken inside it. Environment
    variables are passed by name only (`--env NAME`): the runtime copies their values from the client's
    environment, so they do not show up in the host's process list. Only the rental's GPUs are exposed:
    Docker's `--gpus "device=UUID,..."`, Podman's CDI devices `nvidia.com/gpu=UUID`.
    """
    if spec.image is None:
        raise ValueError("the job spec names no container image")
    uuids = list(gpu_uuids)
    argv = [str(runtime), "run", "--rm", "--init", "--name", name,
            "--volume", f"{workspace}:{CONTAINER_WORKSPACE}",
            "--workdir", str(PurePosixPath(CONTAINER_WORKSPACE) / spec.working_dir)]
    if runtime is ContainerRuntime.DOCKER:
        # The value is parsed as CSV, so a list of devices must be quoted inside the argument.
        argv += ["--gpus", f'"device={",".join(uuids)}"']
    else:
        for uuid in uuids:
            argv += ["--device", f"nvidia.com/gpu={uuid}"]
    for env_name in sorted(env_names):
        argv += ["--env", env_name]
    return (*argv, spec.image, *spec.argv)


def plan_job(
    spec: JobSpec,
    *,
    rental_id: int,
    rental_dir: Path,
    gpu_uuids: Iterable[str],
    runtime: ContainerRuntime | None = None,
) -> JobLaunch:
    """How to launch `spec` for a rental whose files live in `rental_dir` (workspace `work/`, logs beside it).

    The job's environment is the spec's `env` plus, set by the agent and not overridable by the spec,
    `PATH` (the agent's), `HOME` (the workspace on the host), `CUDA_VISIBLE_DEVICES` (the rental's GPU UUIDs),
    `GPUEX_RENTAL_ID` and `GPUEX_JOB_TOKEN`.
    """
    uuids = list(gpu_uuids)
    workspace = rental_dir / "work"
    cwd = workspace / spec.working_dir
    cwd.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(16)
    agent_env = {
        "CUDA_VISIBLE_DEVICES": ",".join(uuids),
        "GPUEX_RENTAL_ID": str(rental_id),
        JOB_TOKEN_VAR: token,
    }
    env = {**spec.env, **agent_env}
    host_env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(workspace)}
    result_path = cwd / spec.result_file if spec.result_file is not None else None
    common = dict(cwd=cwd, stdout_path=rental_dir / "stdout.log", stderr_path=rental_dir / "stderr.log",
                  result_path=result_path, token=token)
    if spec.image is None:
        return JobLaunch(argv=tuple(spec.argv), env={**env, **host_env}, **common)
    if runtime is None:
        raise ValueError("the job spec needs a container image but no container runtime is configured")
    name = container_name(rental_id, token)
    argv = container_argv(runtime, spec, name=name, workspace=workspace, gpu_uuids=uuids, env_names=env)
    return JobLaunch(argv=argv, env={**env, **host_env}, kill_argv=(str(runtime), "kill", name), **common)


def file_digest(path: Path) -> bytes:
    """keccak256 of a file's bytes, read in chunks."""
    hasher = keccak.new(b"")
    with path.open("rb") as stream:
        while chunk := stream.read(_DIGEST_CHUNK):
            hasher.update(chunk)
    return hasher.digest()


def result_digest(launch: JobLaunch) -> bytes:
    """The result digest of a finished launch (see the module docstring)."""
    if launch.result_path is None:
        return file_digest(launch.stdout_path)
    return file_digest(launch.result_path) if launch.result_path.is_file() else ZERO_DIGEST


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


async def _run_quietly(argv: tuple[str, ...], timeout_seconds: float) -> None:
    """Runs a helper command (a container kill), logging instead of raising when it fails."""
    try:
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL)
    except OSError as exc:
        log.warning("could not run %s: %s", argv[0], exc)
        return
    try:
        await asyncio.wait_for(process.wait(), timeout_seconds)
    except TimeoutError:
        process.kill()
        await process.wait()


@dataclass
class SupervisedJob:
    """One launch of a job. `start`, then `wait` for its outcome; `stop` from elsewhere ends it early.

    `deadline` (unix time) is when the job times out; the agent keeps it across its own restarts.
    """

    launch: JobLaunch
    stop_grace_seconds: float = 10.0
    deadline: float | None = None
    _process: asyncio.subprocess.Process | None = field(default=None, init=False, repr=False)
    _stopping: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)
    _stopped: bool = field(default=False, init=False)
    _timed_out: bool = field(default=False, init=False)

    @property
    def pid(self) -> int:
        """The job's pid, which is also its process group id."""
        if self._process is None:
            raise RuntimeError("the job has not started")
        return self._process.pid

    async def start(self) -> None:
        """Spawns the job in a new session with its output going to the log files (truncated)."""
        self.launch.stdout_path.parent.mkdir(parents=True, exist_ok=True)
        with self.launch.stdout_path.open("wb") as stdout, self.launch.stderr_path.open("wb") as stderr:
            self._process = await asyncio.create_subprocess_exec(
                *self.launch.argv, stdin=asyncio.subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                cwd=self.launch.cwd, env=self.launch.env, start_new_session=True)
        log.info("job started: pid %d, %s", self._process.pid, self.launch.argv[0])

    async def wait(self) -> JobOutcome:
        """Waits for the job to exit (stopping it at its deadline) and returns how it ended; processes of its
        group that outlive it are stopped first."""
        process = self._process
        if process is None:
            raise RuntimeError("the job has not started")
        timeout = None if self.deadline is None else max(0.0, self.deadline - time.time())
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), timeout)
        except TimeoutError:
            self._timed_out = True
            log.warning("job %d ran past its timeout: stopping it", process.pid)
            await self.stop()
        await self._stop_group()
        assert process.returncode is not None
        digest = await asyncio.to_thread(result_digest, self.launch)
        return JobOutcome(exit_code=process.returncode, result_digest=digest, timed_out=self._timed_out,
                          stopped=self._stopped and not self._timed_out)

    async def stop(self) -> None:
        """Ends the job: SIGTERM to its group, then after the grace period the container kill (if any) and
        SIGKILL to whatever is left. Safe to call more than once and after the job exited."""
        if self._process is None:
            return
        self._stopped = True
        await self._stop_group()
        await self._process.wait()

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
            if self.launch.kill_argv is not None:
                await _run_quietly(self.launch.kill_argv, self.stop_grace_seconds)
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


async def kill_stale_job(token: str, kill_argv: tuple[str, ...] | None, grace_seconds: float) -> int:
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
    if kill_argv is not None:
        await _run_quietly(kill_argv, grace_seconds)
    for pid in processes_with_token(token):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(pids)
