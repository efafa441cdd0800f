"""`gpuex config show|set|unset|use`: the config file of profiles (`offchain.cli.profiles`) — what each setting is
and where it comes from, and changes to the file without editing it by hand."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from offchain.cli import profiles
from offchain.cli.args import ExitStatus, UsageError, add_command, add_group
from offchain.cli.output import Output
from offchain.cli.profiles import AGENT_KEY_ENV, KEY_ENV, KEYS

#: The profile `config set` writes to when none is named and the file has no default.
FIRST_PROFILE = "default"


def register(commands: argparse._SubParsersAction) -> None:
    group = add_group(commands, "config")
    add_command(group, "show", show, "the settings a command would use, and where each comes from")
    set_parser = add_command(
        group, "set", set_value, "set a setting in a profile (--profile; default: the file's default profile)"
    )
    set_parser.add_argument(
        "key", choices=list(KEYS), metavar="KEY", help="; ".join(f"{key}: {spec.help}" for key, spec in KEYS.items())
    )
    set_parser.add_argument("values", nargs="+", metavar="VALUE", help="the value (oracle_url takes several)")
    unset_parser = add_command(group, "unset", unset, "remove a setting from a profile")
    unset_parser.add_argument("key", choices=list(KEYS), metavar="KEY", help=f"one of: {', '.join(KEYS)}")
    use_parser = add_command(group, "use", use, "make a profile the file's default")
    use_parser.add_argument("name", metavar="PROFILE")


def _inline_key(key: str) -> str | None:
    """The variable holding an inline key that stands in for the key file `key`, when one is set."""
    env = {"key_file": KEY_ENV, "agent_key_file": AGENT_KEY_ENV}.get(key)
    return env if env is not None and os.environ.get(env) else None


def show(args: argparse.Namespace) -> ExitStatus:
    out = Output(args)
    path = profiles.config_path()
    data = profiles.read_file(path)
    profile = profiles.selected(args)
    settings: dict[str, dict[str, Any]] = {}
    for key in KEYS:
        inline = _inline_key(key)
        if inline is not None and not os.environ.get(KEYS[key].env or ""):
            settings[key] = {"value": None, "source": f"env {inline} (an inline key)"}
            continue
        resolved = profiles.resolve(args, key, profile)
        value = resolved.value
        value = [str(v) for v in value] if isinstance(value, list) else None if value is None else str(value)
        settings[key] = {"value": value, "source": resolved.source}
    names = list(data.get("profiles", {}))
    result = {
        "file": str(path),
        "exists": path.exists(),
        "profile": profile.name,
        "default": data.get("default"),
        "profiles": names,
        "settings": settings,
    }

    def human() -> None:
        found = "" if result["exists"] else " (no such file)"
        out.fields(
            f"config file {path}{found}",
            [("profile", profile.name or "none"), ("profiles", ", ".join(names) or None)],
        )
        rows = [(key, f"{_human(entry['value'])}  ({entry['source']})") for key, entry in settings.items()]
        out.fields("settings", rows)

    out.emit(result, human)
    return ExitStatus.OK


def _human(value: str | list[str] | None) -> str:
    if value is None:
        return "-"
    return ", ".join(value) if isinstance(value, list) else value


def _target(args: argparse.Namespace, data: dict[str, Any]) -> str:
    """The profile `set` and `unset` change: `--profile`, `$GPUEX_PROFILE`, the file's default, else `default`."""
    name = args.profile or os.environ.get(profiles.PROFILE_ENV) or data.get("default") or FIRST_PROFILE
    if not profiles.PROFILE_NAME.fullmatch(name):
        raise UsageError(f"bad profile name {name!r} (letters, digits, '-' and '_', at most 64)")
    return str(name)


def _open(args: argparse.Namespace, creating: bool = False) -> tuple[Output, Path, dict[str, Any]]:
    """What a command that changes the file starts from: its output, the file's path and its content."""
    path = profiles.config_path()
    return Output(args), path, profiles.read_file(path, creating)


def set_value(args: argparse.Namespace) -> ExitStatus:
    out, path, data = _open(args, creating=True)
    name = _target(args, data)
    if len(args.values) > 1 and not KEYS[args.key].many:
        raise UsageError(f"{args.key} takes one value, not {len(args.values)}")
    if any(not value for value in args.values):
        raise UsageError(f"{args.key} must not be empty")
    value = args.values if len(args.values) > 1 else args.values[0]
    profile_values = data.setdefault("profiles", {}).setdefault(name, {})
    profile_values[args.key] = value
    data.setdefault("default", name)
    profiles.write_file(path, data)
    return _done(
        out,
        {"file": str(path), "profile": name, "key": args.key, "value": value},
        f"{args.key} = {_human(value)} in profile {name} ({path})",
    )


def unset(args: argparse.Namespace) -> ExitStatus:
    out, path, data = _open(args)
    name = _target(args, data)
    values = data.get("profiles", {}).get(name)
    if values is None:
        raise UsageError(f"no profile {name!r} in {path}")
    removed = values.pop(args.key, None) is not None
    if removed:
        profiles.write_file(path, data)
    return _done(
        out,
        {"file": str(path), "profile": name, "key": args.key, "removed": removed},
        f"{args.key} {'removed from' if removed else 'was not set in'} profile {name} ({path})",
    )


def use(args: argparse.Namespace) -> ExitStatus:
    out, path, data = _open(args)
    if args.name not in data.get("profiles", {}):
        defined = ", ".join(data.get("profiles", {})) or "none"
        raise UsageError(f"no profile {args.name!r} in {path} (profiles: {defined}); make one with `gpuex config set`")
    data["default"] = args.name
    profiles.write_file(path, data)
    return _done(out, {"file": str(path), "default": args.name}, f"default profile: {args.name} ({path})")


def _done(out: Output, result: dict[str, Any], line: str) -> ExitStatus:
    """A change to the file: `result` as JSON, or `line` for people."""
    out.emit(result, lambda: out.print(line))
    return ExitStatus.OK
