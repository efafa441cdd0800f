"""systemd units for the long-running services (`gpuex agent run`, `gpuex oracle serve|keeper`), as
`--print-unit` prints them: the same command line with absolute paths, the service's non-secret `GPUEX_*`
settings from this shell, its secrets (keys) from an `EnvironmentFile`, restart on failure, and a hardening
baseline that fits the service.

The agent's baseline leaves alone what rootless podman needs: its setuid `newuidmap`/`newgidmap` (so no
`NoNewPrivileges`, nor any of the settings that imply it for a service with `User=`: `ProtectKernel*`,
`Restrict*`, `LockPersonality`, ...), the user's `/tmp` and home where its storage and pause process live (so no
`PrivateTmp` or `ProtectHome`), the cgroup tree it creates containers in (no `ProtectControlGroups`), and the GPUs'
device nodes (no `PrivateDevices`). The oracle touches none of these and gets them all.
"""

from __future__ import annotations

import getpass
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

#: Settings named like a secret (`GPUEX_KEY`, `GPUEX_AGENT_KEY`, `GPUEX_ORACLE_KEY`, or any `..._TOKEN` a later
#: setting may hold): never written into a unit, only read from its `EnvironmentFile`.
SECRET_SUFFIXES = ("_KEY", "_SECRET", "_TOKEN", "_PASSWORD")
#: Variables of this shell a unit carries besides the `GPUEX_*` settings: where the package is imported from.
CARRIED_VARIABLES = ("PYTHONPATH",)
RESTART_SECONDS = 5
STOP_TIMEOUT_SECONDS = 60

#: Both services: /usr, /boot and /etc read-only.
_COMMON_HARDENING = (("ProtectSystem", "full"),)
#: For a service that runs no containers. Most of these imply `NoNewPrivileges=yes` for a service with `User=`
#: (systemd.exec(5)), which would stop rootless podman's setuid `newuidmap`: the agent gets none of them.
_STRICT_HARDENING = (
    ("NoNewPrivileges", "yes"),
    ("PrivateTmp", "yes"),
    ("PrivateDevices", "yes"),
    ("ProtectKernelTunables", "yes"),
    ("ProtectKernelModules", "yes"),
    ("ProtectKernelLogs", "yes"),
    ("ProtectControlGroups", "yes"),
    ("RestrictSUIDSGID", "yes"),
    ("RestrictNamespaces", "yes"),
    ("RestrictRealtime", "yes"),
    ("LockPersonality", "yes"),
)
_PLAIN_WORD = re.compile(r"^[A-Za-z0-9_@%+=:,./-]+$")


@dataclass(frozen=True)
class ServiceUnit:
    """A service to run under systemd: `argv` is its command line, `environment` its non-secret settings."""

    description: str
    argv: list[str]
    environment: dict[str, str]
    environment_file: Path
    working_directory: Path
    runs_containers: bool

    def render(self) -> str:
        """The unit file's text."""
        service: list[tuple[str, str]] = [
            ("Type", "exec"),
            ("User", getpass.getuser()),
            ("WorkingDirectory", _quote(str(self.working_directory))),
            # "-": a missing file is no error, so the unit starts with keys from a key file setting alone.
            ("EnvironmentFile", "-" + str(self.environment_file)),
        ]
        service += [("Environment", _quote(f"{name}={value}")) for name, value in sorted(self.environment.items())]
        service += [
            ("ExecStart", " ".join(_quote(arg, expand_dollar=True) for arg in self.argv)),
            ("Restart", "on-failure"),
            ("RestartSec", str(RESTART_SECONDS)),
            # SIGTERM to the service first: it stops its jobs (and their containers) itself before the rest is killed.
            ("KillMode", "mixed"),
            ("TimeoutStopSec", str(STOP_TIMEOUT_SECONDS)),
            *_COMMON_HARDENING,
            *(() if self.runs_containers else _STRICT_HARDENING),
        ]
        lines = [
            "[Unit]",
            f"Description={self.description}",
            "Wants=network-online.target",
            "After=network-online.target",
            "",
            "[Service]",
            f"# Keys and other secrets (GPUEX_*{', *'.join(SECRET_SUFFIXES)}) go in {self.environment_file} (mode "
            "0600), never here.",
            *(f"{key}={value}" for key, value in service),
            "",
            "[Install]",
            "WantedBy=multi-user.target",
        ]
        return "\n".join(lines) + "\n"


def service_unit(
    description: str, command_line: list[str], environment_file: Path, runs_containers: bool
) -> ServiceUnit:
    """The unit of the `gpuex` command `command_line` (its arguments, without `gpuex`) as this shell would run it:
    this Python, this directory, and the shell's `GPUEX_*` settings but its secrets."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if (name.startswith("GPUEX_") and not name.upper().endswith(SECRET_SUFFIXES)) or name in CARRIED_VARIABLES
    }
    if runs_containers:
        # Rootless podman keeps its runtime state there; a system service gets no XDG_RUNTIME_DIR of its own.
        environment.setdefault("XDG_RUNTIME_DIR", os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}")
    return ServiceUnit(
        description=description,
        argv=[os.path.abspath(sys.executable), "-m", "offchain.cli", *command_line],
        environment=environment,
        environment_file=environment_file.absolute(),
        working_directory=Path.cwd(),
        runs_containers=runs_containers,
    )


def _quote(value: str, expand_dollar: bool = False) -> str:
    """`value` as one word of a unit file's setting: double-quoted with C escapes unless plain, `%` doubled (systemd
    expands specifiers), and `$` doubled where systemd expands variables (`ExecStart`)."""
    value = value.replace("%", "%%")
    if expand_dollar:
        value = value.replace("$", "$$")
    if _PLAIN_WORD.match(value):
        return value
    escaped = (
        value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    )
    return f'"{escaped}"'
