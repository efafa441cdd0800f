"""The agent's settings: `AgentSettings` plus what only the job runner, watcher and outbox need.

Same environment prefix (`GPUEX_AGENT_`), nested keys with `__`; for example
`GPUEX_AGENT_SPEC_URL=https://specs.example/{hash}`, `GPUEX_AGENT_CONTAINER__MEMORY_MIB_PER_GPU=32768`,
`GPUEX_AGENT_CONTAINER__DEFAULT_IMAGE=docker.io/pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from offchain.agent.containers import ContainerSettings
from offchain.agent.store import DB_FILE_NAME, TX_DB_FILE_NAME
from offchain.config import AgentSettings

#: Chain ids of local development chains (Brownie's and Hardhat's, anvil's): the only chains on which the agent
#: may run jobs as bare host processes.
LOCAL_CHAIN_IDS = frozenset({1337, 31337})


class UnsafeModeRefused(ValueError):
    """`unsafe_bare_process` was asked for on a chain that is not a local development chain."""


class ProviderAgentSettings(AgentSettings):
    """Everything the provider agent runs with."""

    spec_dir: Path | None = None  # job specs by hash; default `<state_dir>/specs`
    spec_url: str | None = None  # URL template with `{hash}` to fetch specs that are not in spec_dir
    spec_wait_seconds: float = Field(default=120.0, gt=0)  # then the rental is declined (capped: see service)
    container: ContainerSettings = ContainerSettings()
    # Runs jobs as bare processes of the agent's own user, with no isolation at all: local chains only.
    unsafe_bare_process: bool = False
    # A clean stop leaves running containers to a restarted agent; False stops them (demos and tests).
    keep_jobs_on_exit: bool = True
    # The renter API (offchain.agent.api): where it listens. The provider publishes the URL renters reach it at on
    # chain (`gpuex provider set-agent-url`); put TLS in front of it anywhere but on a local chain.
    api_host: str = "127.0.0.1"
    api_port: int | None = Field(default=8780, ge=0, le=65535)  # None: no renter API; 0: any free port
    workspace_retention_seconds: float = Field(default=7 * 86_400.0, ge=0)  # results and logs after the end
    janitor_interval_seconds: float = Field(default=60.0, gt=0)
    stop_grace_seconds: float = Field(default=10.0, gt=0)
    sample_interval_seconds: float = Field(default=1.0, gt=0)
    chain_poll_seconds: float = Field(default=2.0, gt=0)
    start_block: int | None = Field(default=None, ge=0)  # where a new agent starts watching; default: the head
    confirmations: int = Field(default=0, ge=0)
    http_timeout_seconds: float = Field(default=10.0, gt=0)  # each request to an oracle or the spec URL
    retry_initial_seconds: float = Field(default=1.0, gt=0)
    retry_max_seconds: float = Field(default=60.0, gt=0)
    tx_timeout_seconds: float = Field(default=120.0, gt=0)
    # How far this machine's clock may be from the chain's (measured from block timestamps) before the agent logs
    # an ERROR and declines new rentals (offchain.agent.chainclock); samples and reports are on chain time anyway.
    max_clock_skew_seconds: float = Field(default=30.0, gt=0)

    @field_validator("spec_url")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is not None and "{hash}" not in value:
            raise ValueError("spec_url must contain {hash}")
        return value

    @model_validator(mode="after")
    def _unsafe_only_locally(self) -> "ProviderAgentSettings":
        if self.unsafe_bare_process and self.chain.chain_id not in LOCAL_CHAIN_IDS:
            raise UnsafeModeRefused(
                f"unsafe_bare_process is refused on chain {self.chain.chain_id}: it runs renters' jobs as bare "
                f"processes of the agent's user, for a local development chain "
                f"({', '.join(map(str, sorted(LOCAL_CHAIN_IDS)))}) only"
            )
        return self

    @property
    def spec_directory(self) -> Path:
        return self.spec_dir if self.spec_dir is not None else self.state_dir / "specs"

    @property
    def db_path(self) -> Path:
        return self.state_dir / DB_FILE_NAME

    @property
    def tx_db_path(self) -> Path:
        return self.state_dir / TX_DB_FILE_NAME

    @property
    def rentals_dir(self) -> Path:
        """Per-rental folders: `<state_dir>/rentals/<rental id>/` (`offchain.agent.workspace.RentalFiles`)."""
        return self.state_dir / "rentals"
