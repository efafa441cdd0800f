"""Where a devnet keeps its state when nothing says otherwise. Apart from `offchain.ops.devnet` so that the command
line's parser can name it without importing the devnet's code (and web3 with it)."""

from pathlib import Path

#: Relative: the devnet of the directory a command runs in, unless `--state-dir`, `$GPUEX_DEVNET_DIR` or a
#: profile's `state_dir` names another.
DEFAULT_DIR = Path("gpuex-devnet")
