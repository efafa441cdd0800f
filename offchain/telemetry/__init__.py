"""GPU telemetry: sources that sample every GPU once a tick, and the per-period summary a report carries.

- `models`: `GpuSample` and its canonical bytes; `source`: the `TelemetrySource` interface and errors.
- Sources: `nvml.NvmlSource` (the real GPUs), `replay.ReplaySource` (a recorded trace) and
  `simulated.SimulatedSource` (made up, always labelled simulated); `ticks.ticks` paces any of them.
- `window.summarize`: delivered seconds, utilisation, peak memory and the `merkle` root of a period.
- `trace`, `recorder` and `python -m offchain.telemetry.record`: trace files for replay.
"""
