"""Runs a provider agent in its own process for the crash test: `python agent_process.py SEED`.

Settings come from the `GPUEX_AGENT_*` environment, as a deployed agent's do; telemetry is the simulated source
of the given seed (two H100s), which the test registered as the offer's GPUs. Logs go to stderr.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from offchain.agent.service import ProviderAgent
from offchain.agent.settings import ProviderAgentSettings
from offchain.telemetry.simulated import SimulatedSource

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    source = SimulatedSource("NVIDIA H100 80GB HBM3", 2, seed=int(sys.argv[1]))
    asyncio.run(ProviderAgent(ProviderAgentSettings(), source).run())
