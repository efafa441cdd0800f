"""The provider agent: watches the chain for rentals of its offers, runs each rental's job in a hardened container,
measures its GPUs, delivers signed telemetry reports to every oracle through a crash-safe outbox, and serves the
rental's renter its job through a signed renter API.

- `service.ProviderAgent`: the loop that ties the parts together (start here).
- `watcher`: rental events of the provider's offers from `eth_getLogs`, from a block remembered in SQLite.
- `jobspec`: the job spec (bounded, untrusted input), its on-chain hash, and where the agent finds its body.
- `admission`: whether this machine can serve a rental; what it cannot serve is declined.
- `containers`: the engine (podman or docker) and the hardened `run` command line; `logs`: the engine's job log.
- `launcher`: launching, taking over and clearing a rental's job; `job`: a job while it runs and how it ended;
  `bareprocess`: the unsafe development mode; `workspace`: a rental's folder and safe paths in it.
- `chainclock`: the chain's time, which rentals run on and reports are stamped with, measured from block timestamps.
- `api`: the renter API (spec upload, status, logs, results, shell).
- `outbox`: every signed report in SQLite until each oracle acknowledged it.
- `rentals`, `store`: the agent's SQLite state; `settings`: its configuration.
"""
