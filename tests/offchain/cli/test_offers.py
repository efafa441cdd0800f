"""`gpuex offer create|update|pause|resume|close|list` and `gpuex offers search`; network resolution."""

from __future__ import annotations

from decimal import Decimal

from tests.offchain.cli.conftest import OTHER_CHAIN_ID, PORT, SIMULATED_GPUS

UNKNOWN_OFFER = 999


def test_create_lists_the_simulated_gpus(market):
    offer = market.create_offer.json()["offer"]
    assert offer["gpu_count"] == SIMULATED_GPUS and offer["gpu_model"] == "NVIDIA H100 80GB HBM3"
    assert (offer["vram_mib"], offer["vram_gib"], offer["region"]) == (81_559, 79.6, "eu-west")
    assert offer["price_per_hour"] == "7.200000" and offer["display"]["price_per_hour"] == "7.20 tUSD/h"
    assert (offer["min_duration"], offer["max_duration"], offer["util_floor"]) == (10, 7_200, 1.0)
    assert offer["display"]["durations"] == "10s – 2h"
    assert offer["available"] is True
    assert offer["egress"] is False and offer["declines"] == 0


def test_create_of_unregistered_gpus_names_the_revert(cli, market):
    error = cli.fails(
        1,
        "offer",
        "create",
        "--gpu",
        "GPU-never-registered",
        "--model",
        "NVIDIA L4",
        "--vram",
        "22.5",
        "--price-per-hour",
        "1",
        "--region",
        "us-east",
        role="provider",
    )
    assert error.startswith("Registry_GpuNotOwned: ")


def test_create_with_inverted_durations_names_the_revert(cli, market):
    error = cli.fails(
        1,
        "offer",
        "create",
        "--simulated",
        SIMULATED_GPUS,
        "--price-per-hour",
        "1",
        "--region",
        "eu",
        "--min-duration",
        "2h",
        "--max-duration",
        "1h",
        role="provider",
    )
    assert error == "Registry_InvalidTerms"


def test_create_refuses_a_price_that_rounds_to_zero(cli, market):
    error = cli.fails(
        2,
        "offer",
        "create",
        "--simulated",
        SIMULATED_GPUS,
        "--price-per-hour",
        "0.0001",
        "--region",
        "eu",
        role="provider",
    )
    assert error == "--price-per-hour 0.0001 rounds to 0 tUSD per second; the smallest price is 0.0036 tUSD/h"


def test_create_of_gpus_given_by_uuid_needs_their_model(cli):
    error = cli.fails(
        2, "offer", "create", "--gpu", "GPU-a", "--price-per-hour", "1", "--region", "eu", role="provider"
    )
    assert error == "--model is needed for GPUs given by UUID"


def test_create_refuses_a_region_longer_than_16_bytes(cli):
    error = cli.fails(
        2,
        "offer",
        "create",
        "--simulated",
        SIMULATED_GPUS,
        "--price-per-hour",
        "1",
        "--region",
        "x" * 17,
        role="provider",
    )
    assert error.startswith("bad offer terms: region: ") and "longer than 16 bytes" in error


def test_update_pause_and_resume(cli, market):
    offer_id = market.offer_id
    updated = cli.ok("offer", "update", offer_id, "--price-per-hour", "8", role="provider")
    assert "8/h is 7.9992 tUSD/h in effect" in updated.out
    restored = cli.ok("offer", "update", offer_id, "--price-per-hour", "7.20", "--json", role="provider").json()
    assert restored["offer"]["price_per_hour"] == "7.200000"
    paused = cli.ok("offer", "pause", offer_id, "--json", role="provider").json()["offer"]
    assert paused["status"] == "paused" and paused["available"] is False
    resumed = cli.ok("offer", "resume", offer_id, "--json", role="provider").json()["offer"]
    assert resumed["status"] == "active" and resumed["available"] is True
    assert cli.fails(1, "offer", "resume", offer_id, role="provider") == f"Registry_OfferNotPaused: {offer_id}"


def test_update_of_an_unknown_offer(cli, market):
    error = cli.fails(1, "offer", "update", UNKNOWN_OFFER, "--price-per-hour", "1", role="provider")
    assert error.startswith(f"no offer {UNKNOWN_OFFER} ")


def test_update_of_another_providers_offer_names_the_revert(cli, market):
    error = cli.fails(1, "offer", "pause", market.offer_id, role="renter")
    assert error.startswith(f"Registry_NotOfferProvider: {market.offer_id}, ")


def test_close_delists_for_good(cli, market):
    gpu = "GPU-0c105e00-0000-4000-8000-000000000001"
    cli.ok("provider", "register-gpus", "--gpu", gpu, role="provider")
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
        "0.5",
        "--region",
        "us-east",
        "--json",
        role="provider",
    ).json()["offer"]
    assert created["vram_mib"] == 23_040
    closed = cli.ok("offer", "close", created["offer_id"], "--json", role="provider").json()["offer"]
    assert closed["status"] == "closed"
    error = cli.fails(1, "offer", "close", created["offer_id"], role="provider")
    assert error == f"Registry_OfferClosed: {created['offer_id']}"


def test_create_with_egress_and_search_for_it(cli, market):
    gpu = "GPU-0c105e00-0000-4000-8000-000000000003"
    cli.ok("provider", "register-gpus", "--gpu", gpu, role="provider")
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
        "0.5",
        "--region",
        "us-east",
        "--egress",
        "--json",
        role="provider",
    ).json()["offer"]
    try:
        assert created["egress"] is True
        assert _ids(cli, "--egress") == [created["offer_id"]]
        assert {market.offer_id, created["offer_id"]} <= set(_ids(cli))
        row = next(line for line in cli.ok("offers", "search", "--egress").out.splitlines() if "NVIDIA L4" in line)
        assert " yes " in row
    finally:
        cli.ok("offer", "close", created["offer_id"], role="provider")


def test_list_shows_the_providers_offers(cli, market):
    mine = cli.ok("offer", "list", "--json", role="provider").json()
    assert market.offer_id in [o["offer_id"] for o in mine]
    assert {o["provider"] for o in mine} == {cli.address("provider")}
    assert cli.ok("offer", "list", "--provider", cli.address("renter"), "--json").json() == []


def test_list_needs_a_provider_or_a_key(cli):
    assert cli.fails(2, "offer", "list").startswith("no key")


def _ids(cli, *filters: str) -> list[int]:
    return [o["offer_id"] for o in cli.ok("offers", "search", *filters, "--json").json()]


def test_search_filters(cli, market):
    offer_id = market.offer_id
    assert offer_id in _ids(
        cli,
        "--gpu-model",
        "h100",
        "--region",
        "EU",
        "--max-price-per-hour",
        "7.20",
        "--min-vram",
        "79",
        "--gpus",
        "2",
        "--min-duration",
        "1h",
    )
    # Rentals of other tests may have given the provider a history: ask for more than it has delivered (a new
    # provider, with too little value settled, passes no minimum).
    shown = cli.ok("provider", "show", cli.address("provider"), "--json").json()
    reliability = shown["reliability"] if shown["established"] else None
    above = "50" if reliability is None else f"{min(100.0, reliability * 100 + 0.01):.2f}"
    excluded = [
        ["--max-price-per-hour", "7.19"],
        ["--min-vram", "80"],
        ["--gpus", "3"],
        ["--gpu-model", "a100"],
        ["--region", "us"],
        ["--min-duration", "3h"],
    ]
    if reliability is None or reliability < 1:
        excluded.append(["--min-reliability", above])
    for excluding in excluded:
        assert offer_id not in _ids(cli, *excluding), excluding
    if reliability is None:  # a new provider: listed, as new, when the search asks for new providers too
        assert offer_id in _ids(cli, "--min-reliability", "99", "--include-new")
    assert len(_ids(cli, "--all", "--sort=-price", "--limit", "1")) == 1
    found = cli.ok("offers", "search", "--json").json()
    (listed,) = [o for o in found if o["offer_id"] == offer_id]
    assert Decimal(listed["value_settled"]) == Decimal(shown["value_settled"]) >= Decimal(shown["value_missed"])
    assert listed["distinct_renters"] == shown["distinct_renters"]
    table = cli.ok("offers", "search").out
    assert "settled" in table and "renters" in table
    assert "7.20 tUSD/h" in table and "2x NVIDIA H100 80GB HBM3" in table and "79.6 GiB" in table


def test_search_refuses_bad_filters(cli):
    assert "a percentage is from 0 to 100" in cli.fails(2, "offers", "search", "--min-reliability", "150")
    assert "invalid choice: 'cheapest'" in cli.fails(2, "offers", "search", "--sort", "cheapest")
    assert "not a duration: 'forever'" in cli.fails(2, "offers", "search", "--min-duration", "forever")


def test_common_options_go_before_or_after_the_command(cli, market):
    assert cli.ok("--json", "offers", "search").json() == cli.ok("offers", "search", "--json").json()


def test_search_on_the_wrong_network(cli, other_chain):
    error = cli.fails(2, "offers", "search", "--network", "devnet", "--rpc-url", other_chain)
    assert (
        error == f"wrong network: the RPC at {other_chain} serves chain {OTHER_CHAIN_ID}, but the devnet "
        "deployment is on chain 31337"
    )


def test_search_of_a_chain_without_a_deployment(cli, other_chain):
    error = cli.fails(2, "offers", "search", env={"GPUEX_RPC_URL": other_chain})
    assert error.startswith(f"no gpuex deployment for chain {OTHER_CHAIN_ID} ")


def test_search_of_an_unknown_network(cli):
    error = cli.fails(2, "offers", "search", "--network", "sepolia", "--rpc-url", f"http://127.0.0.1:{PORT}")
    assert error.startswith("no gpuex deployment for network 'sepolia'")


def test_search_without_a_network(cli, tmp_path):
    assert cli.fails(2, "offers", "search", "--state-dir", tmp_path).startswith("no network: ")


def test_search_through_an_unreachable_rpc(cli):
    error = cli.fails(1, "offers", "search", "--network", "devnet", "--rpc-url", "http://127.0.0.1:8579")
    assert error.startswith("cannot reach the RPC at http://127.0.0.1:8579")
