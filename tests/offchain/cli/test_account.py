"""One set of numbers: `gpuex rental status --json`, `gpuex offers search --json` and `gpuex provider show --json`
send what the web API of the devnet's oracle sends for the same rental, offers and provider; `gpuex rentals` and
`gpuex balance` show an account's rentals and balances as `/web/api/accounts/<address>` does."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from decimal import Decimal
from typing import Any

import pytest

from offchain.protocol.reports import Report, ReportStatus
from tests.offchain.cli.conftest import ORACLE_PORT, wait_for
from tests.offchain.cli.test_rental import land_report, send_as

WEB_API = f"http://127.0.0.1:{ORACLE_PORT}/web/api"
SPEC = {"command": ["sleep", "4"]}


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "job.json"
    path.write_text(json.dumps(SPEC))
    return path


def web_get(path: str) -> tuple[int, Any]:
    """The status and JSON body of `GET /web/api<path>` on the devnet's oracle."""
    try:
        with urllib.request.urlopen(WEB_API + path, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def web_caught_up(cli) -> None:
    """Waits until the page's index has every block the chain has now."""
    head = cli.ok("devnet", "status", "--json").json()["block_number"]
    wait_for(lambda: (web_get("/market")[1].get("index") or {}).get("block", -1) >= head, 30, "the web index")


def compare_rental(cli, rental_id: int) -> dict:
    web_caught_up(cli)
    shown = cli.ok("rental", "status", rental_id, "--json").json()
    # What the provider's agent tells the renter of the job is the CLI's alone (and no agent runs here).
    assert shown.pop("job") is None and shown.pop("job_unavailable")
    assert [shown.pop(key) for key in ("exit_code", "failure_reason", "result_digest")] == [None, None, None]
    status, served = web_get(f"/rentals/{rental_id}")
    assert status == 200 and shown == served
    return shown


def compare_provider(cli) -> dict:
    """The provider's record from both, the same but for what each adds: the page's offers, rentals and history,
    and the CLI's earnings by rental."""
    web_caught_up(cli)
    shown = cli.ok("provider", "show", "--json", role="provider").json()
    by_rental = shown.pop("claimable_by_rental")
    assert sum(Decimal(amount) for amount in by_rental.values()) == Decimal(shown["claimable"])
    status, served = web_get(f"/providers/{cli.address('provider')}")
    assert status == 200 and [served.pop(key) for key in ("offers", "rentals", "history")]
    assert shown == served
    return shown


def running_rental(cli, market, spec_file) -> tuple[int, int]:
    """A rental of the market's offer, started, with one report landed: its id and start time."""
    rented = cli.ok(
        "rent", market.offer_id, "--duration", "10m", "--spec", spec_file, "--approve", "--json", role="renter"
    )
    rental_id = int(rented.json()["rental"]["rental_id"])
    send_as(cli, "agent", lambda escrow: escrow.start(rental_id))
    since = cli.ok("rental", "status", rental_id, "--json").json()["started_at"]
    time.sleep(2)
    land_report(cli, Report(rental_id=rental_id, seq=1, covered_until=since + 1, delivered_seconds=1, util_seconds=1))
    return rental_id, since


def settle(cli, rental_id: int, since: int) -> None:
    report = Report(
        rental_id=rental_id,
        seq=2,
        covered_until=since + 2,
        delivered_seconds=2,
        util_seconds=1,
        status=ReportStatus.COMPLETED,
    )
    land_report(cli, report)


def test_the_cli_and_the_web_api_send_the_same_rental_and_offers(cli, market, spec_file):
    rental_id, since = running_rental(cli, market, spec_file)
    try:
        running = compare_rental(cli, rental_id)
        assert (running["status"], running["utilisation"], running["display"]["utilisation"]) == (
            "running",
            1.0,
            "100.0%",
        )
        web_caught_up(cli)
        offers = cli.ok("offers", "search", "--all", "--json").json()
        status, page = web_get("/offers?include_unavailable=true")
        assert status == 200 and offers == page["offers"] and offers
        (listed,) = [offer for offer in offers if offer["offer_id"] == market.offer_id]
        assert listed["rental_id"] == str(rental_id) and listed["display"]["availability"] == f"rented ({rental_id})"
        provider = compare_provider(cli)
        assert Decimal(provider["claimable"]) > 0
    finally:
        settle(cli, rental_id, since)
    assert Decimal(compare_provider(cli)["value_settled"]) > 0
    settled = compare_rental(cli, rental_id)
    assert (settled["status"], settled["utilisation"], settled["settlement"]["delivered_seconds"]) == (
        "completed",
        0.5,
        2,
    )
    assert settled["display"]["paid"] == "0.004 tUSD" and settled["paid"] == "0.004000"  # a floor of 100%


def test_rentals_lists_the_accounts_rentals_on_each_side(cli, market, spec_file):
    rental_id, since = running_rental(cli, market, spec_file)
    try:
        mine = cli.ok("rentals", "--json", role="renter").json()
        assert mine["address"] == cli.address("renter")
        (row,) = [r for r in mine["rentals"] if r["rental_id"] == str(rental_id)]
        assert (row["role"], row["status"], row["renter"]) == ("renter", "running", cli.address("renter"))
        as_provider = cli.ok("rentals", "--as", "provider", "--json", role="renter").json()["rentals"]
        assert str(rental_id) not in [r["rental_id"] for r in as_provider]
        provided = cli.ok("rentals", "--as", "provider", "--status", "running", "--json", role="provider").json()
        assert str(rental_id) in [r["rental_id"] for r in provided["rentals"]]
        assert {(r["role"], r["status"]) for r in provided["rentals"]} == {("provider", "running")}
        table = cli.ok("rentals", role="renter").out
        assert str(rental_id) in table and "running" in table and "7.20 tUSD/h" in table
        web_caught_up(cli)
        status, account = web_get(f"/accounts/{cli.address('renter').lower()}")
        assert status == 200 and account["rentals"] == cli.ok("rentals", "--json", role="renter").json()["rentals"]
    finally:
        settle(cli, rental_id, since)
    by_address = cli.ok("rentals", "--status", "completed", "--address", cli.address("renter"), "--json").json()
    assert str(rental_id) in [r["rental_id"] for r in by_address["rentals"]]
    assert by_address == cli.ok("rentals", "--status", "completed", "--json", role="renter").json()


def test_balance_shows_what_a_claim_would_credit_and_what_can_be_withdrawn(cli, market, spec_file):
    rental_id, since = running_rental(cli, market, spec_file)
    try:
        before = cli.ok("balance", "--json", role="provider").json()["balances"]
        pending = Decimal(before["pending_earnings"])
        assert pending > 0 and before["display"]["pending_earnings"].endswith(" tUSD")
        claimed = cli.ok("rental", "claim", rental_id, "--json", role="provider").json()["claimed"]
        assert pending.scaleb(6) >= claimed["provider_payout"]  # other running rentals of the provider count too
        after = cli.ok("balance", "--json", role="provider").json()["balances"]
        payout = Decimal(claimed["provider_payout"]).scaleb(-6)
        assert Decimal(after["withdrawable"]) - Decimal(before["withdrawable"]) == payout
        assert Decimal(after["pending_earnings"]) == pending - payout
        assert Decimal(after["staked"]) >= Decimal(after["locked"]) > 0
        web_caught_up(cli)
        status, account = web_get(f"/accounts/{cli.address('provider')}")
        assert (status, account["balances"]) == (200, cli.ok("balance", "--json", role="provider").json()["balances"])
        shown = cli.ok("balance", role="provider").out
        assert "pending earnings" in shown and "withdrawable" in shown and after["display"]["staked"] in shown
    finally:
        settle(cli, rental_id, since)


def test_rentals_and_balance_refuse_bad_input(cli):
    assert "invalid choice: 'both'" in cli.fails(2, "rentals", "--as", "both")
    assert "invalid choice: 'RUNNING;'" in cli.fails(2, "rentals", "--status", "RUNNING;")
    for command in ("rentals", "balance"):
        assert "not an address" in cli.fails(2, command, "--address", "0x1234")
        assert "not an address" in cli.fails(2, command, "--address", "'; drop table rentals; --")
        assert cli.fails(2, command).startswith("no key: ")  # neither a key nor --address


def test_the_account_api_refuses_a_malformed_address(cli):
    for address in (
        "0x1234",
        "not-an-address",
        "0x" + "zz" * 20,
        "0x" + "ab" * 200,
        "%00",
        "0x" + "ab" * 20 + " ",
        "0x" + "ab" * 19 + "a",
    ):
        status, body = web_get("/accounts/" + urllib.request.quote(address, safe=""))
        assert (status, body["error"]) == (400, "bad_address"), address
        assert len(body["detail"]) < 200
    status, empty = web_get("/accounts/0x" + "00" * 19 + "01")
    assert status == 200 and empty["rentals"] == [] and empty["balances"]["withdrawable"] == "0.000000"
