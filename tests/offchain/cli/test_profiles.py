"""The config file of profiles (`offchain.cli.profiles`, `gpuex config ...`): where it is found, what each setting
resolves to and from where, the file's and the key file's errors, and `gpuex offers search` run outside the
repository through a profile."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys

import pytest

from offchain.chain.contracts import PROJECT_ROOT
from tests.offchain.cli.conftest import _clean_environ


@pytest.fixture
def config(tmp_path):
    """A config file's path and the environment that points `gpuex` at it (and at no devnet of the session)."""
    path = tmp_path / "gpuex" / "config.toml"
    path.parent.mkdir()
    return path, {"GPUEX_CONFIG": str(path), "GPUEX_DEVNET_DIR": ""}


def settings(cli, env, *args) -> dict:
    return cli.ok("config", "show", "--json", *args, env=env).json()["settings"]


def test_offers_search_outside_the_repository_through_a_profile(cli, market, config, tmp_path):
    path, env = config
    path.write_text(f'default = "local"\n[profiles.local]\nstate_dir = "{cli.state_dir}"\n')
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    assert not outside.resolve().is_relative_to(PROJECT_ROOT)
    environ = _clean_environ({**cli.base_env, **env, "PYTHONPATH": str(PROJECT_ROOT)})
    search = [sys.executable, "-m", "offchain.cli", "offers", "search", "--json"]
    found = subprocess.run(search, cwd=outside, env=environ, capture_output=True, text=True, timeout=60)
    assert found.returncode == 0, found.stderr
    assert market.offer_id in [offer["offer_id"] for offer in json.loads(found.stdout)]
    without = subprocess.run(
        search, cwd=outside, env={**environ, "GPUEX_CONFIG": os.devnull}, capture_output=True, text=True, timeout=60
    )
    assert without.returncode == 2 and without.stderr.startswith("gpuex: error: no network: ")


def test_flag_beats_environment_beats_profile_beats_default(cli, config):
    path, env = config
    path.write_text('default = "p"\n[profiles.p]\nnetwork = "from-profile"\nrpc_url = "http://profile:1"\n')
    shown = settings(cli, {**env, "GPUEX_NETWORK": "from-env"}, "--network", "from-flag")
    assert shown["network"] == {"value": "from-flag", "source": "flag --network"}
    assert settings(cli, {**env, "GPUEX_NETWORK": "from-env"})["network"] == {
        "value": "from-env",
        "source": "env GPUEX_NETWORK",
    }
    assert shown["rpc_url"] == {"value": "http://profile:1", "source": f"profile p in {path}"}
    assert shown["state_dir"] == {"value": "gpuex-devnet", "source": "default"}


def test_the_file_is_found_under_xdg_config_home(cli, tmp_path):
    (tmp_path / "gpuex").mkdir()
    (tmp_path / "gpuex" / "config.toml").write_text('[profiles.x]\nrpc_url = "http://x:1"\n')
    env = {"GPUEX_CONFIG": "", "XDG_CONFIG_HOME": str(tmp_path), "GPUEX_PROFILE": "x"}
    shown = cli.ok("config", "show", "--json", env=env).json()
    assert shown["file"] == str(tmp_path / "gpuex" / "config.toml") and shown["profile"] == "x"
    assert shown["settings"]["rpc_url"]["value"] == "http://x:1"


def test_profile_flag_beats_the_environment_and_the_default(cli, config):
    path, env = config
    path.write_text(
        'default = "a"\n[profiles.a]\nnetwork = "a"\n[profiles.b]\nnetwork = "b"\n[profiles.c]\nnetwork = "c"\n'
    )
    assert settings(cli, env)["network"]["value"] == "a"
    assert settings(cli, {**env, "GPUEX_PROFILE": "b"})["network"]["value"] == "b"
    assert settings(cli, {**env, "GPUEX_PROFILE": "b"}, "--profile", "c")["network"]["value"] == "c"


def test_a_profile_that_does_not_exist_is_one_line_and_exit_2(cli, market, config):
    path, env = config
    path.write_text('[profiles.a]\nnetwork = "devnet"\n')
    error = cli.fails(2, "offers", "search", "--profile", "nope", env=env)
    assert error == f"no profile 'nope' in {path} (profiles: a)"
    error = cli.fails(2, "offers", "search", env={**env, "GPUEX_PROFILE": "nope", "GPUEX_CONFIG": str(path) + ".gone"})
    assert error == f"GPUEX_CONFIG={path}.gone: no such file"


def test_malformed_toml_names_the_file(cli, config):
    path, env = config
    path.write_text("[profiles.a\n")
    assert cli.fails(2, "offers", "search", env=env).startswith(f"{path}: not valid TOML: ")


@pytest.mark.parametrize(
    "text, message",
    [
        ('colour = "blue"\n', "unknown key 'colour'"),
        ('[profiles.a]\nprivate_key = "0x01"\n', "unknown key 'private_key' in profile 'a'"),
        ("[profiles.a]\nnetwork = 5\n", "network in profile 'a' must be a non-empty string"),
        ('[profiles.a]\nrpc_url = ["http://a:1"]\n', "rpc_url in profile 'a' must be a non-empty string"),
        ('default = "b"\n[profiles.a]\nnetwork = "x"\n', "the default profile 'b' is not defined"),
        ('[profiles."a b"]\nnetwork = "x"\n', "bad profile name 'a b'"),
    ],
)
def test_bad_content_names_the_key_and_the_file(cli, config, text, message):
    path, env = config
    path.write_text(text)
    assert cli.fails(2, "config", "show", env=env).startswith(f"{path}: {message}")


def test_a_key_file_under_home_acts_as_its_account(cli, market, config, tmp_path):
    path, env = config
    home = tmp_path / "home"
    (home / "keys").mkdir(parents=True)
    shutil.copy(cli.key_file("renter2"), home / "keys" / "renter2.key")
    (home / "keys" / "renter2.key").chmod(0o600)
    path.write_text(f'default = "r"\n[profiles.r]\nstate_dir = "{cli.state_dir}"\nkey_file = "~/keys/renter2.key"\n')
    env = {**env, "HOME": str(home)}
    assert settings(cli, env)["key_file"]["value"] == str(home / "keys" / "renter2.key")
    staked = cli.ok("provider", "stake", "--amount", "1", "--approve", "--json", env=env).json()
    assert staked["provider"]["address"] == cli.address("renter2")
    inline = settings(cli, {**env, "GPUEX_KEY": "0x" + "11" * 32})["key_file"]
    assert inline == {"value": None, "source": "env GPUEX_KEY (an inline key)"}


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_key_file_open_to_other_users_is_refused(cli, market, config, tmp_path, mode):
    path, env = config
    key = tmp_path / "renter2.key"
    shutil.copy(cli.key_file("renter2"), key)
    key.chmod(mode)
    path.write_text(f'default = "r"\n[profiles.r]\nstate_dir = "{cli.state_dir}"\nkey_file = "{key}"\n')
    error = cli.fails(2, "provider", "stake", "--amount", "1", env=env)
    assert error == f"key_file of profile r ({path}): {key} is open to other users; run `chmod 600 {key}`"


def test_a_missing_key_file_is_named(cli, market, config):
    path, env = config
    path.write_text(f'default = "r"\n[profiles.r]\nstate_dir = "{cli.state_dir}"\nkey_file = "keys/none.key"\n')
    error = cli.fails(2, "provider", "stake", "--amount", "1", env=env)
    assert error == f"key_file of profile r ({path}): no such file {path.parent / 'keys' / 'none.key'}"


def test_relative_paths_are_relative_to_the_file(cli, config):
    path, env = config
    path.write_text('[profiles.a]\nstate_dir = "devnet"\n')
    assert settings(cli, env, "--profile", "a")["state_dir"]["value"] == str(path.parent / "devnet")


def test_set_and_use_write_an_owner_only_file_that_reads_back(cli, config):
    path, env = config
    assert cli.ok("config", "set", "network", "devnet", env=env).out.strip().startswith("network = devnet")
    cli.ok("config", "set", "oracle_url", "http://o1:1", "http://o2:1", "--profile", "live", env=env)
    cli.ok("config", "set", "rpc_url", 'http://a:1/"quoted"\\', "--profile", "live", env=env)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    shown = cli.ok("config", "show", "--json", env=env).json()
    assert shown["profile"] == "default" and shown["profiles"] == ["default", "live"]
    cli.ok("config", "use", "live", env=env)
    live = settings(cli, env)
    assert live["oracle_url"]["value"] == ["http://o1:1", "http://o2:1"]
    assert live["rpc_url"]["value"] == 'http://a:1/"quoted"\\'
    assert cli.ok("config", "unset", "rpc_url", "--json", env=env).json()["removed"] is True
    assert settings(cli, env)["rpc_url"] == {"value": None, "source": "default"}


def test_set_and_use_refuse_bad_input(cli, config):
    path, env = config
    assert cli.fails(2, "config", "use", "nope", env=env) == f"GPUEX_CONFIG={path}: no such file"
    assert cli.fails(2, "config", "set", "network", "a", "b", env=env) == "network takes one value, not 2"
    assert cli.fails(2, "config", "set", "rpc_url", "http://a\x7f", env=env).startswith("the value cannot be written")
    assert cli.fails(2, "config", "set", "network", "x", "--profile", "a b", env=env).startswith("bad profile name")
    assert cli("config", "set", "private_key", "0x01", env=env).code == 2
    assert not path.exists()
    cli.ok("config", "set", "network", "devnet", env=env)
    error = cli.fails(2, "config", "use", "nope", env=env)
    assert error == f"no profile 'nope' in {path} (profiles: default); make one with `gpuex config set`"


def test_agent_run_takes_its_key_from_the_profile(cli, market, config, tmp_path):
    path, env = config
    key = tmp_path / "agent.key"
    shutil.copy(cli.key_file("renter2"), key)
    key.chmod(0o600)
    path.write_text(f'default = "a"\n[profiles.a]\nstate_dir = "{cli.state_dir}"\nagent_key_file = "{key}"\n')
    error = cli.fails(1, "agent", "run", "--simulated", "2", env=env)
    assert error.startswith(f"the key {cli.address('renter2')} is no provider's agent")
