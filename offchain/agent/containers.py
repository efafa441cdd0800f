"""Renters' jobs in hardened OCI containers, through podman (the default) or docker.

`run_argv` writes the one `run` command line every job gets; nothing in it comes from the renter except the image
reference, the command after it, the working directory inside `/workspace` and the environment (through an env
file, never the engine client's own environment). What it enforces:

- a non-root user the provider chooses (`ContainerSettings.user`; a spec cannot ask for another), every capability
  dropped, `no-new-privileges`, the engine's default seccomp profile;
- a read-only root file system; the rental's workspace, bind-mounted at `/workspace`, is the only writable mount
  from the host; `/tmp` and `/dev/shm` are small tmpfs mounts counted against the job's memory;
- memory (no swap beyond it), CPU, pid and open-file limits;
- no network at all, or the engine's default network when the job may reach out (`egress`);
- only the rented GPUs: podman's CDI devices `nvidia.com/gpu=<UUID>`, docker's `--gpus device=<UUID>,...`;
- an init process as PID 1 that reaps zombies and forwards the stop signal;
- the image as it is on this machine (`--pull never`): the agent pulls before it starts the rental, or declines.

Containers run detached: the engine's monitor (conmon for podman), not the agent, is their parent, so a job
outlives an agent that crashes or restarts, and the restarted agent finds it again by name. Each container carries
the labels `gpuex.agent` (the agent's address) and `gpuex.rental`, so the agent can find every container it left
behind (`agent_label`).

Logs: podman writes the job's stdout and stderr to a `k8s-file` log the agent names (in the rental's folder, out of
the job's reach); docker keeps a `json-file` log, which the agent copies next to it before it removes the
container. `offchain.agent.logs` reads both.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, ConfigDict, Field, field_validator

from offchain.agent.logs import LogFormat
from offchain.agent.workspace import write_private

log = logging.getLogger(__name__)

CONTAINER_WORKSPACE = "/workspace"
AGENT_LABEL = "gpuex.agent"
RENTAL_LABEL = "gpuex.rental"
#: What of the agent's own environment the engine client gets: where to find the engine and its configuration,
#: never anything else of the agent (its key settings above all) and never anything of a job spec.
CLIENT_ENV_NAMES = (
    "PATH",
    "HOME",
    "TMPDIR",
    "XDG_RUNTIME_DIR",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "CONTAINERS_CONF",
    "CONTAINERS_STORAGE_CONF",
    "CONTAINERS_REGISTRIES_CONF",
    "CONTAINER_HOST",
    "CONTAINER_CONNECTION",
    "DOCKER_HOST",
    "DOCKER_CONFIG",
    "DOCKER_CONTEXT",
    "DOCKER_TLS_VERIFY",
    "DOCKER_CERT_PATH",
)
_ENGINE_ERROR_CHARS = 2_000
_USER = re.compile(r"^([0-9]+):([0-9]+)$")
_FRACTION = re.compile(r"(\.\d{6})\d+")


class ContainerEngine(StrEnum):
    """The container engine client the agent drives."""

    PODMAN = "podman"
    DOCKER = "docker"

    @property
    def log_format(self) -> LogFormat:
        """How the engine writes a job's log: podman's k8s-file at the path the agent names, docker's json-file."""
        return LogFormat.K8S_FILE if self is ContainerEngine.PODMAN else LogFormat.JSON_FILE


class ContainerSettings(BaseModel):
    """How the agent runs jobs in containers (`GPUEX_AGENT_CONTAINER__*`).

    Per-GPU allowances scale with the rented offer: a rental of a 4-GPU offer may use 4 x `memory_mib_per_gpu` of
    memory and 4 x `cpus_per_gpu` CPUs; a spec that asks for more is declined. `nproc_limit` counts every process
    of `user` on the host, across all jobs, so keep it well above `pids_limit` (the per-job cap).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: ContainerEngine = ContainerEngine.PODMAN
    global_args: tuple[str, ...] = ()  # put before the subcommand, e.g. ("--runtime", "runc")
    user: str = "65534:65534"  # uid:gid of every job; never root
    memory_mib_per_gpu: int = Field(default=16_384, ge=16)
    cpus_per_gpu: float = Field(default=4.0, gt=0)
    pids_limit: int = Field(default=1_024, ge=8)
    nofile_limit: int = Field(default=1_024, ge=64)
    nproc_limit: int = Field(default=4_096, ge=8)
    tmp_mib: int = Field(default=1_024, ge=1)  # /tmp, a tmpfs counted against the job's memory
    shm_mib: int = Field(default=1_024, ge=1)  # /dev/shm
    allow_egress: bool = False  # jobs of offers that allow egress may reach out when their spec asks
    default_image: str | None = None  # for specs that name no image; without it such specs are declined
    pull: bool = True  # pull an image this machine lacks; without it only local images run
    pull_timeout_seconds: float = Field(default=600.0, gt=0)
    command_timeout_seconds: float = Field(default=60.0, gt=0)  # every other engine call

    @field_validator("user")
    @classmethod
    def _non_root(cls, value: str) -> str:
        match = _USER.match(value)
        if match is None:
            raise ValueError("user must be numeric uid:gid")
        if int(match.group(1)) == 0 or int(match.group(2)) == 0:
            raise ValueError("jobs never run as root: give a non-zero uid and gid")
        return value

    @property
    def uid(self) -> int:
        return int(self.user.split(":")[0])

    @property
    def gid(self) -> int:
        return int(self.user.split(":")[1])


@dataclass(frozen=True)
class ContainerPlan:
    """One container of one rental: everything `run_argv` needs besides the settings."""

    name: str
    image: str
    argv: tuple[str, ...]
    workspace: Path  # host folder mounted at /workspace
    working_dir: str  # relative to the workspace
    env_file: Path
    log_path: Path  # podman's k8s-file log; for docker, where the log is copied when the job is done
    gpu_uuids: tuple[str, ...]
    memory_mib: int
    cpus: float
    egress: bool
    labels: tuple[tuple[str, str], ...]


def run_argv(settings: ContainerSettings, plan: ContainerPlan) -> list[str]:
    """The `<engine> run --detach ...` command line of a job (see the module docstring for what it enforces)."""
    podman = settings.engine is ContainerEngine.PODMAN
    argv = [str(settings.engine), *settings.global_args, "run", "--detach", "--init", "--name", plan.name]
    for key, value in plan.labels:
        argv += ["--label", f"{key}={value}"]
    argv += [
        "--user",
        settings.user,
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--read-only",
        "--tmpfs",
        f"/tmp:rw,nosuid,nodev,size={settings.tmp_mib}m",
        "--shm-size",
        f"{settings.shm_mib}m",
        "--memory",
        f"{plan.memory_mib}m",
        "--memory-swap",
        f"{plan.memory_mib}m",
        "--cpus",
        f"{plan.cpus:g}",
        "--pids-limit",
        str(settings.pids_limit),
        "--ulimit",
        f"nofile={settings.nofile_limit}:{settings.nofile_limit}",
        "--ulimit",
        f"nproc={settings.nproc_limit}:{settings.nproc_limit}",
        "--volume",
        f"{plan.workspace}:{CONTAINER_WORKSPACE}:rw",
        "--workdir",
        str(PurePosixPath(CONTAINER_WORKSPACE) / plan.working_dir),
        "--env-file",
        str(plan.env_file),
        "--hostname",
        "gpuex-job",
        "--pull",
        "never",
        "--entrypoint",
        "",
    ]
    if podman:
        # podman mounts tmpfs on /run and /var/tmp of a read-only container unless told not to.
        argv += ["--read-only-tmpfs=false", "--log-driver", "k8s-file", "--log-opt", f"path={plan.log_path}"]
    else:
        argv += ["--log-driver", "json-file"]
    if not plan.egress:
        argv += ["--network", "none"]
    if plan.gpu_uuids:
        if podman:
            for uuid in plan.gpu_uuids:
                argv += ["--device", f"nvidia.com/gpu={uuid}"]
        else:
            # docker parses the value as CSV: a list of devices is quoted inside the argument.
            argv += ["--gpus", f'"device={",".join(plan.gpu_uuids)}"']
    return [*argv, plan.image, *plan.argv]


def write_env_file(path: Path, env: dict[str, str]) -> None:
    """Writes `NAME=value` lines readable by the agent's user only (values hold no line break: `JobSpec` refuses
    them, and the agent's own values have none)."""
    for name, value in env.items():
        if any(c in name + value for c in "\x00\r\n") or "=" in name:
            raise ValueError(f"environment variable {name!r} cannot go into an env file")
    write_private(path, "".join(f"{name}={value}\n" for name, value in env.items()).encode())


class EngineError(Exception):
    """The engine client failed or could not be run."""


class ImageUnavailable(EngineError):
    """The image is not on this machine and could not be pulled."""


@dataclass(frozen=True)
class ContainerState:
    """What `inspect` tells of a container."""

    status: str  # created, running, exited, ...
    exit_code: int
    oom_killed: bool
    pid: int  # the host pid of its init process while it runs, else 0
    started_at: float | None  # unix time
    finished_at: float | None
    log_path: str | None

    @property
    def running(self) -> bool:
        return self.status in ("running", "paused", "restarting", "stopping")

    @property
    def exited(self) -> bool:
        """Ran and stopped (a container that never started is `created`, not exited)."""
        return self.status in ("exited", "stopped", "dead")


def _timestamp(value: str | None) -> float | None:
    """Unix time of an engine timestamp (RFC 3339 with nanoseconds); None for the zero time."""
    if not value or value.startswith("0001-01-01"):
        return None
    text = _FRACTION.sub(r"\1", value.replace("Z", "+00:00"))
    return datetime.fromisoformat(text).timestamp()


def client_env() -> dict[str, str]:
    """The engine client's environment: `CLIENT_ENV_NAMES` of the agent's own, nothing else."""
    return {name: os.environ[name] for name in CLIENT_ENV_NAMES if name in os.environ}


class Engine:
    """The agent's calls to the container engine's command-line client."""

    def __init__(self, settings: ContainerSettings) -> None:
        self.settings = settings

    @property
    def name(self) -> str:
        return str(self.settings.engine)

    def available(self) -> bool:
        """Whether the engine's client is installed here."""
        return shutil.which(self.name) is not None

    async def call(
        self,
        *args: str,
        timeout: float | None = None,
        check: bool = True,
        cwd: Path | None = None,
        interruptible: bool = False,
    ) -> tuple[int, str, str]:
        """Runs `<engine> <global args> <args>` with the client environment, in `cwd` if given; (exit code,
        stdout, stderr). Raises `EngineError` when it cannot run, times out, or (with `check`) exits non-zero.

        A caller cancelled meanwhile waits for the command to end (within its timeout) before it lets the
        cancellation through: a client killed halfway can leave a container half created or half removed. Only an
        `interruptible` command (one that only waits) is killed at once."""
        argv = [self.name, *self.settings.global_args, *args]
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=client_env(),
                start_new_session=True,
                cwd=cwd,
            )
        except OSError as exc:
            raise EngineError(f"cannot run {self.name}: {exc.strerror or exc}") from exc
        limit = timeout or self.settings.command_timeout_seconds
        finished = asyncio.ensure_future(asyncio.wait_for(process.communicate(), limit))
        try:
            stdout, stderr = await asyncio.shield(finished)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise EngineError(f"`{self.name} {args[0]}` did not answer within {limit:.0f} s") from None
        except asyncio.CancelledError:
            if interruptible and process.returncode is None:
                process.kill()
            await asyncio.gather(finished, return_exceptions=True)
            if process.returncode is None:
                process.kill()
                await process.wait()
            raise
        out, err = stdout.decode(errors="replace"), stderr.decode(errors="replace")
        if check and process.returncode != 0:
            raise EngineError(
                f"`{self.name} {args[0]}` exited with {process.returncode}: {err.strip()[-_ENGINE_ERROR_CHARS:]}"
            )
        return process.returncode or 0, out, err

    async def has_image(self, image: str) -> bool:
        code, _, _ = await self.call("image", "inspect", "--format", "{{.Id}}", image, check=False)
        return code == 0

    async def ensure_image(self, image: str, timeout: float | None = None) -> None:
        """Makes sure `image` is on this machine: there already, or pulled (when the settings allow) within
        `timeout` (default: the pull timeout). Raises `ImageUnavailable` otherwise."""
        if await self.has_image(image):
            return
        if not self.settings.pull:
            raise ImageUnavailable(f"image {image} is not on this machine and this provider does not pull images")
        limit = min(timeout, self.settings.pull_timeout_seconds) if timeout else self.settings.pull_timeout_seconds
        log.info("pulling image %s", image)
        try:
            await self.call("pull", "--quiet", image, timeout=max(1.0, limit))
        except EngineError as exc:
            raise ImageUnavailable(f"image {image} could not be pulled: {exc}") from exc

    async def run(self, plan: ContainerPlan) -> None:
        """Creates and starts the plan's container, detached. Raises `EngineError` when it does not start (the
        container may then exist as `created`: remove it).

        The client runs in the rental's folder: podman's monitor (conmon) stays in its client's working folder and
        writes its out-of-memory marker (`oom_marker`) there."""
        argv = run_argv(self.settings, plan)
        await self.call(*argv[1 + len(self.settings.global_args) :], cwd=plan.log_path.parent)

    async def inspect(self, name: str) -> ContainerState | None:
        """The container's state, or None when no container has this name."""
        code, out, err = await self.call("container", "inspect", name, check=False)
        if code != 0:
            if "no such" in err.lower():
                return None
            raise EngineError(f"`{self.name} container inspect {name}` exited with {code}: {err.strip()}")
        (details,) = json.loads(out)
        state = details["State"]
        log_path = details.get("LogPath") or (details.get("HostConfig", {}).get("LogConfig", {}) or {}).get("Path")
        return ContainerState(
            status=str(state.get("Status", "")).lower(),
            exit_code=int(state.get("ExitCode") or 0),
            oom_killed=bool(state.get("OOMKilled")),
            pid=int(state.get("Pid") or 0),
            started_at=_timestamp(state.get("StartedAt")),
            finished_at=_timestamp(state.get("FinishedAt")),
            log_path=log_path or None,
        )

    async def wait(self, name: str) -> None:
        """Returns once the container is no longer running (at once if it is not)."""
        await self.call("wait", name, timeout=float("inf"), check=False, interruptible=True)

    async def stop(self, name: str, grace_seconds: float) -> None:
        """Stops the container: its stop signal (SIGTERM), then SIGKILL after the grace period."""
        await self.call(
            "stop",
            "--time",
            str(max(0, round(grace_seconds))),
            name,
            timeout=grace_seconds + self.settings.command_timeout_seconds,
            check=False,
        )

    async def remove(self, name: str) -> None:
        """Removes the container (killing it if it still runs); no error when it is already gone."""
        code, _, err = await self.call("rm", "--force", name, check=False)
        if code != 0 and "no such" not in err.lower():
            raise EngineError(f"`{self.name} rm {name}` exited with {code}: {err.strip()}")

    async def labelled(self, key: str, value: str) -> list[str]:
        """Names of every container, running or not, that carries the label `key=value`."""
        _, out, _ = await self.call("ps", "--all", "--filter", f"label={key}={value}", "--format", "{{.Names}}")
        return [line.strip() for line in out.splitlines() if line.strip()]


def agent_label(address: str, state_dir: Path) -> str:
    """The `gpuex.agent` label of an agent's containers: its address and its state folder, so that two agents on
    one machine (or two test runs) never take each other's containers for their own."""
    folder = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]
    return f"{address}/{folder}"


def labels(agent: str, rental_id: int) -> tuple[tuple[str, str], ...]:
    """The labels of a rental's container; `agent` is the agent's `agent_label`."""
    return ((AGENT_LABEL, agent), (RENTAL_LABEL, str(rental_id)))


def oom_marker(plan: ContainerPlan) -> Path:
    """The file podman's monitor (conmon) writes in its working folder when the kernel's out-of-memory killer
    ends the container: evidence of an OOM kill where the engine's own `OOMKilled` misses it (cgroups v1)."""
    return plan.log_path.parent / "oom"


def copy_engine_log(state: ContainerState, destination: Path) -> None:
    """Keeps a docker container's log (which `docker rm` deletes) at `destination`; podman's is already there."""
    if state.log_path and Path(state.log_path) != destination and Path(state.log_path).is_file():
        shutil.copyfile(state.log_path, destination)
