"""The marketplace web page in a real headless Chromium (Debian's `chromium` through its `chromedriver`), served by
the oracle of a devnet brought up as `gpuex devnet up` does: two providers list four offers, a renter rents one,
and a provider agent runs in this process on simulated GPUs so that usage reports land on chain while the pages
are open. Screenshots of each page go to out/test-artifacts/.

Needs `make browser` (apt packages chromium and chromium-driver); the test fails, saying so, without them.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
from eth_account import Account
from selenium.webdriver.common.by import By

from offchain.agent.containers import ContainerSettings
from offchain.agent.jobspec import JobSpec, JobSpecStore
from offchain.agent.service import ProviderAgent
from offchain.agent.settings import ProviderAgentSettings
from offchain.chain import deployments
from offchain.chain.contracts import contract
from offchain.chain.rpc import connect
from offchain.chain.tx.oneshot import Wallet
from offchain.market.offers import pack_text
from offchain.ops import devnet
from offchain.ops.deploy import USDC
from offchain.protocol.messages import gpu_uuid_hash
from offchain.protocol.reports import rental_id
from offchain.telemetry.simulated import SimulatedSource
from tests.e2e.browser import ARTIFACTS, WAIT_SECONDS, screenshot, wait

ANVIL_PORT = 8585
ORACLE_PORT = 8785
MAX_UINT = 2**256 - 1
RENTAL_SECONDS = 3_600
#: (provider role, GPUs, model, VRAM MiB, region, price per second in tUSD units); the first is the one rented.
OFFERS = [
    ("provider", 2, "H100-80GB", 81_559, "eu-west", 1_400),  # 5.04 tUSD/h
    ("provider", 1, "H100-80GB", 81_559, "eu-central", 700),  # 2.52 tUSD/h
    ("provider2", 4, "A100-80GB", 81_920, "us-east", 2_000),  # 7.20 tUSD/h
    ("provider2", 1, "L4", 23_034, "ap-south", 200),  # 0.72 tUSD/h
]
SCREENSHOT_REPORTS = 10

#: What the rental page's uPlot usage chart holds: its series' labels and columns (x first).
USAGE_CHART_DATA = """
const plot = gpuexRental.plots.usage;
return plot ? { labels: plot.series.map((s) => s.label), data: plot.data.map((column) => Array.from(column)) } : null;
"""
TABLE_TEXT = """
return Array.from(document.querySelectorAll("#" + arguments[0] + " tbody tr"),
                  (row) => Array.from(row.cells, (cell) => cell.innerText.trim()));
"""


def test_the_market_pages_show_offers_a_live_rental_and_a_provider(tmp_path, monkeypatch, browser, job_image):
    monkeypatch.setenv(deployments.DIR_ENV, str(tmp_path / "deployments"))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "web-failure.png").unlink(missing_ok=True)
    asyncio.run(_scenario(tmp_path, browser, job_image))


async def _scenario(tmp_path: Path, driver, job_image: str) -> None:
    state_dir = tmp_path / "devnet"
    state = await _devnet_up(state_dir, ANVIL_PORT, ORACLE_PORT)
    w3 = connect(state.rpc_url)
    agent_task = None
    try:
        source = SimulatedSource(gpu_count=2, seed=7)
        rented = await _market(w3, state, state_dir, source, tmp_path / "agent" / "specs")
        agent_task = _start_agent(state, state_dir, tmp_path / "agent", source, job_image, api_port=0)
        web = f"{state.oracle_url}/web"
        await _until_reports(f"{web}/api/rentals/{rented}", 2, agent_task)
        await asyncio.to_thread(_check_offers_page, driver, web)
        await asyncio.to_thread(_check_rental_page, driver, web, rented)
        await asyncio.to_thread(_check_provider_page, driver, web, state.accounts["provider"])
        await asyncio.to_thread(_open_rental_page, driver, web, rented)
        renter = Wallet(w3, Account.from_key(_key(state_dir, "renter")))
        await renter.transact(contract(w3, "RentalEscrow", state.deployment.escrow).functions.terminate(rented))
        await asyncio.to_thread(_check_termination_arrives, driver)
    finally:
        if agent_task is not None:
            agent_task.cancel()
            await asyncio.gather(agent_task, return_exceptions=True)
        await w3.provider.disconnect()
        devnet.down(state_dir, say=lambda _: None)


async def _devnet_up(state_dir: Path, port: int, oracle_port: int) -> devnet.DevnetState:
    """A devnet as `gpuex devnet up` brings it up, with an oracle that lands a checkpoint every 2 s."""
    return await devnet.up(
        state_dir,
        port=port,
        oracle_port=oracle_port,
        epoch_seconds=1.0,
        checkpoint_interval_seconds=2,
        say=lambda _: None,
    )


def _start_agent(
    state: devnet.DevnetState, state_dir: Path, agent_dir: Path, source: SimulatedSource, job_image: str, api_port: int
) -> asyncio.Task:
    """The devnet provider's agent, running in this process on `source`'s GPUs with its state in `agent_dir` and
    its renter API on `api_port` (0: any free port)."""
    agent = ProviderAgent(
        ProviderAgentSettings(
            chain=state.deployment.chain_settings(state.rpc_url),
            key=_key(state_dir, "agent"),
            provider=state.accounts["provider"],
            oracles=[state.oracle_url],
            allow_simulated=True,
            state_dir=agent_dir,
            report_interval_seconds=1.0,
            chain_poll_seconds=0.5,
            start_block=state.deployment.start_block,
            retry_initial_seconds=0.2,
            retry_max_seconds=1.0,
            container=ContainerSettings(default_image=job_image),
            keep_jobs_on_exit=False,
            api_port=api_port,
        ),
        source,
    )
    return asyncio.create_task(agent.run(), name="agent")


def _key(state_dir: Path, role: str) -> str:
    return devnet.key_path(state_dir, role).read_text().strip()


async def _market(w3, state, state_dir: Path, source: SimulatedSource, spec_dir: Path) -> int:
    """Stakes both providers, lists OFFERS as offers 1 to 4 (the first over the GPUs of `source`, with the agent
    key set) and rents offer 1; returns the rental id."""
    record = state.deployment
    token = contract(w3, "TestStablecoin", record.payment_token)
    registry = contract(w3, "ProviderRegistry", record.registry)
    escrow = contract(w3, "RentalEscrow", record.escrow)
    wallets = {
        role: Wallet(w3, Account.from_key(_key(state_dir, role))) for role in ("provider", "provider2", "renter")
    }
    uuids = {
        role: [f"GPU-web-test-{role}-{i}" for i in range(sum(c for r, c, *_ in OFFERS if r == role))]
        for role in ("provider", "provider2")
    }
    uuids["provider"][:2] = [gpu.uuid for gpu in source.gpus()]

    async def provider(role: str) -> None:
        wallet = wallets[role]
        await wallet.transact(token.functions.approve(record.registry, MAX_UINT))
        await wallet.transact(registry.functions.stake(1_000 * USDC))
        if role == "provider":
            await wallet.transact(registry.functions.setAgent(state.accounts["agent"]))
        await wallet.transact(registry.functions.registerGpus([gpu_uuid_hash(u) for u in uuids[role]]))

    await asyncio.gather(
        provider("provider"),
        provider("provider2"),
        wallets["renter"].transact(token.functions.approve(record.escrow, MAX_UINT)),
    )
    for role, count, model, vram, region, price in OFFERS:  # one at a time, so that the ids are 1 to 4
        hashes = [gpu_uuid_hash(uuids[role].pop(0)) for _ in range(count)]
        terms = (pack_text(model, 32), vram, price, 60, 86_400, pack_text(region, 16), 10_000, False, hashes)
        await wallets[role].transact(registry.functions.createOffer(terms))
    spec = JobSpec(command=("sleep", "600"))
    JobSpecStore(spec_dir).put(spec)
    await wallets["renter"].transact(escrow.functions.openRental(1, RENTAL_SECONDS, OFFERS[0][5], spec.spec_hash()))
    return rental_id(1, 1)


async def _until_reports(url: str, count: int, agent_task: asyncio.Task) -> None:
    """Waits until the page's API shows `count` applied reports of the rental."""
    deadline = time.monotonic() + 2 * WAIT_SECONDS
    async with aiohttp.ClientSession() as session:
        while True:
            if agent_task.done():
                agent_task.result()
                raise AssertionError("the agent stopped")
            async with session.get(url) as response:
                if response.status == 200 and len((await response.json())["reports"]) >= count:
                    return
            assert time.monotonic() < deadline, f"no {count} applied reports within {2 * WAIT_SECONDS} s"
            await asyncio.sleep(0.5)


def _rows(driver, table: str) -> list[list[str]]:
    """The cells' text of a table's body, read in one go (a live refresh may replace the rows at any time)."""
    return driver.execute_script(TABLE_TEXT, table)


def _check_offers_page(driver, web: str) -> None:
    driver.get(web + "/")
    # Rentable offers only, cheapest first: the rented one is left out.
    wait(driver, lambda d: len(_rows(d, "offers")) == 3, "the three rentable offers")
    rows = _rows(driver, "offers")
    assert [(r[0], r[2], r[4], r[5]) for r in rows] == [
        ("#4", "L4", "ap-south", "0.72 tUSD"),
        ("#2", "H100-80GB", "eu-central", "2.52 tUSD"),
        ("#3", "A100-80GB", "us-east", "7.20 tUSD"),
    ]
    assert all((r[8], r[11], r[12]) == ("no", "0", "available") for r in rows)  # egress, declines, status
    wait(driver, lambda d: len(_rows(d, "rentals")) == 1, "the recent rental")
    assert _rows(driver, "rentals")[0][1:3] == ["#1", "2 × H100-80GB"]
    screenshot(driver, "web-offers.png")

    driver.find_element(By.NAME, "gpu_model").send_keys("h100")
    driver.find_element(By.NAME, "include_unavailable").click()
    driver.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
    wait(driver, lambda d: [r[0] for r in _rows(d, "offers")] == ["#2", "#1"], "the H100 offers, rented included")
    assert _rows(driver, "offers")[1][12] == "rented"
    assert "gpu_model=h100" in driver.current_url and "include_unavailable=true" in driver.current_url

    driver.get(web + "/?sort=-price&min_gpus=2")
    wait(driver, lambda d: [r[0] for r in _rows(d, "offers")] == ["#3"], "the offers of 2+ GPUs, dearest first")
    driver.get(web + "/?min_gpus=0")
    error = wait(
        driver,
        lambda d: d.find_element(By.ID, "offers-error").is_displayed() and d.find_element(By.ID, "offers-error"),
        "the refusal of a bad filter",
    )
    assert "min_gpus" in error.text and "greater than or equal to 1" in error.text


def _open_rental_page(driver, web: str, rented: int):
    """Loads the rental's page and waits until its chart shows at least two reports; returns the chart's box."""
    driver.get(f"{web}/rental?id={rented}")
    return wait(
        driver,
        lambda d: (
            int(d.find_element(By.ID, "chart").get_attribute("data-points") or 0) >= 2
            and d.find_element(By.ID, "chart")
        ),
        "the chart of the first reports",
    )


def _check_rental_page(driver, web: str, rented: int) -> None:
    chart = _open_rental_page(driver, web, rented)
    usage = driver.execute_script(USAGE_CHART_DATA)
    assert usage["labels"] == ["period end", "GPU utilisation", "delivered seconds", "elapsed seconds"]
    ends, utilisation, delivered, elapsed = usage["data"]
    assert len(ends) >= 2 and ends == sorted(ends)
    assert all(u is not None and 0 <= u <= 100 for u in utilisation), utilisation
    assert delivered == sorted(delivered) and all(0 < d <= e for d, e in zip(delivered, elapsed)), (delivered, elapsed)
    assert driver.find_element(By.ID, "status").text == "running"
    assert "5.04 tUSD" in driver.find_element(By.ID, "cards").text  # the deposit: an hour at 5.04 tUSD/h
    assert len(_rows(driver, "reports")) >= 2
    points = int(chart.get_attribute("data-points"))
    # Live: more reports arrive over the event stream without a reload (enough for a screenshot worth a look).
    enough = max(points + 1, SCREENSHOT_REPORTS)
    wait(driver, lambda d: int(chart.get_attribute("data-points")) >= enough, f"{enough} reports, arriving live")
    screenshot(driver, "web-rental.png")


def _check_provider_page(driver, web: str, address: str) -> None:
    driver.get(f"{web}/provider?address={address}")
    wait(driver, lambda d: len(_rows(d, "offers")) == 2, "the provider's two offers")
    cards = driver.find_element(By.ID, "cards").text
    assert "1,000.00 tUSD" in cards  # staked
    assert [r[8] for r in _rows(driver, "offers")] == ["rented", "available"]
    oldest_first = [r[2] for r in reversed(_rows(driver, "history"))]
    assert oldest_first[:6] == ["Staked", "AgentSet", "OfferCreated", "OfferCreated", "RentalOpened", "RentalStarted"]
    screenshot(driver, "web-provider.png")


def _check_termination_arrives(driver) -> None:
    """The open rental page turns to the terminated rental, with the refund, without a reload."""
    wait(driver, lambda d: d.find_element(By.ID, "status").text == "terminated", "the termination")
    (refunded,) = [c for c in driver.find_elements(By.CSS_SELECTOR, "#cards .card") if "REFUNDED" in c.text.upper()]
    assert "0.00 tUSD" not in refunded.text
