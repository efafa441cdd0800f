"""The facts of the machine a benchmark ran on, as `docs/PERFORMANCE.md` prints them."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

from bench.records import Machine

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _first_line(command: list[str]) -> str:
    if shutil.which(command[0]) is None:
        return f"{command[0]} not found"
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=10, cwd=PROJECT_ROOT)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unknown ({exc})"
    return (out.stdout.strip() or out.stderr.strip()).splitlines()[0] if (out.stdout or out.stderr) else "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return 0.0


def _os() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return f"{line.split('=', 1)[1].strip(chr(34))}, Linux {platform.release()}"
    except OSError:
        pass
    return platform.platform()


def gpu_names() -> list[str]:
    """The names of the GPUs NVML sees; empty without a driver or a GPU."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no library, no driver, no device: all mean "no GPU" here
        return []
    try:
        return [
            pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i)) for i in range(pynvml.nvmlDeviceGetCount())
        ]
    finally:
        pynvml.nvmlShutdown()


def _commit() -> str:
    commit = _first_line(["git", "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, cwd=PROJECT_ROOT).stdout
    return f"{commit} (with uncommitted changes)" if dirty.strip() else commit


def this_machine() -> Machine:
    gpus = gpu_names()
    return Machine(
        cpu=_cpu_model(),
        cores=os.cpu_count() or 1,
        memory_gib=round(_memory_gib(), 1),
        os=_os(),
        python=platform.python_version(),
        anvil=_first_line(["anvil", "--version"]),
        gpu=", ".join(gpus) if gpus else "none",
        commit=_commit(),
    )
