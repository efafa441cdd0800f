"""The user's config file: named profiles of the settings a command would otherwise take from flags or the
environment, so that `gpuex` works the same from any directory.

The file is `$GPUEX_CONFIG`, else `$XDG_CONFIG_HOME/gpuex/config.toml`, else `~/.config/gpuex/config.toml`:

    default = "devnet"

    [profiles.devnet]
    state_dir = "~/gpuex-devnet"
    key_file = "~/gpuex-devnet/keys/renter.key"

    [profiles.sepolia]
    network = "sepolia"
    rpc_url = "https://sepolia.example/v3/..."
    key_file = "~/.config/gpuex/sepolia.key"

A command uses the profile named by `--profile` / `GPUEX_PROFILE`, else the file's `default`, else none. Each
setting comes from the first of: the command-line flag, the environment variable, the profile, the built-in default
(`resolve`). Paths may start with `~`; relative ones are relative to the file's directory. A key file named in the
file must be readable by its owner only. The file holds paths and URLs, never a key.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from offchain.cli.args import DEVNET_DIR_ENV, NETWORK_ENV, RPC_URL_ENV, UsageError
from offchain.ops.devnetdir import DEFAULT_DIR as DEFAULT_DEVNET_DIR

CONFIG_ENV = "GPUEX_CONFIG"
PROFILE_ENV = "GPUEX_PROFILE"
KEY_ENV = "GPUEX_KEY"
KEY_FILE_ENV = "GPUEX_KEY_FILE"
AGENT_KEY_ENV = "GPUEX_AGENT_KEY"
AGENT_KEY_FILE_ENV = "GPUEX_AGENT_KEY_FILE"
AGENT_ORACLES_ENV = "GPUEX_AGENT_ORACLES"
PROFILE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class Key:
    """A setting a profile may hold: the flag and environment variable that override it, and its kind."""

    flag: str | None
    env: str | None
    dest: str | None = None  # the flag's attribute on the parsed arguments
    path: bool = False
    many: bool = False  # a string or a list of strings
    help: str = ""


KEYS: dict[str, Key] = {
    "network": Key("--network", NETWORK_ENV, "network", help="'devnet', or a name or chain id with a record"),
    "rpc_url": Key("--rpc-url", RPC_URL_ENV, "rpc_url", help="the chain's JSON-RPC URL"),
    "state_dir": Key("--state-dir", DEVNET_DIR_ENV, "state_dir", path=True, help="the devnet's state directory"),
    "key_file": Key(None, KEY_FILE_ENV, path=True, help="the acting account's key file (owner-only permissions)"),
    "oracle_url": Key("--oracle", AGENT_ORACLES_ENV, "oracles", many=True, help="`gpuex agent run`'s oracles"),
    "agent_key_file": Key(None, AGENT_KEY_FILE_ENV, path=True, help="`gpuex agent run`'s key file"),
}

#: What a setting is when nothing sets it (those absent have no default).
DEFAULTS: dict[str, Any] = {"state_dir": DEFAULT_DEVNET_DIR}


@dataclass(frozen=True)
class Profile:
    """The selected profile (`name` None: none) of the config file at `path` (which may not exist)."""

    path: Path
    name: str | None
    values: dict[str, Any]

    def key_file(self, key: str = "key_file") -> Path | None:
        """The key file this profile names for `key` (None if it names none), checked to exist and to be readable
        by its owner only, as ssh checks a private key."""
        path: Path | None = self.values.get(key)
        if path is None:
            return None
        where = f"{key} of profile {self.name} ({self.path})"
        try:
            mode = path.stat().st_mode
        except OSError:
            raise UsageError(f"{where}: no such file {path}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise UsageError(f"{where}: {path} is open to other users; run `chmod 600 {path}`")
        return path


@dataclass(frozen=True)
class Resolved:
    """A setting's value and where it came from: `flag --x`, `env NAME`, `profile P in FILE` or `default`."""

    value: Any
    source: str


def config_path() -> Path:
    """`$GPUEX_CONFIG`, else `$XDG_CONFIG_HOME/gpuex/config.toml` (an absolute one), else
    `~/.config/gpuex/config.toml`."""
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV]).expanduser()
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".config"
    return base / "gpuex" / "config.toml"


def read_file(path: Path, creating: bool = False) -> dict[str, Any]:
    """The file's validated content; `UsageError` naming the file and the bad key. A file that does not exist is
    empty, unless `$GPUEX_CONFIG` names it and the caller is not `creating` it (a mistyped path is not ignored)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        if os.environ.get(CONFIG_ENV) and not creating:
            raise UsageError(f"{CONFIG_ENV}={path}: no such file") from None
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the config file {path}: {exc}") from None
    import tomllib  # only when there is a file to read: a command without one does not pay for it

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from None
    _validate(data, path)
    return data


def _validate(data: dict[str, Any], path: Path) -> None:
    for key in data:
        if key not in ("default", "profiles"):
            raise UsageError(f"{path}: unknown key {key!r} (the file holds `default` and [profiles.NAME] tables)")
    if "default" in data and not isinstance(data["default"], str):
        raise UsageError(f"{path}: `default` must be a profile's name")
    profiles = data.get("profiles", {})
    if not isinstance(profiles, dict):
        raise UsageError(f"{path}: `profiles` must be tables ([profiles.NAME])")
    for name, values in profiles.items():
        if not PROFILE_NAME.fullmatch(name):
            raise UsageError(f"{path}: bad profile name {name!r} (letters, digits, '-' and '_')")
        if not isinstance(values, dict):
            raise UsageError(f"{path}: profile {name!r} must be a table ([profiles.{name}])")
        for key, value in values.items():
            if key not in KEYS:
                raise UsageError(f"{path}: unknown key {key!r} in profile {name!r} (known: {', '.join(KEYS)})")
            many = KEYS[key].many and isinstance(value, list) and all(isinstance(v, str) for v in value)
            if not (isinstance(value, str) and value) and not many:
                raise UsageError(f"{path}: {key} in profile {name!r} must be a non-empty string")
    if "default" in data and data["default"] not in profiles:
        raise UsageError(f"{path}: the default profile {data['default']!r} is not defined")


def selected(args: argparse.Namespace | None) -> Profile:
    """The profile of `--profile`, else `$GPUEX_PROFILE`, else the file's default; `UsageError` when the one named
    does not exist. Its paths are expanded (`~`) and made absolute against the file's directory."""
    path = config_path()
    data = read_file(path)
    asked = getattr(args, "profile", None) or os.environ.get(PROFILE_ENV) or None
    name = asked or data.get("default")
    if name is None:
        return Profile(path, None, {})
    profiles = data.get("profiles", {})
    if name not in profiles:
        if not path.exists():
            raise UsageError(f"no profile {name!r}: no config file {path}")
        raise UsageError(f"no profile {name!r} in {path} (profiles: {', '.join(profiles) or 'none'})")
    values = {
        key: _absolute(Path(value).expanduser(), path) if KEYS[key].path else value
        for key, value in profiles[name].items()
    }
    return Profile(path, name, values)


def _absolute(value: Path, config: Path) -> Path:
    return value if value.is_absolute() else (config.parent / value).resolve()


def resolve(args: argparse.Namespace | None, key: str, profile: Profile | None = None) -> Resolved:
    """Setting `key`: the command-line flag, else the environment variable, else the profile, else the default."""
    spec = KEYS[key]
    if spec.dest is not None and args is not None:
        flag_value = getattr(args, spec.dest, None)
        if flag_value:
            return Resolved(flag_value, f"flag {spec.flag}")
    if spec.env is not None and os.environ.get(spec.env):
        return Resolved(os.environ[spec.env], f"env {spec.env}")
    profile = profile if profile is not None else selected(args)
    if key in profile.values:
        return Resolved(profile.values[key], f"profile {profile.name} in {profile.path}")
    return Resolved(DEFAULTS.get(key), "default")


def write_file(path: Path, data: dict[str, Any]) -> None:
    """Writes the config file (owner-only permissions: an RPC URL may hold an API key) atomically, after checking
    that what is written reads back as `data`. Comments in the file are not kept."""
    lines = []
    if data.get("default") is not None:
        lines.append(f"default = {_toml_string(data['default'])}")
    for name, values in data.get("profiles", {}).items():
        lines += ["", f"[profiles.{name}]"]
        lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
    text = "\n".join(lines).lstrip("\n") + "\n"
    import tomllib

    try:
        round_trips = tomllib.loads(text) == data
    except tomllib.TOMLDecodeError:
        round_trips = False
    if not round_trips:
        raise UsageError("the value cannot be written as TOML (a control character?)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)


def _toml_string(value: str) -> str:
    # JSON's string escapes are TOML's basic-string escapes; DEL and non-BMP characters are refused by the
    # read-back check in `write_file` rather than written wrong.
    return json.dumps(value, ensure_ascii=False)


def _toml_value(value: str | list[str]) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml_string(v) for v in value) + "]"
    return _toml_string(value)
