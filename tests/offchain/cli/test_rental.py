"""`gpuex rent`, `gpuex rental status|terminate|watch`, `gpuex withdraw`, and `gpuex agent run` serving a rental
from `rent` to its settlement."""

from __future__ import annotations

import asyncio
import json
import re
import time
from decimal import Decimal
from typing import Any, Callable

import pytest
from eth_account import Account
from pydantic import SecretStr

from offchain.agent.jobspec import JobSpec
from offchain.chain.contracts import contract
from offchain.chain.rpc import connect
from offchain.chain.tx.oneshot import Wallet
from offchain.ops import devnet
from offchain.ops.devnet import spec_dir
from offchain.protocol.reports import BatchSigner, Report, ReportStatus, submit_args
from offchain.protocol.status import DeclineReason
from tests.offchain.cli.conftest import PORT, SIMULATED_GPUS, STAGING, stop

SPEC = {"command": ["sleep", "4"]}
UNKNOWN_RENTAL = 12345
NOTHING_PORT = 9149  # where nothing listens


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "job.json"
    path.write_text(json.dumps(SPEC))
    return path


def test_rent_without_allowance_says_to_approve(cli, market, spec_file):
    error = cli.fails(1, "rent", market.offer_id, "--duration", "1m", "--spec", spec_file, role="renter")
    assert error.startswith("insufficient allowance: the escrow may take ")
    assert error.endswith("(re-run with --approve)")


def test_rent_of_an_unknown_offer(cli, market, spec_file):
    error = cli.fails(1, "rent", 999, "--duration", "1m", "--spec", spec_file, role="renter")
    assert error.startswith("no offer 999 ")


def test_rent_refuses_a_duration_the_offer_does_not_allow(cli, market, spec_file):
    error = cli.fails(1, "rent", market.offer_id, "--duration", "5", "--spec", spec_file, role="renter")
    assert error == f"offer {market.offer_id} rents for 10 to 7200 s, not 5 s"
    assert "not a duration" in cli.fails(2, "rent", market.offer_id, "--duration", "5x", "--spec", spec_file)


def test_rent_refuses_a_price_above_the_maximum(cli, market, spec_file):
    error = cli.fails(
        1, "rent", market.offer_id, "--duration", "1m", "--spec", spec_file, "--max-price-per-hour", "7", role="renter"
    )
    assert error == f"offer {market.offer_id} costs 7.200000 tUSD/h, above the maximum of 6.998400 tUSD/h"


def test_rent_refuses_a_bad_job_spec(cli, market, tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps({"cmd": "sleep 4"}))
    error = cli.fails(2, "rent", market.offer_id, "--duration", "1m", "--spec", tmp_path / "bad.json", role="renter")
    assert error.startswith(f"bad job spec {tmp_path / 'bad.json'}: ")
    error = cli.fails(2, "rent", market.offer_id, "--duration", "1m", "--spec", tmp_path / "none.json", role="renter")
    assert error == f"--spec {tmp_path / 'none.json'}: No such file or directory"


def test_secret_values_need_the_providers_agent_url(cli, market, spec_file):
    error = cli.fails(
        2,
        "rent",
        market.offer_id,
        "--duration",
        "1m",
        "--spec",
        spec_file,
        "--secret-env",
        "TOKEN",
        role="renter",
        env={"TOKEN": "x"},
    )
    assert error == (
        f"offer {market.offer_id}'s provider publishes no agent URL: secret values travel only through "
        "its agent's renter API"
    )


def test_rent_of_a_provider_without_stake_names_the_revert(cli, spec_file):
    """provider2 sets no agent key either: listing its offer and renting it warn first."""
    gpu = "GPU-0c105e00-0000-4000-8000-000000000002"
    cli.ok("provider", "register-gpus", "--gpu", gpu, role="provider2")
    created = cli.ok(
        "offer",
        "create",
        "--gpu",
        gpu,
        "--model",
        "NVIDIA L4",
        "--vram",
        "22.5",
        "--price-per-hour",
        "1",
        "--region",
        "us-east",
        "--json",
        role="provider2",
    )
    no_agent = f"gpuex: warning: provider {cli.address('provider2')} has set no agent key (`gpuex provider set-agent`)"
    assert created.err.startswith(no_agent) and created.err.strip().endswith("; listing the offer anyway")
    offer = created.json()["offer"]
    rented = cli("rent", offer["offer_id"], "--duration", "1m", "--spec", spec_file, "--approve", role="renter2")
    warning, error = rented.err.strip().splitlines()
    assert warning.startswith(no_agent) and warning.endswith(f"; renting offer {offer['offer_id']} anyway")
    assert rented.code == 1 and error.startswith("gpuex: error: Registry_InsufficientFreeStake: ")


def test_rent_off_the_devnet_of_a_provider_without_an_agent_url_warns(cli, market, spec_file, staging):
    rented = cli("rent", market.offer_id, "--duration", "1m", "--spec", spec_file, "--approve", "--json", *STAGING,
                 role="renter", env=staging)  # fmt: skip
    assert rented.code == 0, rented.err
    rental = rented.json()["rental"]
    try:
        assert rented.json()["spec_dir"] is None and rented.json()["spec_sent_to"] is None
        assert rented.err.strip() == (
            f"gpuex: warning: the provider {cli.address('provider')} of offer {market.offer_id} has published no "
            "agent URL: the spec reaches its agent only if you publish it where the agent fetches specs"
        )
    finally:
        cli.ok("rental", "terminate", rental["rental_id"], *STAGING, role="renter", env=staging)


def test_terminate_before_the_start_cancels_with_a_full_refund(cli, market, spec_file):
    rented = cli.ok(
        "rent", market.offer_id, "--duration", "1m", "--spec", spec_file, "--approve", "--json", role="renter"
    ).json()
    rental = rented["rental"]
    assert (rental["status"], rental["deposit"], rental["display"]["deposit"]) == ("open", "0.120000", "0.12 tUSD")
    assert (spec_dir(cli.state_dir) / f"{rental['job_spec_hash']}.json").is_file()
    rental_id = rental["rental_id"]
    intruder = cli("rental", "terminate", rental_id, role="renter2")
    assert intruder.code == 1 and intruder.error == (
        f"rental {rental_id} belongs to {cli.address('renter')}; only its renter can terminate it"
    )
    terminated = cli.ok("rental", "terminate", rental_id, "--json", role="renter").json()["rental"]
    assert terminated["status"] == "cancelled" and terminated["refunded"] == rental["deposit"]
    assert terminated["paid"] == "0.000000"
    error = cli.fails(1, "rental", "terminate", rental_id, role="renter")
    assert error == f"Escrow_RentalNotActive: {rental_id}, 8"


def send_as(cli, role: str, call: Callable[[Any], Any]) -> None:
    """Sends `call(escrow functions)` to the devnet's escrow with the key of devnet role `role`."""

    async def send() -> None:
        w3 = connect(f"http://127.0.0.1:{PORT}")
        try:
            state = devnet.read_state(cli.state_dir)
            escrow = contract(w3, "RentalEscrow", state.deployment.escrow)
            account = Account.from_key(devnet.key_path(cli.state_dir, role).read_text().strip())
            await Wallet(w3, account).transact(call(escrow.functions))
        finally:
            await w3.provider.disconnect()

    asyncio.run(send())


def decline(cli, rental_id: int, reason: DeclineReason) -> None:
    """Declines the rental with the provider's agent key, as an agent does with a job it cannot run."""
    send_as(cli, "agent", lambda escrow: escrow.decline(rental_id, reason))


def land_report(cli, report: Report) -> None:
    """Lands `report` signed by the devnet's oracle (its 1-of-1 set), as the oracle itself would."""
    key = SecretStr(devnet.key_path(cli.state_dir, "oracle").read_text().strip())
    escrow = devnet.read_state(cli.state_dir).deployment.escrow
    signature = BatchSigner(key, devnet.read_state(cli.state_dir).chain_id, escrow).sign([report], 1)
    send_as(cli, "oracle", lambda functions: functions.submitReports(*submit_args([report], [signature], 1)))


def test_a_declined_rental_shows_its_reason_and_the_full_refund(cli, market, spec_file):
    declines = cli.ok("provider", "show", cli.address("provider"), "--json").json()["declines"]
    rental = cli.ok(
        "rent", market.offer_id, "--duration", "1m", "--spec", spec_file, "--approve", "--json", role="renter"
    ).json()["rental"]
    rental_id = int(rental["rental_id"])

    decline(cli, rental_id, DeclineReason.SPEC_INVALID)

    shown = cli.ok("rental", "status", rental_id, "--json").json()
    assert (shown["status"], shown["final"], shown["paid"], shown["refunded"]) == (
        "declined",
        True,
        "0.000000",
        rental["deposit"],
    )
    assert shown["decline_reason"] == "spec_invalid"
    assert shown["decline_detail"] == DeclineReason.SPEC_INVALID.describe()
    assert Decimal(shown["settlement"]["slashed"]) == 0
    assert re.search(r"declined +spec_invalid: the job spec", cli.ok("rental", "status", rental_id).out)
    watched = cli.ok("rental", "watch", rental_id, "--json").out.splitlines()
    assert [json.loads(line)["kind"] for line in watched] == ["opened", "declined", "finalized"]
    assert "declined by the provider (spec_invalid)" in cli.ok("rental", "watch", rental_id).out
    assert cli.ok("provider", "show", cli.address("provider"), "--json").json()["declines"] == declines + 1
    assert cli.fails(1, "rental", "terminate", rental_id, role="renter") == f"Escrow_RentalNotActive: {rental_id}, 9"


def test_a_provider_claims_what_a_running_rental_earned_so_far(cli, market, spec_file):
    rental_id = int(
        cli.ok(
            "rent", market.offer_id, "--duration", "10m", "--spec", spec_file, "--approve", "--json", role="renter"
        ).json()["rental"]["rental_id"]
    )
    assert cli.ok("rental", "claim", rental_id, role="provider").out.strip() == (
        f"rental {rental_id} is open: nothing to claim"
    )
    send_as(cli, "agent", lambda escrow: escrow.start(rental_id))
    since = cli.ok("rental", "status", rental_id, "--json").json()["started_at"]
    time.sleep(2)
    land_report(cli, Report(rental_id=rental_id, seq=1, covered_until=since + 1, delivered_seconds=1, util_seconds=1))

    shown = cli.ok("provider", "show", "--json", role="provider").json()
    assert (shown["claimable"], shown["claimable_by_rental"]) == ("0.002000", {str(rental_id): "0.002000"})
    claimed = cli.ok("rental", "claim", rental_id, "--json", role="provider").json()
    assert [t["action"] for t in claimed["transactions"]] == ["claim"]
    assert claimed["claimed"]["earned"] == 2_000
    assert claimed["rental"]["claimed"] == claimed["rental"]["paid"] == "0.002000"
    assert claimed["claimed"]["provider_payout"] + claimed["claimed"]["fee"] == 2_000
    assert cli.ok("rental", "claim", rental_id, role="provider").out.strip() == (
        f"rental {rental_id} has earned nothing since its last claim: nothing to claim"
    )
    after_the_claim = cli.ok("provider", "show", "--json", role="provider").json()
    assert (after_the_claim["claimable"], after_the_claim["claimable_by_rental"]) == ("0.000000", {})

    land_report(
        cli,
        Report(
            rental_id=rental_id,
            seq=2,
            covered_until=since + 2,
            delivered_seconds=2,
            util_seconds=2,
            status=ReportStatus.COMPLETED,
        ),
    )
    settled = cli.ok("rental", "status", rental_id, "--json").json()
    assert (settled["status"], settled["claimed"], settled["paid"], settled["claimable"]) == (
        "completed",
        "0.002000",
        "0.004000",
        "0.000000",
    )
    assert settled["provider_paid"] == settled["settlement"]["provider_payout"]
    shown = cli.ok("rental", "status", rental_id).out
    assert re.search(r"claimed +0\.002 tUSD \(0\.00 tUSD claimable\)", shown), shown
    watched = [json.loads(line)["kind"] for line in cli.ok("rental", "watch", rental_id, "--json").out.splitlines()]
    assert watched == ["opened", "started", "report", "claimed", "report", "finalized"]
    assert "claimed: 0.00195 tUSD to the provider" in cli.ok("rental", "watch", rental_id).out


def test_status_and_watch_of_an_unknown_rental(cli):
    assert cli.fails(1, "rental", "status", UNKNOWN_RENTAL) == f"no rental {UNKNOWN_RENTAL}"
    assert cli.fails(1, "rental", "watch", UNKNOWN_RENTAL) == f"no rental {UNKNOWN_RENTAL}"
    assert "not a positive integer" in cli.fails(2, "rental", "status", "latest")


def test_withdraw_with_nothing_credited_sends_nothing_and_says_so(cli):
    nonce = _nonce(cli, "provider2")
    assert cli.ok("withdraw", role="provider2").out.strip() == "nothing to withdraw"
    result = cli.ok("withdraw", "--json", role="provider2").json()
    assert result["transactions"] == [] and result["escrow_amount"] == result["compensation"] == 0
    assert _nonce(cli, "provider2") == nonce


def _nonce(cli, role: str) -> int:
    async def read() -> int:
        w3 = connect(f"http://127.0.0.1:{PORT}")
        try:
            return await w3.eth.get_transaction_count(cli.address(role))
        finally:
            await w3.provider.disconnect()

    return asyncio.run(read())


def test_a_rental_from_rent_to_settlement_and_withdrawal(cli, market, spec_file, tmp_path):
    """The agent (simulated GPUs) starts the rental, runs the job and reports until it completes; `rental watch`
    follows it live (its chain events and its GPUs' telemetry), `rental status` shows the settlement, and the renter
    withdraws its refund."""
    start_block = cli.ok("devnet", "status", "--json").json()["block_number"]
    agent = cli.spawn(
        "agent",
        "run",
        "--simulated",
        "2",
        log=tmp_path / "agent.log",
        env={
            "GPUEX_AGENT_KEY_FILE": cli.key_file("agent"),
            "GPUEX_AGENT_START_BLOCK": str(start_block),
            "GPUEX_AGENT_API_PORT": "0",
            "GPUEX_AGENT_REPORT_INTERVAL_SECONDS": "1",
            "GPUEX_AGENT_CHAIN_POLL_SECONDS": "0.5",
            "GPUEX_AGENT_STOP_GRACE_SECONDS": "1",
            "GPUEX_AGENT_RETRY_INITIAL_SECONDS": "0.2",
        },
    )
    try:
        rented = cli.ok("rent", market.offer_id, "--duration", "2m", "--spec", spec_file, "--approve", role="renter")
        assert "follow it with `gpuex rental watch" in rented.out
        rental_id = int(rented.out.split("rental watch ")[1].split("`")[0])
        watch = cli.spawn("rental", "watch", rental_id, "--json", "--interval", "0.5")
        out, err = watch.communicate(timeout=60)
        assert watch.returncode == 0, err
    finally:
        status = stop(agent)
    assert status == 0, (tmp_path / "agent.log").read_text()[-2000:]
    lines = [json.loads(line) for line in out.decode().splitlines()]
    events = [e for e in lines if e["kind"] != "telemetry"]
    kinds = [e["kind"] for e in events]
    assert kinds[:2] == ["opened", "started"] and lines[-1]["kind"] == "finalized" and "report" in kinds
    settled = events[-1]
    assert settled["status"] == "COMPLETED"
    assert_live_telemetry([e for e in lines if e["kind"] == "telemetry"])

    rental = cli.ok("rental", "status", rental_id, "--json").json()
    assert rental["status"] == "completed" and rental["final"] is True
    assert rental["delivered_seconds"] > 0 and rental["utilisation"] > 0
    assert Decimal(rental["paid"]) == sum(Decimal(r["earned"]) for r in rental["reports"]) > 0
    assert rental["covered_seconds"] > 0
    assert rental["delivered_seconds"] == rental["reports"][-1]["total_delivered_seconds"]
    assert Decimal(rental["paid"]) + Decimal(rental["refunded"]) == Decimal(rental["deposit"])
    shown = cli.ok("rental", "status", rental_id).out
    assert "completed" in shown and "utilisation" in shown and "provider payout" in shown
    if rental_id & 0xFFFF_FFFF > 1:  # the offer's earlier rental, which this one replaced, reads from its events
        replaced = cli.ok("rental", "status", rental_id - 1, "--json").json()
        assert replaced["final"] is True
        assert Decimal(replaced["paid"]) + Decimal(replaced["refunded"]) == Decimal(replaced["deposit"])

    assert_watch_shows_telemetry(cli, rental_id)

    withdrawn = cli.ok("withdraw", "--json", role="renter").json()
    assert Decimal(withdrawn["escrow_amount"]).scaleb(-6) >= Decimal(rental["refunded"])
    assert withdrawn["compensation"] == settled["slashed"]
    again = cli.ok("withdraw", "--json", role="renter").json()
    assert again["transactions"] == [] and again["escrow_amount"] == 0
    assert JobSpec.model_validate(SPEC).spec_hash().hex() in rental["job_spec_hash"]


def assert_watch_shows_telemetry(cli, rental_id: int) -> None:
    """`rental watch` of a rental the agent ran prints its GPUs' telemetry per period before the settlement line;
    with --no-telemetry only the chain's events; an oracle URL where nothing answers is said, and the events still
    come."""

    shown = cli.ok("rental", "watch", rental_id).out.strip().splitlines()
    assert shown[-1].startswith("settled completed")
    gpu_lines = [line for line in shown if line.startswith("telemetry #")]
    assert gpu_lines and len(gpu_lines) % SIMULATED_GPUS == 0
    assert re.fullmatch(
        r"telemetry #\d+ to [\d :-]+ GPU-[0-9a-f]{8}: utilisation \d+\.\d%, memory \d+\.\d of \d+\.\d GiB, "
        r"power \d+ W, temperature \d+ °C \(\d+ samples\)",
        gpu_lines[-1],
    ), gpu_lines[-1]

    chain_only = cli.ok("rental", "watch", rental_id, "--json", "--no-telemetry").out.splitlines()
    assert [json.loads(line)["kind"] for line in chain_only][-1] == "finalized"
    assert "telemetry" not in {json.loads(line)["kind"] for line in chain_only}

    nowhere = cli.ok("rental", "watch", rental_id, "--json", "--oracle-url", f"http://127.0.0.1:{NOTHING_PORT}")
    assert [json.loads(line)["kind"] for line in nowhere.out.splitlines()] == [
        json.loads(line)["kind"] for line in chain_only
    ]
    assert f"live telemetry: no answer from http://127.0.0.1:{NOTHING_PORT}" in nowhere.err


def assert_live_telemetry(points: list[dict]) -> None:
    """`rental watch --json`'s telemetry lines: each period once, in order, with both simulated GPUs' figures."""
    seqs = [p["seq"] for p in points]
    assert seqs and seqs == sorted(set(seqs))
    assert all([g["uuid"] for g in p["gpus"]] == [g["uuid"] for g in points[0]["gpus"]] for p in points)
    assert len(points[0]["gpus"]) == SIMULATED_GPUS
    measured = [g for p in points for g in p["gpus"] if g["samples"]]
    assert measured and all(g["power_w"] > 0 and g["temp_c"] > 0 and g["mem_total_mib"] > 0 for g in measured)
    assert all(0 <= g["util_pct"] <= 100 and g["mem_used_mib"] <= g["mem_total_mib"] for g in measured)


def test_faucet_mints_test_tokens_once_a_day(cli):
    claimed = cli.ok("faucet", "--json", role="agent2").json()
    assert claimed["amount"] == 10_000 * 10**6 and claimed["balance"] >= claimed["amount"]
    assert [t["action"] for t in claimed["transactions"]] == ["faucet"]
    assert cli.fails(1, "faucet", role="agent2").startswith("TestStablecoin_FaucetCooldown: ")
    assert "GPUEX_KEY" in cli.fails(2, "faucet")
