"""gpuex off-chain library: report signing, telemetry, the provider agent and the oracle."""
