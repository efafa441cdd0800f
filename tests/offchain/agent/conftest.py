"""Fixtures of the agent tests on the real anvil: the AGENT key funded for gas, and offers whose GPUs are those of a
seeded simulated telemetry source, so the agent finds every GPU of the offer on its "machine"."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import pytest
from brownie import web3

from offchain.agent.containers import ContainerSettings
from offchain.agent.settings import ProviderAgentSettings
from offchain.protocol.messages import gpu_uuid_hash
from offchain.telemetry.simulated import SimulatedSource
from offchain.telemetry.source import TelemetrySource
from tests.offchain.conftest import AGENT, AGENT_KEY, PRICE

_seeds = itertools.count(1000)
#: The skew these agents allow. Other suites on the same anvil move its clock far from the wall clock (`chain.sleep`
#: ahead; their isolation's reverts back to a snapshot's time), and the agent keeps time by the chain's clock
#: whatever its distance: its bound is for a provider machine, and test_chainclock tests it.
ANY_SKEW_SECONDS = 10 * 365 * 86_400.0


@dataclass(frozen=True)
class ListedOffer:
    offer_id: int
    source: TelemetrySource  # sees exactly the offer's GPUs
    seed: int | None  # SimulatedSource(..., 2, seed=seed) sees them too, in another process


@pytest.fixture(scope="module")
def funded_agent(offer, deployer):
    """The `offer` fixture staked the provider and set AGENT as its agent key; the key also needs gas."""
    deployer.transfer(AGENT.address, "10 ether")
    return AGENT


@pytest.fixture
def gpu_offer(suite, provider, funded_agent):
    """Lists a new offer of the GPUs of `source`, by default of a fresh simulated source of two GPUs."""

    def _gpu_offer(min_duration: int = 60, source: TelemetrySource | None = None, egress: bool = False) -> ListedOffer:
        seed = next(_seeds) if source is None else None
        source = source or SimulatedSource("NVIDIA H100 80GB HBM3", 2, seed=seed)
        hashes = [gpu_uuid_hash(gpu.uuid) for gpu in source.gpus()]
        suite.registry.registerGpus(hashes, {"from": provider})
        terms = (
            b"H100-80GB".ljust(32, b"\0"),
            81_559,
            PRICE,
            min_duration,
            86_400,
            b"eu-west".ljust(16, b"\0"),
            10_000,
            egress,
            hashes,
        )
        return ListedOffer(suite.registry.createOffer(terms, {"from": provider}).return_value, source, seed)

    return _gpu_offer


@pytest.fixture
def agent_settings(chain_settings, provider, tmp_path, job_image):
    """Settings for an agent with state under tmp_path that watches from the next block, fast everything, running
    jobs in the busybox job image with small limits and stopping them when it stops, on the chain's clock however
    far other suites moved it."""

    def _agent_settings(oracles: list[str], state_dir: Path | None = None, **overrides) -> ProviderAgentSettings:
        fields = dict(
            chain=chain_settings,
            key="0x" + AGENT_KEY.hex(),
            provider=provider.address,
            oracles=oracles,
            allow_simulated=True,
            state_dir=state_dir or tmp_path / "agent",
            report_interval_seconds=1.0,
            chain_poll_seconds=0.2,
            stop_grace_seconds=1.0,
            start_block=web3.eth.block_number + 1,
            retry_initial_seconds=0.1,
            retry_max_seconds=0.5,
            tx_timeout_seconds=20,
            container=ContainerSettings(
                default_image=job_image, memory_mib_per_gpu=256, cpus_per_gpu=1, pids_limit=128
            ),
            keep_jobs_on_exit=False,
            api_port=0,
            max_clock_skew_seconds=ANY_SKEW_SECONDS,
        )
        fields.update(overrides)
        return ProviderAgentSettings(**fields)

    return _agent_settings
