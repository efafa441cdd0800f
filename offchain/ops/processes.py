"""Whether a process still runs, for everything that supervises or waits for one (devnet, tests)."""

from __future__ import annotations

import os
from pathlib import Path


def process_alive(pid: int) -> bool:
    """Whether process `pid` runs. A zombie (exited, not yet reaped by its parent) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        pass
    try:
        # The state follows the command name in parentheses, which may itself hold spaces or parentheses.
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:  # gone between the two looks
        return False
    except OSError:
        return True
    return state != "Z"
