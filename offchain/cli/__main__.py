"""`python -m offchain.cli`: the `gpuex` command without the console script."""

from offchain.cli import main

raise SystemExit(main())
