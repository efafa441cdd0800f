"""The oracle service: agents' signed telemetry in (`POST /v1/telemetry`), k-of-n co-signing of report batches
(`POST /v1/cosign`), health and Prometheus metrics. `app.create_app` builds it; the batcher takes accepted
reports from `store.SubmissionStore` and co-signatures from peers with `cosign.collect_cosignatures`."""
