"""The web page's JSON API and event stream over the event index of the real suite: the offer search is
`gpuex offers search`'s, amounts are in human units, bad input is refused with its reason, and the oracle serves
the page when told to."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from brownie import chain, web3
from eth_utils import keccak
from pydantic import SecretStr

from offchain.chain import deployments
from offchain.chain.contracts import abi
from offchain.config import OracleSettings
from offchain.market.offers import OfferQuery, read_offers, read_token, search_offers
from offchain.oracle.app import create_app
from offchain.protocol.messages import gpu_uuid_hash
from offchain.protocol.renterapi import AgentInfo
from offchain.protocol.reports import Report
from offchain.protocol.status import DeclineReason
from tests.offchain.chain.helpers import report_args
from tests.offchain.conftest import AGENT, ORACLE_KEYS, PRICE
from tests.offchain.web.conftest import until_block

DURATION = 3_600


def run(coroutine):
    return asyncio.run(coroutine)


def list_l4_offer(suite, provider) -> int:
    hashes = [gpu_uuid_hash("GPU-web-api-test-l4")]
    suite.registry.registerGpus(hashes, {"from": provider})
    terms = (b"L4".ljust(32, b"\0"), 23_034, PRICE // 4, 60, 7_200, b"us-east".ljust(16, b"\0"), 5_000, True, hashes)
    return suite.registry.createOffer(terms, {"from": provider}).return_value


def open_running_rental(suite, offer_id: int, provider, renter, relayer) -> int:
    """A rental of `offer_id`, started, with one applied report (10 s delivered at 90% utilisation), claimed, then
    one applied (10 s more at 50 %) and one skipped (its utilisation above 100 %)."""
    rental_id = suite.escrow.openRental(offer_id, DURATION, PRICE, keccak(text="job"), {"from": renter}).return_value
    suite.escrow.start(rental_id, {"from": provider})
    since = suite.read(lambda r: r.rental(rental_id)).since
    chain.sleep(20)
    chain.mine()
    first = Report(rental_id=rental_id, seq=1, covered_until=since + 10, delivered_seconds=10, util_seconds=9)
    suite.escrow.submitReports(*report_args(suite, [first]), {"from": relayer})
    suite.escrow.claimPayout(rental_id, {"from": relayer})
    reports = [
        Report(rental_id=rental_id, seq=2, covered_until=since + 20, delivered_seconds=20, util_seconds=14),
        Report(rental_id=rental_id, seq=3, covered_until=since + 20, delivered_seconds=20, util_seconds=21),
    ]
    suite.escrow.submitReports(*report_args(suite, reports), {"from": relayer})
    return rental_id


def test_offers_are_those_of_the_shared_search_in_human_units(web_client, suite, offer, provider):
    l4 = list_l4_offer(suite, provider)
    queries = [
        {},
        {"gpu_model": "l4"},
        {"sort": "-price"},
        {"max_price_per_hour": "3"},
        {"min_vram_gib": "40", "region": "EU"},
        {"include_unavailable": "on", "sort": "gpus", "limit": "1"},
        {"egress": "true"},
        {"gpu_model": "", "min_gpus": " "},
        {"min_reliability": "0.9"},
        {"min_reliability": "0.9", "include_new": "true"},
    ]  # blank form fields count as not given

    async def scenario():
        async with web_client() as client:
            pages = [await (await client.get("/web/api/offers", params=q)).json() for q in queries]
            return pages

    pages = run(scenario())
    on_chain, token = suite.read(lambda r: asyncio.gather(read_offers(r), read_token(r, suite.payment_token.address)))
    for query, page in zip(queries, pages):
        expected = search_offers(on_chain, OfferQuery(**{k: v for k, v in query.items() if v.strip()}), token)
        assert [o["offer_id"] for o in page["offers"]] == [o.offer_id for o in expected], query
    assert [o["offer_id"] for o in pages[0]["offers"]] == [l4, offer]
    h100 = pages[0]["offers"][1]
    assert (h100["gpu_model"], h100["gpu_count"], h100["vram_mib"], h100["vram_gib"], h100["region"]) == (
        "H100-80GB",
        2,
        81_559,
        79.6,
        "eu-west",
    )
    assert (h100["price_per_hour"], h100["price_per_gpu_hour"], h100["util_floor"], h100["status"]) == (
        "3.600000",
        "1.800000",
        1.0,
        "active",
    )
    assert h100["display"] == {
        "gpus": "2x H100-80GB",
        "vram_gib": "79.6 GiB",
        "price_per_hour": "3.60 tUSD/h",
        "price_per_gpu_hour": "1.80 tUSD/h",
        "durations": "1m – 1d",
        "util_floor": "100.0%",
        "egress": "no",
        "reliability": "new",
        "value_settled": "0.00 tUSD",
        "decline_rate": "—",
        "agent": h100["display"]["agent"],
        "availability": "available",
    }
    assert (h100["available"], h100["rental_id"], h100["reliability"]) == (True, None, None)
    assert (h100["value_settled"], h100["distinct_renters"]) == ("0.000000", 0)
    assert (h100["egress"], h100["declines"], pages[0]["offers"][0]["egress"]) == (False, 0, True)
    assert [o["offer_id"] for o in pages[6]["offers"]] == [l4]
    assert pages[8]["offers"] == [] and [o["offer_id"] for o in pages[9]["offers"]] == [l4, offer]  # both new
    assert pages[0]["token"]["symbol"] == "tUSD"


def test_a_bad_offer_query_is_refused_with_its_reason(web_client, offer):
    refused = {
        "min_gpus=0": "min_gpus",
        "sort=cheapest": "sort",
        "colour=red": "colour",
        "max_price_per_hour=lots": "max_price_per_hour",
        "limit=1&limit=2": "limit is given 2 times",
        "min_reliability=0.9&include_new=sometimes": "include_new",
    }

    async def scenario():
        async with web_client() as client:
            return [(r.status, await r.json()) for r in [await client.get("/web/api/offers?" + q) for q in refused]]

    for (status, body), reason in zip(run(scenario()), refused.values()):
        assert status == 400 and body["error"] == "bad_query" and reason in body["detail"], body


def test_a_rental_and_its_provider_in_human_units(web_client, suite, offer, provider, renter, relayer):
    rental_id = open_running_rental(suite, offer, provider, renter, relayer)

    async def scenario():
        async with web_client() as client:
            return [
                await (await client.get(path)).json()
                for path in (
                    f"/web/api/rentals/{rental_id}",
                    "/web/api/rentals",
                    f"/web/api/providers/{provider.address.lower()}",
                )
            ]

    rental, recent, indexed_provider = run(scenario())
    assert (rental["rental_id"], rental["offer_id"], rental["status"], rental["live"]) == (
        str(rental_id),
        offer,
        "running",
        True,
    )
    assert (rental["deposit"], rental["paid"], rental["refunded"], rental["price_per_hour"]) == (
        "3.600000",
        "0.020000",
        "0.000000",
        "3.600000",
    )
    assert (rental["covered_until"], rental["delivered_seconds"], rental["utilisation"]) == (
        rental["since"] + 20,
        20,
        0.7,
    )
    assert (rental["display"]["utilisation"], rental["display"]["paid"], rental["display"]["delivered_seconds"]) == (
        "70.0%",
        "0.02 tUSD",
        "20s",
    )
    assert (rental["claimed"], rental["claimable"], rental["provider_paid"]) == ("0.010000", "0.010000", "0.009750")
    assert [{k: v for k, v in report.items() if k != "display"} for report in rental["reports"]] == [
        {
            "seq": 1,
            "period_start": rental["since"],
            "covered_until": rental["since"] + 10,
            "delivered_seconds": 10,
            "utilisation": 0.9,
            "earned": "0.010000",
            "total_delivered_seconds": 10,
        },
        {
            "seq": 2,
            "period_start": rental["since"] + 10,
            "covered_until": rental["since"] + 20,
            "delivered_seconds": 10,
            "utilisation": 0.5,
            "earned": "0.010000",
            "total_delivered_seconds": 20,
        },
    ]
    assert rental["reports"][0]["display"] == {
        "delivered_seconds": "10s",
        "period": "10s",
        "utilisation": "90.0%",
        "earned": "0.01 tUSD",
    }
    assert rental["skipped"] == [{"seq": 3, "reason": "utilisation_above_delivered"}]
    assert (rental["gpu_model"], rental["gpu_count"], rental["settlement"]) == ("H100-80GB", 2, None)
    assert [r["rental_id"] for r in recent["rentals"]] == [str(rental_id)]
    assert indexed_provider["address"] == provider.address
    assert (indexed_provider["staked"], indexed_provider["locked"]) == ("10000.000000", "200.000000")
    assert [o["offer_id"] for o in indexed_provider["offers"]] == [offer]
    assert indexed_provider["offers"][0]["rental_id"] == str(rental_id)
    assert (indexed_provider["claimable"], indexed_provider["value_settled"], indexed_provider["reliability"]) == (
        "0.010000",
        "0.000000",
        None,
    )
    claimed = next(h for h in indexed_provider["history"] if h["event"] == "EarningsClaimed")
    assert claimed["summary"] == "claimed 0.00975 tUSD of the rental's earnings, fee 0.00025 tUSD"
    opened = next(h for h in indexed_provider["history"] if h["event"] == "RentalOpened")
    assert opened["summary"] == f"{renter.address} rented offer #{offer} for 1h, deposit 3.60 tUSD"
    assert indexed_provider["history"][-1]["summary"] == "staked 10,000.00 tUSD"  # the oldest last


def test_a_declined_rental_shows_its_reason_and_the_providers_declines(web_client, suite, offer, provider, renter):
    rental_id = suite.escrow.openRental(offer, DURATION, PRICE, keccak(text="job"), {"from": renter}).return_value
    suite.escrow.decline(rental_id, DeclineReason.EXCEEDS_OFFER, {"from": provider})

    async def scenario():
        async with web_client() as client:
            return [
                await (await client.get(path)).json()
                for path in (
                    f"/web/api/rentals/{rental_id}",
                    f"/web/api/providers/{provider.address}",
                    "/web/api/offers",
                )
            ]

    rental, indexed_provider, offers = run(scenario())
    assert (rental["status"], rental["live"], rental["decline_reason"]) == ("declined", False, "exceeds_offer")
    assert rental["decline_detail"] == DeclineReason.EXCEEDS_OFFER.describe()
    assert (rental["settlement"]["refund"], rental["settlement"]["slashed"], rental["refunded"]) == (
        "3.600000",
        "0.000000",
        "3.600000",
    )
    assert (indexed_provider["declines"], indexed_provider["slashes"]) == (1, 0)
    assert (indexed_provider["decline_rate"], indexed_provider["display"]["decline_rate"]) == (1.0, "100.0%")
    assert (indexed_provider["reliability"], indexed_provider["display"]["reliability"]) == (None, "new")
    assert [o["declines"] for o in offers["offers"]] == [1]
    declined = next(h for h in indexed_provider["history"] if h["event"] == "RentalDeclined")
    assert declined["summary"] == "declined the rental: " + DeclineReason.EXCEEDS_OFFER.describe()


def test_a_provider_shows_its_published_agent_url_and_when_it_changed(web_client, suite, offer, provider):
    url = "https://agent.example.net:8443"

    async def provider_page():
        async with web_client() as client:
            return await (await client.get(f"/web/api/providers/{provider.address}")).json()

    assert run(provider_page())["agent_url"] is None
    suite.registry.setAgentUrl(url, {"from": provider})
    published = run(provider_page())
    suite.registry.setAgentUrl("", {"from": provider})
    cleared = run(provider_page())

    assert published["agent_url"] == url and cleared["agent_url"] is None
    assert [h["summary"] for h in cleared["history"] if h["event"] == "AgentUrlSet"] == [
        "cleared its agent URL",
        f"published its agent URL {url}",
    ]  # the newest first


def test_unknown_rentals_and_providers_are_refused(web_client, offer, deployer):
    async def scenario():
        async with web_client() as client:
            paths = [
                "/web/api/rentals/99",
                "/web/api/rentals/x",
                f"/web/api/providers/{deployer.address}",
                "/web/api/providers/0x12",
                "/web/api/rentals?limit=0",
            ]
            return [(r.status, (await r.json())["error"]) for r in [await client.get(p) for p in paths]]

    assert run(scenario()) == [
        (404, "unknown_rental"),
        (400, "bad_query"),
        (404, "unknown_provider"),
        (400, "bad_address"),
        (400, "bad_query"),
    ]


def test_the_contracts_come_with_the_abis_of_the_build_artifacts(web_client, deployment):
    async def scenario():
        async with web_client() as client:
            return await (await client.get("/web/api/contracts")).json()

    contracts = run(scenario())
    assert contracts["chain_id"] == deployment.chain_id
    assert contracts["escrow"]["address"] == deployment.escrow
    assert contracts["registry"]["address"] == deployment.registry
    assert contracts["payment_token"]["address"] == deployment.payment_token
    assert contracts["escrow"]["abi"] == abi("RentalEscrow")
    assert contracts["registry"]["abi"] == abi("ProviderRegistry")
    names = {entry.get("name") for entry in contracts["payment_token"]["abi"]}
    assert {"approve", "allowance", "balanceOf", "decimals", "ERC20InsufficientBalance"} <= names


def test_the_event_stream_announces_each_move_of_the_index(web_client, suite, offer, renter):
    async def next_event(stream) -> dict:
        while True:
            line = (await asyncio.wait_for(stream.content.readline(), 10)).decode().strip()
            if line.startswith("data: "):
                return json.loads(line.removeprefix("data: "))

    async def scenario():
        async with web_client() as client:
            stream = await client.get("/web/api/events")
            assert stream.headers["Content-Type"] == "text/event-stream"
            first = await next_event(stream)
            rental_id = suite.escrow.openRental(
                offer, DURATION, PRICE, keccak(text="job"), {"from": renter}
            ).return_value
            moved = await next_event(stream)
            rental = await (await client.get(f"/web/api/rentals/{rental_id}")).json()
            stream.close()
            return first, moved, rental

    first, moved, rental = run(scenario())
    assert first["ready"] and moved["ready"]
    assert moved["version"] > first["version"] and moved["block"] == web3.eth.block_number
    assert rental["status"] == "open"


def test_an_open_event_stream_does_not_hold_up_a_shutdown(web_client):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            async with web_client() as client:
                stream = await session.get(client.make_url("/web/api/events"))
                assert (await stream.content.readline()).startswith(b"retry:")
                closing = time.monotonic()
            shutdown_seconds = time.monotonic() - closing
            ended = await asyncio.wait_for(stream.content.read(), 5)  # the rest of the stream, up to its end
            return shutdown_seconds, ended

    shutdown_seconds, ended = run(scenario())
    assert shutdown_seconds < 2  # not the stream's heartbeat interval, nor the server's shutdown timeout
    assert b"event: index" in ended


def test_the_page_answers_503_until_its_index_reaches_the_deployment(web_client, deployment):
    lagging = deployment.model_copy(update={"start_block": web3.eth.block_number + 1_000})  # a node far behind

    async def scenario():
        async with web_client(lagging, ready=False) as client:
            await asyncio.sleep(0.3)  # several rounds of the index
            market = await (await client.get("/web/api/market")).json()
            refusals = [
                (r.status, (await r.json())["error"])
                for r in [await client.get(p) for p in ("/web/api/offers", "/web/api/rentals", "/web/api/rentals/1")]
            ]
            return market["index"], refusals

    index, refusals = run(scenario())
    assert (index["ready"], index["block"]) == (False, None)
    assert refusals == [(503, "indexing")] * 3


def test_the_oracle_serves_the_page_when_web_is_on(chain_settings, deployment, tmp_path, monkeypatch, offer):
    monkeypatch.setenv(deployments.DIR_ENV, str(tmp_path))
    deployments.save(deployment)
    settings = OracleSettings(
        chain=chain_settings, key=SecretStr("0x" + ORACLE_KEYS[0].hex()), state_dir=tmp_path / "oracle", web=True
    )

    async def scenario():
        async with TestClient(TestServer(create_app(settings), host="127.0.0.1")) as client:
            await until_block(client, web3.eth.block_number)
            root = await client.get("/", allow_redirects=False)
            page = await client.get("/web/")
            offers = await (await client.get("/web/api/offers")).json()
            health = await client.get("/healthz")
            return root.status, root.headers["Location"], page.status, await page.text(), offers, health.status

    root, location, page, html, offers, health = run(scenario())
    assert (root, location, page, health) == (302, "/web/", 200, 200)
    assert "<title>gpuex market · offers</title>" in html
    assert [o["offer_id"] for o in offers["offers"]] == [offer]


AGENT_PORT = 9171


def test_offers_show_whether_the_providers_agent_answers(web_client, suite, offer, provider):
    """No URL: not set; a URL where nothing answers: offline; a URL where an agent answers: online."""
    agent = web.Application()
    info = AgentInfo(
        address=AGENT.address,
        public_key="0x" + AGENT._key_obj.public_key.to_bytes().hex(),
        chain_id=web3.eth.chain_id,
        escrow=suite.escrow.address,
        isolation="container",
        engine="podman",
    )

    async def answer(_: web.Request) -> web.Response:
        return web.Response(body=info.model_dump_json(), content_type="application/json")

    agent.router.add_get("/v1/agent", answer)

    async def agent_of_the_offer() -> tuple[bool, bool | None, str]:
        async with web_client() as client:
            (listed,) = (await (await client.get("/web/api/offers")).json())["offers"]
            return listed["agent_set"], listed["agent_online"], listed["display"]["agent"]

    assert run(agent_of_the_offer()) == (False, None, "not set")
    suite.registry.setAgentUrl(f"http://127.0.0.1:{AGENT_PORT}", {"from": provider})
    assert run(agent_of_the_offer()) == (True, False, "offline")

    async def with_the_agent_up() -> tuple[bool, bool | None, str]:
        runner = web.AppRunner(agent)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", AGENT_PORT).start()
        try:
            return await agent_of_the_offer()
        finally:
            await runner.cleanup()

    assert run(with_the_agent_up()) == (True, True, "online")


def test_an_accounts_rentals_and_balances(web_client, suite, offer, provider, renter, relayer):
    rental_id = open_running_rental(suite, offer, provider, renter, relayer)
    bad = ("0x1234", "0x" + "gg" * 20, "0x" + "ab" * 21, "renter", "0x" + "ab" * 20 + "%20")

    async def scenario():
        async with web_client() as client:
            refused = [(r.status, await r.json()) for r in [await client.get(f"/web/api/accounts/{a}") for a in bad]]
            as_renter = await (await client.get(f"/web/api/accounts/{renter.address.lower()}")).json()
            as_provider = await (await client.get(f"/web/api/accounts/{provider.address}")).json()
            return refused, as_renter, as_provider

    refused, as_renter, as_provider = run(scenario())
    assert all(status == 400 and body["error"] == "bad_address" for status, body in refused), refused
    assert as_renter["address"] == renter.address
    assert [(r["rental_id"], r["role"], r["status"]) for r in as_renter["rentals"]] == [
        (str(rental_id), "renter", "running")
    ]
    assert [(r["rental_id"], r["role"]) for r in as_provider["rentals"]] == [(str(rental_id), "provider")]
    # 0.01 tUSD earned since the claim, less the 2.5 % fee: what claimPayout would credit the provider now
    assert (as_provider["balances"]["pending_earnings"], as_provider["balances"]["withdrawable"]) == (
        "0.009750",
        "0.009750",
    )
    assert as_provider["balances"]["display"]["staked"] == "10,000.00 tUSD"
    assert as_renter["balances"]["pending_earnings"] == "0.000000"
