"""The agent's settings: `AgentSettings` plus what only the job runner, watcher and outbox need.

Same environment prefix (`GPUEX_AGENT_`); for example `GPUEX_AGENT_SPEC_URL=https://specs.example/{hash}`,
`GPUEX_AGENT_CONTAINER_RUNTIME=podman`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from offchain.agent.job import ContainerRuntime
from offchain.agent.store import DB_FILE_NAME
from offchain.config import AgentSettings


class ProviderAgentSettings(AgentSettings):
    """Everything the provider agent runs with."""

    spec_dir: Path | None = None  # job specs by hash; default `<state_dir>/specs`
    spec_url: str | None = None  # URL template with `{hash}` to fetch specs that are not in spec_dir
    container_runtime: ContainerRuntime | None = None  # needed for job specs that name an image
    stop_grace_seconds: float = Field(default=10.0, gt=0)
    sample_interval_seconds: float = Field(default=1.0, gt=0)
    chain_poll_seconds: float = Field(default=2.0, gt=0)
    start_block: int | None = Field(default=None, ge=0)  # where a new agent starts watching; default: the head
    confirmations: int = Field(default=0, ge=0)
    http_timeout_seconds: float = Field(default=10.0, gt=0)  # each request to an oracle or the spec URL
    retry_initial_seconds: float = Field(default=1.0, gt=0)
    retry_max_seconds: float = Field(default=60.0, gt=0)
    tx_timeout_seconds: float = Field(default=120.0, gt=0)

    @field_validator("spec_url")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is not None and "{hash}" not in value:
            raise ValueError("spec_url must contain {hash}")
        return value

    @property
    def spec_directory(self) -> Path:
        return self.spec_dir if self.spec_dir is not None else self.state_dir / "specs"

    @property
    def db_path(self) -> Path:
        return self.state_dir / DB_FILE_NAME

    @property
    def rentals_dir(self) -> Path:
        """Per-rental workspaces and job logs: `<state_dir>/rentals/<rental id>/`."""
        return self.state_dir / "rentals"
