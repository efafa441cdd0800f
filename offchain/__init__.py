"""gpuex off-chain library, in layers (README.md has the map): `protocol` and `chain` at the bottom, then
`telemetry`, the provider `agent`, the `market` readers and actions, the `web` page, the `oracle`, `ops` and the
`cli` on top."""
