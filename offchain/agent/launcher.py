"""How the agent runs a rental's job on this machine: launches it in a container (or, in the unsafe development
mode, as a bare process), takes over the container an earlier life of the agent left, stops and removes what is
left of a job nobody waits for, and clears finished rentals' containers and folders.

The rental's state (which container, which deadline, how the job ended) lives in the agent's `RentalBook`; a
launch is written there before it is made, so an agent that crashes right after still finds its container.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Collection

from eth_account import Account

from offchain.agent.admission import Allowance
from offchain.agent.bareprocess import BareProcessJob, kill_stale_job, new_token
from offchain.agent.containers import (
    AGENT_LABEL,
    ContainerEngine,
    ContainerPlan,
    Engine,
    EngineError,
    agent_label,
    labels,
)
from offchain.agent.job import ContainerJob, Job
from offchain.agent.jobspec import JobSpec
from offchain.agent.rentals import Phase, RentalBook, RentalRecord
from offchain.agent.settings import ProviderAgentSettings
from offchain.agent.workspace import RentalFiles
from offchain.protocol.renterapi import unseal

log = logging.getLogger(__name__)

ISOLATION_CONTAINER = "container"
ISOLATION_BARE = "bare-process"


class ContainerEngineMissing(RuntimeError):
    """The container engine the settings name is not installed on this machine."""


@dataclass(frozen=True)
class PreparedJob:
    """What running a rental's job takes: its spec, the offer's GPUs here (in the offer's order), and (in
    containers) what the job may use."""

    spec: JobSpec
    gpu_uuids: tuple[str, ...]
    allowance: Allowance | None


def container_name(rental_id: int) -> str:
    """A fresh container name for a launch of a rental's job."""
    return f"gpuex-{rental_id:x}-{secrets.token_hex(6)}"


class JobLauncher:
    """The jobs of one agent (its address, with its state folder, labels its containers; its key opens the jobs'
    sealed secret values)."""

    def __init__(
        self,
        settings: ProviderAgentSettings,
        book: RentalBook,
        key: str,
        *,
        real_gpus: bool,
        clock: Callable[[], float],
    ) -> None:
        self.engine = None if settings.unsafe_bare_process else Engine(settings.container)
        if self.engine is not None and not self.engine.available():
            raise ContainerEngineMissing(
                f"{self.engine.name} is not installed: every job runs in a container; install "
                f"{self.engine.name} (or set GPUEX_AGENT_CONTAINER__ENGINE)"
            )
        self._settings = settings
        self._book = book
        self._key = key
        self.label = agent_label(Account.from_key(key).address, settings.state_dir)
        self._real_gpus = real_gpus
        self._clock = clock

    @property
    def isolation(self) -> str:
        """`container`, or `bare-process` in the unsafe development mode."""
        return ISOLATION_BARE if self.engine is None else ISOLATION_CONTAINER

    def files_of(self, rental_id: int) -> RentalFiles:
        """The rental's folder on this machine."""
        return RentalFiles(self._settings.rentals_dir / str(rental_id))

    async def job_for(self, record: RentalRecord, prepared: PreparedJob) -> Job:
        """The rental's job: its container still there (running or exited) taken over, else a new launch."""
        rental_id = record.rental_id
        spec = prepared.spec
        deadline = record.job_deadline
        if deadline is None and spec.timeout_seconds is not None:
            deadline = self._clock() + spec.timeout_seconds
        if self.engine is None:
            return await self._bare_process(record, prepared, deadline)
        if record.container is not None:
            state = await self.engine.inspect(record.container)
            if state is not None and (state.running or state.exited):
                job = self._container_job(record, prepared, record.container, record.job_deadline)
                await job.attach()
                return job
            if state is not None:
                await self.engine.remove(record.container)
            log.warning("rental %d: container %s is gone: launching the job again", rental_id, record.container)
        name = container_name(rental_id)
        self._book.set_launch(
            rental_id,
            isolation=ISOLATION_CONTAINER,
            container=name,
            token=None,
            deadline=deadline,
            gpus=prepared.gpu_uuids,
        )
        await asyncio.to_thread(self.files_of(rental_id).prepare, spec.working_dir, self._job_owner())
        job = self._container_job(record, prepared, name, deadline)
        await job.start()
        return job

    async def _bare_process(self, record: RentalRecord, prepared: PreparedJob, deadline: float | None) -> Job:
        rental_id = record.rental_id
        if record.job_token is not None:
            found = await kill_stale_job(record.job_token, self._settings.stop_grace_seconds)
            log.warning("rental %d: stopped %d process(es) left by the agent's previous run", rental_id, found)
        token = new_token()
        self._book.set_launch(
            rental_id, isolation=ISOLATION_BARE, container=None, token=token, deadline=deadline, gpus=prepared.gpu_uuids
        )
        job = BareProcessJob(
            prepared.spec,
            self.files_of(rental_id),
            rental_id=rental_id,
            gpu_uuids=prepared.gpu_uuids,
            token=token,
            deadline=deadline,
            stop_grace_seconds=self._settings.stop_grace_seconds,
            secrets=self._secret_values(rental_id, prepared.spec),
        )
        await job.start()
        return job

    def _job_owner(self) -> tuple[int, int] | None:
        """Who owns the workspace: the job's user when the agent may give files away (it runs as root), else
        nobody in particular (the workspace folders are then writable by every user that can reach them)."""
        settings = self._settings.container
        return (settings.uid, settings.gid) if os.geteuid() == 0 else None

    def _container_job(
        self, record: RentalRecord, prepared: PreparedJob, name: str, deadline: float | None
    ) -> ContainerJob:
        assert self.engine is not None and prepared.allowance is not None
        spec, allowance = prepared.spec, prepared.allowance
        files = self.files_of(record.rental_id)
        plan = ContainerPlan(
            name=name,
            image=allowance.image,
            argv=tuple(spec.argv),
            workspace=files.work,
            working_dir=spec.working_dir,
            env_file=files.env_file,
            log_path=files.container_log,
            # Simulated GPUs exist nowhere: a container of a simulated machine gets no GPU device.
            gpu_uuids=prepared.gpu_uuids if self._real_gpus else (),
            memory_mib=allowance.memory_mib,
            cpus=allowance.cpus,
            egress=allowance.egress,
            labels=labels(self.label, record.rental_id),
        )
        env = {
            **spec.env,
            **self._secret_values(record.rental_id, spec),
            "HOME": "/workspace",
            "CUDA_VISIBLE_DEVICES": ",".join(prepared.gpu_uuids),
            "GPUEX_RENTAL_ID": str(record.rental_id),
        }
        return ContainerJob(
            self.engine,
            plan,
            env,
            output_dir=spec.output_dir,
            results=files.results,
            deadline=deadline,
            stop_grace_seconds=self._settings.stop_grace_seconds,
            timeout_seconds=spec.timeout_seconds,
        )

    def has_secrets(self, rental_id: int, spec: JobSpec) -> bool:
        """Whether the sealed values of every `secret_env` name of the spec are here."""
        if not spec.secret_env:
            return True
        path = self.files_of(rental_id).secrets
        return path.is_file() and set(json.loads(path.read_bytes())) == set(spec.secret_env)

    def _secret_values(self, rental_id: int, spec: JobSpec) -> dict[str, str]:
        """The spec's secret values, opened with the agent's key for the env file of the job's start only."""
        if not spec.secret_env:
            return {}
        sealed = json.loads(self.files_of(rental_id).secrets.read_bytes())
        return {name: unseal(self._key, sealed[name]) for name in spec.secret_env}

    def forget_secrets(self, rental_id: int) -> None:
        """Removes a rental's sealed secret values (its job will not start again)."""
        self.files_of(rental_id).secrets.unlink(missing_ok=True)

    async def log_path(self, record: RentalRecord | None) -> Path | None:
        """Where the job's engine log is now: in the rental's folder (podman; docker once the job ended), or the
        engine's own file while a docker job runs; None before the first launch."""
        if self.engine is None or record is None or record.container is None:
            return None
        files = self.files_of(record.rental_id)
        if self.engine.settings.engine is ContainerEngine.PODMAN or files.container_log.exists():
            return files.container_log
        state = await self.engine.inspect(record.container)
        return Path(state.log_path) if state is not None and state.log_path else None

    async def discard(self, record: RentalRecord) -> None:
        """Stops whatever is left of a rental's job that nobody waits for any more (after a restart)."""
        if self.engine is None:
            if record.job_token is not None:
                await kill_stale_job(record.job_token, self._settings.stop_grace_seconds)
            return
        if record.container is not None:
            await self.engine.stop(record.container, self._settings.stop_grace_seconds)
            await self.remove_container(record)

    async def remove_container(self, record: RentalRecord) -> None:
        """Removes a done rental's container (its log stays in the rental's folder); the janitor retries."""
        if self.engine is None or record.container is None:
            return
        try:
            await self.engine.remove(record.container)
        except EngineError as exc:
            log.warning("rental %d: container %s not removed yet: %s", record.rental_id, record.container, exc)

    async def clean_up(self, active: Collection[int]) -> None:
        """Removes the containers of rentals that are done (or unknown) and the folders of rentals done longer
        than the retention period, leaving alone the rentals in `active` (being handled right now)."""
        if self.engine is not None:
            for name in await self.engine.labelled(AGENT_LABEL, self.label):
                record = self._book.by_container(name)
                if record is None or (record.phase is Phase.DONE and record.rental_id not in active):
                    log.info("removing container %s of a finished or unknown rental", name)
                    await self.engine.remove(name)
        for record in self._book.expired_folders(self._clock() - self._settings.workspace_retention_seconds):
            if record.rental_id in active:
                continue
            await asyncio.to_thread(self.files_of(record.rental_id).remove)
            self._book.mark_cleaned(record.rental_id)
            log.info("rental %d: folder removed after the retention period", record.rental_id)
