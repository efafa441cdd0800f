"""`gpuex agent run --print-unit` and `gpuex oracle serve|keeper --print-unit`: a systemd unit that runs the same
command, with its keys kept out of it; nothing is started."""

from __future__ import annotations

import configparser
import io
import os
import shutil
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from offchain.cli import main

KEY = "0x" + "ab" * 32
#: The settings that imply `NoNewPrivileges=yes` for a service with `User=` (systemd.exec(5), systemd 252).
IMPLY_NO_NEW_PRIVILEGES = {
    "PrivateDevices",
    "ProtectHostname",
    "ProtectClock",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "RestrictAddressFamilies",
    "RestrictNamespaces",
    "LockPersonality",
    "MemoryDenyWriteExecute",
    "RestrictRealtime",
    "RestrictSUIDSGID",
    "SystemCallFilter",
    "SystemCallArchitectures",
    "SystemCallLog",
}


def print_unit(monkeypatch, *args: str, env: dict[str, str] | None = None) -> str:
    for name in [name for name in os.environ if name.startswith("GPUEX_")]:
        monkeypatch.delenv(name)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(args))
    assert code == 0, err.getvalue()
    return out.getvalue()


def service_section(text: str) -> dict[str, list[str]]:
    """The `[Service]` settings of a unit, every value of a repeated setting kept in order."""
    parser = configparser.ConfigParser(strict=False, interpolation=None, comment_prefixes=("#",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    assert set(parser.sections()) == {"Unit", "Service", "Install"}
    values: dict[str, list[str]] = {}
    section = None
    for line in text.splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Service" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def exec_words(value: str) -> list[str]:
    """The words of a systemd command line: double quotes with C escapes, `%%` and `$$` for `%` and `$`."""
    words: list[str] = []
    word: list[str] | None = None
    quoted = False
    chars = iter(value)
    for c in chars:
        if quoted:
            if c == "\\":
                escaped = next(chars)
                word.append({"n": "\n", "r": "\r", "t": "\t"}.get(escaped, escaped))  # type: ignore[union-attr]
            elif c == '"':
                quoted = False
            else:
                word.append(c)  # type: ignore[union-attr]
        elif c == " ":
            if word is not None:
                words.append("".join(word))
            word = None
        else:
            word = [] if word is None else word
            if c == '"':
                quoted = True
            else:
                word.append(c)
    if word is not None:
        words.append("".join(word))
    return [w.replace("%%", "%").replace("$$", "$") for w in words]


def verify(tmp_path: Path, text: str) -> None:
    """`systemd-analyze verify` of the unit, where this machine has it."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("no systemd-analyze here: the unit's syntax was checked by the parser only")
    path = tmp_path / "gpuex-test.service"
    path.write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "gpuex-test.service" not in result.stderr, result.stderr


def test_agent_unit_runs_the_same_command_with_the_key_from_its_environment_file(monkeypatch, tmp_path):
    hostile_oracle = 'http://127.0.0.1:9251/a "b" %i $HOME\\x'
    args = ["agent", "run", "--simulated", "2", "--oracle", hostile_oracle, "--network", "devnet"]
    text = print_unit(
        monkeypatch,
        *args,
        "--print-unit",
        "--unit-env-file",
        str(tmp_path / "agent.env"),
        env={
            "GPUEX_AGENT_KEY": KEY,
            "GPUEX_AGENT_REGISTRY_TOKEN": "registry-s3cret",
            "GPUEX_AGENT_STATE_DIR": str(tmp_path / "state dir"),
        },
    )
    service = service_section(text)
    assert service["Restart"] == ["on-failure"] and int(service["RestartSec"][0]) > 0
    (exec_start,) = service["ExecStart"]
    words = exec_words(exec_start)
    assert words == [os.path.abspath(sys.executable), "-m", "offchain.cli", *args]
    assert service["EnvironmentFile"] == [f"-{tmp_path / 'agent.env'}"]
    assert KEY not in text and "GPUEX_AGENT_KEY=" not in text and "registry-s3cret" not in text
    assert exec_words(service["Environment"][0]) == [f"GPUEX_AGENT_STATE_DIR={tmp_path / 'state dir'}"]
    # Rootless podman needs its setuid helpers, the user's /tmp and home, the cgroup tree and the GPUs' devices.
    assert not set(service) & {"NoNewPrivileges", "PrivateTmp", "ProtectHome", "ProtectControlGroups"}
    assert not set(service) & IMPLY_NO_NEW_PRIVILEGES, "a setting that implies NoNewPrivileges for a User= service"
    assert service["ProtectSystem"] == ["full"]
    verify(tmp_path, text)


def test_oracle_units_are_hardened_and_start_nothing(monkeypatch, tmp_path):
    state_dir = tmp_path / "oracle-state"
    env = {"GPUEX_ORACLE_KEY": KEY, "GPUEX_ORACLE_STATE_DIR": str(state_dir), "GPUEX_ORACLE_PORT": "9252"}
    for command in ("serve", "keeper"):
        text = print_unit(monkeypatch, "oracle", command, "--print-unit", env=env)
        service = service_section(text)
        assert exec_words(service["ExecStart"][0])[3:] == ["oracle", command]
        assert service["EnvironmentFile"] == [f"-/etc/gpuex/{'oracle' if command == 'serve' else 'keeper'}.env"]
        assert service["Restart"] == ["on-failure"]
        assert service["NoNewPrivileges"] == ["yes"] and service["PrivateTmp"] == ["yes"]
        assert KEY not in text
        verify(tmp_path, text)
    assert not state_dir.exists()


def test_abbreviated_unit_options_stay_out_of_the_command(monkeypatch, tmp_path):
    text = print_unit(monkeypatch, "oracle", "serve", "--print-u", f"--unit-env={tmp_path / 'o.env'}", "--json")
    service = service_section(text)
    assert exec_words(service["ExecStart"][0])[3:] == ["oracle", "serve", "--json"]
    assert service["EnvironmentFile"] == [f"-{tmp_path / 'o.env'}"]


def test_a_line_break_in_an_argument_cannot_add_a_setting(monkeypatch):
    text = print_unit(monkeypatch, "oracle", "serve", "--print-unit", "--rpc-url", "http://x\nExecStartPre=/bin/false")
    service = service_section(text)
    assert "ExecStartPre" not in service
    assert exec_words(service["ExecStart"][0])[-1] == "http://x\nExecStartPre=/bin/false"
