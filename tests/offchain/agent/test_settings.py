"""The agent's settings: bare host processes only on a local development chain, a job user that is never root, a
positive bound on the clock's skew."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from offchain.agent.settings import ProviderAgentSettings
from offchain.config import ChainSettings

KEY = "0x" + "11" * 32
ADDRESS = "0x" + "22" * 20


def settings(chain_id: int, **values) -> ProviderAgentSettings:
    chain = ChainSettings(chain_id=chain_id, registry=ADDRESS, escrow=ADDRESS)
    return ProviderAgentSettings(chain=chain, key=KEY, provider=ADDRESS, oracles=["http://127.0.0.1:9"], **values)


@pytest.mark.parametrize("chain_id", [1, 10, 8453, 11155111])
def test_bare_processes_are_refused_on_any_chain_but_a_local_one(chain_id):
    with pytest.raises(ValidationError, match="unsafe_bare_process is refused on chain"):
        settings(chain_id, unsafe_bare_process=True)


@pytest.mark.parametrize("chain_id", [1337, 31337])
def test_bare_processes_may_run_on_a_local_chain(chain_id):
    assert settings(chain_id, unsafe_bare_process=True).unsafe_bare_process


def test_containers_by_default_with_a_non_root_user():
    chosen = settings(11155111)

    assert not chosen.unsafe_bare_process and chosen.container.engine == "podman"
    assert chosen.container.uid != 0 and chosen.container.gid != 0
    with pytest.raises(ValidationError):
        settings(1, container={"user": "0:0"})


def test_the_clock_skew_bound_comes_from_the_environment_and_must_be_positive(monkeypatch):
    assert settings(1).max_clock_skew_seconds == 30
    monkeypatch.setenv("GPUEX_AGENT_MAX_CLOCK_SKEW_SECONDS", "5")
    assert settings(1).max_clock_skew_seconds == 5
    for hostile in ("0", "-30", "nan", "soon"):
        monkeypatch.setenv("GPUEX_AGENT_MAX_CLOCK_SKEW_SECONDS", hostile)
        with pytest.raises(ValidationError, match="max_clock_skew_seconds"):
            settings(1)
