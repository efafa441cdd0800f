"""`gpuex provider stake|unstake|withdraw|set-agent|set-agent-url|register-gpus|show`."""

from __future__ import annotations

import sys
import time
from decimal import Decimal

import pytest

from offchain.protocol.messages import gpu_uuid_hash
from tests.offchain.cli.conftest import SIMULATED_GPUS, STAGING
from tests.offchain.telemetry.fake_nvml import FakeGpu, FakeNvml, NVMLError_LibraryNotFound

AGENT_URL = "https://agent.example.net:8443"


def field(out: str, name: str) -> str:
    """The value of the row `name` in a command's table for people."""
    rows = dict(line.strip().partition("  ")[::2] for line in out.splitlines())
    return rows[name].strip()


def test_stake_with_approve_approves_exactly_the_amount(market):
    result = market.stake.json()
    assert [tx["action"] for tx in result["transactions"]] == ["approve", "stake"]
    assert result["provider"]["staked"] == "1000.000000"


def test_stake_without_allowance_says_to_approve(cli, market):
    error = cli.fails(1, "provider", "stake", "--amount", "5", role="provider")
    assert (
        error == "insufficient allowance: the registry may take 0.000000 tUSD of yours, 5.000000 tUSD needed "
        "(re-run with --approve)"
    )


@pytest.mark.parametrize("amount", ["-5", "0", "ten", "0.0000001"])
def test_stake_refuses_a_bad_amount(cli, amount):
    assert "amount" in cli.fails(2, "provider", "stake", "--amount", amount, role="provider")


def test_stake_without_a_key_names_the_variable(cli):
    error = cli.fails(2, "provider", "stake", "--amount", "5")
    assert error == "no key: set GPUEX_KEY_FILE to a file holding the hex private key (or GPUEX_KEY)"


def test_stake_with_a_key_file_that_is_no_key(cli, tmp_path):
    (tmp_path / "bad.key").write_text("not a key\n")
    error = cli.fails(2, "provider", "stake", "--amount", "5", env={"GPUEX_KEY_FILE": str(tmp_path / "bad.key")})
    assert "not a 32-byte hex private key" in error


def test_unstake_then_withdraw_after_the_unbonding_period(cli, market):
    assert cli.fails(1, "provider", "withdraw", role="provider").startswith("Registry_NothingUnbonding: ")
    unstaked = cli.ok("provider", "unstake", "--amount", "100", "--json", role="provider").json()
    assert unstaked["provider"]["unbonding"] == "100.000000"
    while time.time() <= unstaked["provider"]["unbonding_ends_at"] + 1:  # a block past the end of unbonding
        time.sleep(0.5)
    withdrawn = cli.ok("provider", "withdraw", role="provider")
    assert "sent withdrawUnstaked" in withdrawn.out and "900.00 tUSD" in withdrawn.out


def test_unstake_of_more_than_the_free_stake_names_the_revert(cli, market):
    error = cli.fails(1, "provider", "unstake", "--amount", "1000000", role="provider")
    assert error.startswith("Registry_InsufficientFreeStake: ")


def test_set_agent(cli, market):
    assert market.set_agent.json()["provider"]["agent"] == cli.address("agent")


def test_set_agent_refuses_a_bad_address(cli):
    assert "not an address: '0x1234'" in cli.fails(2, "provider", "set-agent", "0x1234", role="provider")


def test_set_agent_url_publishes_it_without_the_trailing_slash(cli):
    result = cli.ok("provider", "set-agent-url", AGENT_URL + "/", "--json", role="provider2").json()

    assert [tx["action"] for tx in result["transactions"]] == ["setAgentUrl"]
    assert result["provider"]["agent_url"] == AGENT_URL
    shown = cli.ok("provider", "show", cli.address("provider2"), "--json").json()
    assert shown["agent_url"] == AGENT_URL
    assert field(cli.ok("provider", "show", role="provider2").out, "agent URL") == AGENT_URL


@pytest.mark.parametrize("clear", [("--clear",), ("",)])
def test_set_agent_url_clear_or_empty_clears_it(cli, clear):
    cli.ok("provider", "set-agent-url", AGENT_URL, role="provider2")

    cleared = cli.ok("provider", "set-agent-url", *clear, role="provider2")

    assert "sent setAgentUrl" in cleared.out and field(cleared.out, "agent URL") == "not set"
    assert cli.ok("provider", "show", "--json", role="provider2").json()["agent_url"] is None


def test_set_agent_url_of_exactly_256_bytes(cli):
    url = "https://" + "a" * 248

    assert cli.ok("provider", "set-agent-url", url, "--json", role="provider2").json()["provider"]["agent_url"] == url


@pytest.mark.parametrize(
    "url, reason",
    [
        ("ftp://agent.example.net", "'ftp://agent.example.net': the scheme must be http or https, not ftp"),
        ("agent.example.net", "'agent.example.net': the scheme must be http or https"),
        ("https://", "'https://' has no host"),
        (
            "https://operator:secret@agent.example.net",
            "'https://operator:secret@agent.example.net': a public URL holds no user name or password (user@host)",
        ),
        (
            "https://agent.example.net/?token=1",
            "'https://agent.example.net/?token=1': a base URL takes no query or fragment (? or #)",
        ),
        (
            "https://agent.example.net#top",
            "'https://agent.example.net#top': a base URL takes no query or fragment (? or #)",
        ),
        ("https://" + "a" * 249, "the agent URL is 257 bytes long; the registry takes at most 256"),
    ],
)
def test_set_agent_url_refuses_a_bad_url_in_one_line(cli, url, reason):
    error = cli.fails(2, "provider", "set-agent-url", url, role="provider2")

    assert error == f"argument url: {reason} (see `gpuex provider set-agent-url --help`)"


def test_set_agent_url_takes_a_url_or_clear(cli):
    assert cli.fails(2, "provider", "set-agent-url", role="provider2").startswith(
        "one of the arguments url --clear is required"
    )
    assert cli.fails(2, "provider", "set-agent-url", AGENT_URL, "--clear", role="provider2").startswith(
        "argument --clear: not allowed with argument url"
    )


def test_register_gpus_registers_simulated_gpus_once(cli, market):
    first = market.register_gpus.json()
    assert len(first["registered"]) == SIMULATED_GPUS and first["already_registered"] == []
    assert all(gpu["name"] == "NVIDIA H100 80GB HBM3" for gpu in first["gpus"])
    again = cli.ok("provider", "register-gpus", "--simulated", SIMULATED_GPUS, "--json", role="provider").json()
    assert again["transactions"] == [] and sorted(again["already_registered"]) == sorted(first["registered"])


def test_register_gpus_reads_nvml_by_default(cli, monkeypatch):
    uuids = ["GPU-4e7c0000-0000-4000-8000-00000000000a", "GPU-4e7c0000-0000-4000-8000-00000000000b"]
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml([FakeGpu(uuid) for uuid in uuids]))
    registered = cli.ok("provider", "register-gpus", "--json", role="provider2").json()
    assert [gpu["uuid"] for gpu in registered["gpus"]] == uuids
    assert registered["registered"] == ["0x" + gpu_uuid_hash(uuid).hex() for uuid in uuids]


def test_register_gpus_without_nvml(cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml([], init_error=NVMLError_LibraryNotFound("not found")))
    error = cli.fails(1, "provider", "register-gpus", role="provider2")
    assert error == "NVML did not start: not found (on the devnet, --simulated N stands in for GPUs)"


def test_register_gpus_of_another_provider_names_the_revert(cli, market):
    uuid = market.register_gpus.json()["gpus"][0]["uuid"]
    error = cli.fails(1, "provider", "register-gpus", "--gpu", uuid, role="provider2")
    assert error.startswith("Registry_GpuAlreadyRegistered: ")


def test_register_gpus_takes_uuids_or_simulated_gpus_not_both(cli):
    error = cli.fails(2, "provider", "register-gpus", "--gpu", "GPU-1", "--simulated", "1", role="provider")
    assert error == "--gpu and --simulated exclude each other"


def test_register_simulated_gpus_only_on_the_devnet(cli, staging):
    error = cli.fails(2, "provider", "register-gpus", "--simulated", "1", *STAGING, role="provider", env=staging)
    assert error.startswith("--simulated is for the devnet")


def test_show(cli, market):
    shown = cli.ok("provider", "show", cli.address("provider"), "--json").json()
    assert shown["agent"] == cli.address("agent") and Decimal(shown["staked"]) >= 900
    assert shown["free"] == str(Decimal(shown["staked"]) - Decimal(shown["locked"]) - Decimal(shown["unbonding"]))
    assert "declines" in shown and shown["declines"] >= 0
    assert Decimal(shown["value_settled"]) >= 0 and shown["distinct_renters"] >= 0
    assert shown["display"]["staked"] == f"{Decimal(shown['staked']):,.2f} tUSD"
    table = cli.ok("provider", "show", role="provider").out
    assert field(table, "staked") == shown["display"]["staked"]
    assert "reliability" in table and "declines" in table
    assert "value settled" in table and "distinct renters" in table


def test_show_needs_an_address_or_a_key(cli):
    assert cli.fails(2, "provider", "show").startswith("no key")
