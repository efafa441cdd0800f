"""The benchmark suite behind `make bench`: gas, oracle ingest, a scale simulation and sampler CPU, each figure
against its target, written to `docs/PERFORMANCE.md` and `docs/performance.png` (`python -m bench --help`)."""
