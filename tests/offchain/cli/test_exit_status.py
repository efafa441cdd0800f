"""`gpuex`'s exit statuses (`ExitStatus`), without a devnet: each kind of outcome exits with its own number and
says why in one line."""

from __future__ import annotations

import os

import pytest

from offchain.cli import main
from offchain.cli.args import ExitStatus


@pytest.fixture(autouse=True)
def no_gpuex_settings(monkeypatch):
    for name in [name for name in os.environ if name.startswith("GPUEX_")]:
        monkeypatch.delenv(name)


def error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_the_statuses_keep_the_numbers_scripts_rely_on():
    assert {status.name: int(status) for status in ExitStatus} == {"OK": 0, "FAILED": 1, "USAGE": 2, "INTERRUPTED": 130}


def test_help_is_ok(capsys):
    assert main(["--help"]) == ExitStatus.OK
    assert "gpuex" in capsys.readouterr().out


def test_a_bad_argument_is_a_usage_error_in_one_line(capsys):
    assert main(["offers", "search", "--min-vram", "lots"]) == ExitStatus.USAGE
    assert error_line(capsys).startswith("gpuex: error: argument --min-vram: not a size in GiB: 'lots'")


def test_a_missing_network_is_a_usage_error(tmp_path, capsys):
    assert main(["offers", "search", "--state-dir", str(tmp_path)]) == ExitStatus.USAGE
    assert error_line(capsys).startswith("gpuex: error: no network: ")


def test_a_node_that_does_not_answer_fails_in_one_readable_line(capsys):
    assert main(["offers", "search", "--rpc-url", "http://127.0.0.1:9"]) == ExitStatus.FAILED
    assert error_line(capsys).startswith("gpuex: error: cannot reach the RPC at http://127.0.0.1:9: ")


def test_a_devnet_that_is_not_running_fails(tmp_path, capsys):
    assert main(["devnet", "status", "--state-dir", str(tmp_path)]) == ExitStatus.FAILED
    assert "not running" in capsys.readouterr().out


def test_ctrl_c_is_interrupted(monkeypatch):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr("offchain.cli.devnet.down", interrupted)
    assert main(["devnet", "down"]) == ExitStatus.INTERRUPTED
