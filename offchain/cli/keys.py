"""The acting account's key: from `GPUEX_KEY` or the file named by `GPUEX_KEY_FILE`, else the key file of the
selected profile (`offchain.cli.profiles`); never the command line."""

from __future__ import annotations

import os
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount
from pydantic import SecretStr

from offchain.cli.args import UsageError
from offchain.cli.profiles import KEY_ENV, KEY_FILE_ENV, Profile
from offchain.config import read_key

__all__ = ["KEY_ENV", "KEY_FILE_ENV", "load_account", "load_key"]


def load_key(key_env: str, key_file_env: str, profile: Profile | None = None, profile_key: str = "") -> SecretStr:
    """The private key from `$key_env` or the file named by `$key_file_env` (exactly one of them), else from the
    file `profile` names as `profile_key`."""
    inline, path = os.environ.get(key_env), os.environ.get(key_file_env)
    if not inline and not path and profile is not None and profile_key:
        from_profile = profile.key_file(profile_key)
        if from_profile is not None:
            return read_key(None, from_profile, f"{profile_key} of profile {profile.name} ({profile.path})")
    if not inline and not path:
        raise UsageError(f"no key: set {key_file_env} to a file holding the hex private key (or {key_env})")
    if path and not Path(path).is_file():
        raise UsageError(f"{key_file_env}={path}: no such file")
    return read_key(SecretStr(inline) if inline else None, Path(path) if path else None, f"{key_env} / {key_file_env}")


def load_account(profile: Profile | None = None) -> LocalAccount:
    """The account of `GPUEX_KEY` / `GPUEX_KEY_FILE`, else of the profile's `key_file`."""
    return Account.from_key(load_key(KEY_ENV, KEY_FILE_ENV, profile, "key_file").get_secret_value())
