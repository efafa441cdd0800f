"""The provider agent: watches the chain for rentals of its offers, runs each rental's job, measures its GPUs
and delivers signed telemetry reports to every oracle through a crash-safe outbox.

- `service.ProviderAgent`: the loop that ties the parts together (start here).
- `watcher`: rental events of the provider's offers from `eth_getLogs`, from a block remembered in SQLite.
- `jobspec`: the job spec, its on-chain hash, and where the agent finds its body.
- `job`: the job as a supervised subprocess in its own process group (or a container).
- `outbox`: every signed report in SQLite until each oracle acknowledged it.
- `rentals`, `store`: the agent's SQLite state; `settings`: its configuration.
"""
