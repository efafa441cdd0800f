"""The marketplace web page in a real headless Chromium (Debian's `chromium` through its `chromedriver`), served by
the oracle of a devnet brought up as `gpuex devnet up` does: two providers list four offers, a renter rents one,
and a provider agent runs in this process on simulated GPUs so that usage reports land on chain while the pages
are open. Screenshots of each page go to out/test-artifacts/.

Needs `make browser` (apt packages chromium and chromium-driver); the test fails, saying so, without them.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from selenium.webdriver.common.by import By

from offchain.agent.jobspec import JobSpec, JobSpecStore
from offchain.chain import deployments
from offchain.chain.contracts import contract
from offchain.protocol.reports import rental_id
from offchain.telemetry.simulated import SimulatedSource
from tests.e2e.browser import screenshot, wait
from tests.e2e.webmarket import (
    MAX_UINT,
    OFFERS,
    list_offers,
    market_devnet,
    provider_agent,
    rows,
    running,
    until_rental,
    wallet,
)

ANVIL_PORT = 8585
ORACLE_PORT = 8785
RENTAL_SECONDS = 3_600  # of offer 1 (OFFERS[0]), the one rented
SCREENSHOT_REPORTS = 10

#: What the rental page's uPlot usage chart holds: its series' labels and columns (x first).
USAGE_CHART_DATA = """
const plot = gpuexRental.plots.usage;
return plot ? { labels: plot.series.map((s) => s.label), data: plot.data.map((column) => Array.from(column)) } : null;
"""


def test_the_market_pages_show_offers_a_live_rental_and_a_provider(tmp_path, monkeypatch, browser, job_image):
    monkeypatch.setenv(deployments.DIR_ENV, str(tmp_path / "deployments"))
    asyncio.run(_scenario(tmp_path, browser, job_image))


async def _scenario(tmp_path: Path, driver, job_image: str) -> None:
    async with market_devnet(tmp_path, ANVIL_PORT, ORACLE_PORT) as (state, state_dir, w3):
        source = SimulatedSource(gpu_count=2, seed=7)
        rented = await _market(w3, state, state_dir, source, tmp_path / "agent" / "specs")
        async with running(provider_agent(state, state_dir, tmp_path / "agent", source, job_image)) as agent_task:
            web = f"{state.oracle_url}/web"
            await until_rental(
                f"{web}/api/rentals/{rented}", lambda r: len(r["reports"]) >= 2, "2 applied reports", agent_task
            )
            await asyncio.to_thread(_check_offers_page, driver, web)
            await asyncio.to_thread(_check_rental_page, driver, web, rented)
            await asyncio.to_thread(_check_provider_page, driver, web, state.accounts["provider"])
            await asyncio.to_thread(_open_rental_page, driver, web, rented)
            renter = wallet(w3, state_dir, "renter")
            await renter.transact(contract(w3, "RentalEscrow", state.deployment.escrow).functions.terminate(rented))
            await asyncio.to_thread(_check_termination_arrives, driver)


async def _market(w3, state, state_dir: Path, source: SimulatedSource, spec_dir: Path) -> int:
    """Lists OFFERS (`list_offers`) and rents offer 1; returns the rental id."""
    record = state.deployment
    token = contract(w3, "TestStablecoin", record.payment_token)
    escrow = contract(w3, "RentalEscrow", record.escrow)
    renter = wallet(w3, state_dir, "renter")
    await asyncio.gather(
        list_offers(w3, state, state_dir, source), renter.transact(token.functions.approve(record.escrow, MAX_UINT))
    )
    spec = JobSpec(command=("sleep", "600"))
    JobSpecStore(spec_dir).put(spec)
    await renter.transact(escrow.functions.openRental(1, RENTAL_SECONDS, OFFERS[0][5], spec.spec_hash()))
    return rental_id(1, 1)


def _check_offers_page(driver, web: str) -> None:
    driver.get(web + "/")
    # Rentable offers only, cheapest first: the rented one is left out.
    wait(driver, lambda d: len(rows(d, "offers")) == 3, "the three rentable offers")
    offers = rows(driver, "offers")
    assert [(r[0], r[2], r[4], r[5]) for r in offers] == [
        ("#4", "L4", "ap-south", "0.72 tUSD/h"),
        ("#2", "H100-80GB", "eu-central", "2.52 tUSD/h"),
        ("#3", "A100-80GB", "us-east", "7.20 tUSD/h"),
    ]
    assert all((r[8], r[11], r[12]) == ("no", "0 (—)", "available") for r in offers)  # egress, declines, status
    assert all((r[15], r[16]) == ("100.0%", "not set") for r in offers)  # utilisation floor, agent
    wait(driver, lambda d: len(rows(d, "rentals")) == 1, "the recent rental")
    assert rows(driver, "rentals")[0][1:3] == ["#1", "2 × H100-80GB"]
    screenshot(driver, "web-offers.png")

    driver.find_element(By.NAME, "gpu_model").send_keys("h100")
    driver.find_element(By.NAME, "include_unavailable").click()
    driver.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
    wait(driver, lambda d: [r[0] for r in rows(d, "offers")] == ["#2", "#1"], "the H100 offers, rented included")
    assert rows(driver, "offers")[1][12] == "rented"
    assert "gpu_model=h100" in driver.current_url and "include_unavailable=true" in driver.current_url

    driver.get(web + "/?sort=-price&min_gpus=2")
    wait(driver, lambda d: [r[0] for r in rows(d, "offers")] == ["#3"], "the offers of 2+ GPUs, dearest first")
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
    assert len(rows(driver, "reports")) >= 2
    points = int(chart.get_attribute("data-points"))
    # Live: more reports arrive over the event stream without a reload (enough for a screenshot worth a look).
    enough = max(points + 1, SCREENSHOT_REPORTS)
    wait(driver, lambda d: int(chart.get_attribute("data-points")) >= enough, f"{enough} reports, arriving live")
    screenshot(driver, "web-rental.png")


def _check_provider_page(driver, web: str, address: str) -> None:
    driver.get(f"{web}/provider?address={address}")
    wait(driver, lambda d: len(rows(d, "offers")) == 2, "the provider's two offers")
    cards = driver.find_element(By.ID, "cards").text
    assert "1,000.00 tUSD" in cards  # staked
    assert [r[8] for r in rows(driver, "offers")] == ["rented", "available"]
    oldest_first = [r[2] for r in reversed(rows(driver, "history"))]
    assert oldest_first[:6] == ["Staked", "AgentSet", "OfferCreated", "OfferCreated", "RentalOpened", "RentalStarted"]
    screenshot(driver, "web-provider.png")


def _check_termination_arrives(driver) -> None:
    """The open rental page turns to the terminated rental, with the refund, without a reload."""
    wait(driver, lambda d: d.find_element(By.ID, "status").text == "terminated", "the termination")
    (refunded,) = [c for c in driver.find_elements(By.CSS_SELECTOR, "#cards .card") if "REFUNDED" in c.text.upper()]
    assert "0.00 tUSD" not in refunded.text
