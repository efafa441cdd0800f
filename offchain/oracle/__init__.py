"""The oracle service: agents' signed telemetry in (`POST /v1/telemetry`), k-of-n co-signing of report batches
(`POST /v1/cosign`), health and Prometheus metrics. `app.create_app` builds it; the batcher lands each rental's
latest accepted report from `store.SubmissionStore` when the landing policy says it is due, with co-signatures
from peers (`cosign.collect_cosignatures`)."""
