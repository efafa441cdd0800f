"""Renting from the browser: the marketplace page in a real headless Chromium with the test EIP-1193 wallet
(`tests.e2e.browser`) backed by the devnet's anvil. As the renter, the page rents an offer (allowance, `openRental`
with the price guard, the job spec signed and uploaded to the provider's agent, which runs in this process and
starts the job), shows it under My account, terminates it and withdraws the refund; a rent whose price rose after
it was shown is refused with the escrow's error named. As the provider, it reprices, pauses and resumes an offer.
Screenshots go to out/test-artifacts/web-wallet-*.png; the page's load time to its first offer row is printed.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
from eth_account import Account
from selenium.webdriver.common.by import By

from offchain.agent.containers import ContainerSettings
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
from offchain.telemetry.simulated import SimulatedSource
from tests.e2e.browser import ARTIFACTS, WAIT_SECONDS, inject_wallet, screenshot, wait, wallet_calls
from tests.e2e.test_web import OFFERS, TABLE_TEXT

ANVIL_PORT = 9300
ORACLE_PORT = 9301
AGENT_API_PORT = 9302
MAX_UINT = 2**256 - 1
#: Records when the first offer row appears, in milliseconds since the navigation started.
FIRST_ROW_PROBE = """
new MutationObserver((_, observer) => {
  if (document.querySelector("#offers tbody tr")) {
    window.__firstOfferRow = performance.now();
    observer.disconnect();
  }
}).observe(document, { childList: true, subtree: true });
"""


def test_a_renter_rents_terminates_and_withdraws_and_a_provider_reprices_and_pauses_in_the_browser(
    tmp_path, monkeypatch, browser, job_image
):
    monkeypatch.setenv(deployments.DIR_ENV, str(tmp_path / "deployments"))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "web-failure.png").unlink(missing_ok=True)
    asyncio.run(_scenario(tmp_path, browser, job_image))


async def _scenario(tmp_path: Path, driver, job_image: str) -> None:
    state_dir = tmp_path / "devnet"
    state = await devnet.up(
        state_dir,
        port=ANVIL_PORT,
        oracle_port=ORACLE_PORT,
        epoch_seconds=1.0,
        checkpoint_interval_seconds=2,
        say=lambda _: None,
    )
    w3 = connect(state.rpc_url)
    agent_task = None
    try:
        source = SimulatedSource(gpu_count=2, seed=11)
        await _market(w3, state, state_dir, source)
        agent = ProviderAgent(
            ProviderAgentSettings(
                chain=state.deployment.chain_settings(state.rpc_url),
                key=_key(state_dir, "agent"),
                provider=state.accounts["provider"],
                oracles=[state.oracle_url],
                allow_simulated=True,
                state_dir=tmp_path / "agent",
                report_interval_seconds=1.0,
                chain_poll_seconds=0.5,
                start_block=state.deployment.start_block,
                retry_initial_seconds=0.2,
                retry_max_seconds=1.0,
                container=ContainerSettings(default_image=job_image),
                keep_jobs_on_exit=False,
                api_port=AGENT_API_PORT,
            ),
            source,
        )
        agent_task = asyncio.create_task(agent.run(), name="agent")
        web = f"{state.oracle_url}/web"
        record = state.deployment
        token = contract(w3, "TestStablecoin", record.payment_token)
        registry = contract(w3, "ProviderRegistry", record.registry)
        renter, provider = state.accounts["renter"], state.accounts["provider"]

        first_row_ms = await asyncio.to_thread(_without_a_wallet, driver, web)
        inject_wallet(driver, state.rpc_url, renter)
        rental = await asyncio.to_thread(_rent, driver, web, 1)
        await _until_status(f"{web}/api/rentals/{rental}", "running", agent_task)
        held_before = await token.functions.balanceOf(renter).call()
        await asyncio.to_thread(_terminate_and_withdraw, driver, web, rental)
        held_after = await token.functions.balanceOf(renter).call()
        assert held_after > held_before, "the withdrawal brought the unused deposit back to the wallet"

        # The price guard: the provider raises the price after the renter saw it; the escrow refuses, named.
        await asyncio.to_thread(_choose_offer, driver, web, 2)
        provider_wallet = Wallet(w3, Account.from_key(_key(state_dir, "provider")))
        await provider_wallet.transact(registry.functions.updateOfferPrice(2, OFFERS[1][5] + 100))
        await asyncio.to_thread(_rent_is_refused_over_the_price_guard, driver)

        inject_wallet(driver, state.rpc_url, provider)  # the wallet of the pages loaded from now on
        await asyncio.to_thread(_provider_actions, driver, web, provider)
        offer = await registry.functions.getOffer(2).call()
        assert offer[6] == 1_000  # pricePerSecond: 3.60 tUSD/h
        print(f"\npage load to the first offer row (cold, headless): {first_row_ms:.0f} ms")
    finally:
        if agent_task is not None:
            agent_task.cancel()
            await asyncio.gather(agent_task, return_exceptions=True)
        await w3.provider.disconnect()
        devnet.down(state_dir, say=lambda _: None)


def _key(state_dir: Path, role: str) -> str:
    return devnet.key_path(state_dir, role).read_text().strip()


async def _market(w3, state, state_dir: Path, source: SimulatedSource) -> None:
    """Stakes both providers and lists OFFERS as offers 1 to 4, the first over the GPUs of `source`; the provider
    sets its agent key and publishes the agent's URL. Nothing is rented."""
    record = state.deployment
    token = contract(w3, "TestStablecoin", record.payment_token)
    registry = contract(w3, "ProviderRegistry", record.registry)
    wallets = {role: Wallet(w3, Account.from_key(_key(state_dir, role))) for role in ("provider", "provider2")}
    uuids = {
        role: [f"GPU-wallet-test-{role}-{i}" for i in range(sum(c for r, c, *_ in OFFERS if r == role))]
        for role in ("provider", "provider2")
    }
    uuids["provider"][:2] = [gpu.uuid for gpu in source.gpus()]

    async def provider(role: str) -> None:
        wallet = wallets[role]
        await wallet.transact(token.functions.approve(record.registry, MAX_UINT))
        await wallet.transact(registry.functions.stake(1_000 * USDC))
        if role == "provider":
            await wallet.transact(registry.functions.setAgent(state.accounts["agent"]))
            await wallet.transact(registry.functions.setAgentUrl(f"http://127.0.0.1:{AGENT_API_PORT}"))
        await wallet.transact(registry.functions.registerGpus([gpu_uuid_hash(u) for u in uuids[role]]))

    await asyncio.gather(provider("provider"), provider("provider2"))
    for role, count, model, vram, region, price in OFFERS:  # one at a time, so that the ids are 1 to 4
        hashes = [gpu_uuid_hash(uuids[role].pop(0)) for _ in range(count)]
        terms = (pack_text(model, 32), vram, price, 60, 86_400, pack_text(region, 16), 10_000, False, hashes)
        await wallets[role].transact(registry.functions.createOffer(terms))


async def _until_status(url: str, status: str, agent_task: asyncio.Task) -> None:
    deadline = time.monotonic() + 3 * WAIT_SECONDS
    async with aiohttp.ClientSession() as session:
        while True:
            if agent_task.done():
                agent_task.result()
                raise AssertionError("the agent stopped")
            async with session.get(url) as response:
                if response.status == 200 and (await response.json())["status"] == status:
                    return
            assert time.monotonic() < deadline, f"the rental is not {status} within {3 * WAIT_SECONDS} s"
            await asyncio.sleep(0.5)


def _rows(driver, table: str) -> list[list[str]]:
    return driver.execute_script(TABLE_TEXT, table)


def _text(driver, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def _tx_states(driver) -> list[tuple[str, str]]:
    """The transaction list, the newest first: (state, text)."""
    return driver.execute_script(
        'return Array.from(document.querySelectorAll("#tx-list li"), (li) => [li.dataset.state, li.innerText]);'
    )


def _until_tx(driver, label: str, state: str = "confirmed") -> str:
    """Waits until the newest transaction entry starting with `label` is in `state`; returns its text."""

    def settled(d):
        entries = [(s, text) for s, text in _tx_states(d) if text.startswith(label)]
        return entries and entries[0][0] in ("confirmed", "failed") and entries[0]

    found_state, text = wait(driver, settled, f"{label} to settle")
    assert found_state == state, text
    return text


def _without_a_wallet(driver, web: str) -> float:
    """The offers page, cold, with no wallet in the browser: the bar says so. Returns the load time to the first
    offer row in milliseconds."""
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": FIRST_ROW_PROBE})
    driver.get(web + "/")
    wait(driver, lambda d: len(_rows(d, "offers")) == 4, "the four offers")
    first_row_ms = driver.execute_script("return window.__firstOfferRow;")
    assert "No browser wallet found" in _text(driver, "wallet")
    return float(first_row_ms)


def _choose_offer(driver, web: str, offer_id: int) -> None:
    driver.get(web + "/")
    wait(driver, lambda d: d.find_elements(By.ID, "account"), "the wallet bar to show the account")
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, f"button.rent[data-offer='{offer_id}']"), "Rent")
    driver.find_element(By.CSS_SELECTOR, f"button.rent[data-offer='{offer_id}']").click()
    wait(driver, lambda d: d.find_element(By.ID, "rent").is_displayed(), "the rent form")
    assert f"#{offer_id}:" in _text(driver, "rent-offer")


def _rent(driver, web: str, offer_id: int) -> str:
    """Rents an offer for an hour through the page; returns the rental id the page links to."""
    _choose_offer(driver, web, offer_id)
    hours = driver.find_element(By.ID, "rent-hours")
    hours.clear()
    hours.send_keys("1")
    driver.find_element(By.ID, "rent-command").send_keys("sh -c 'echo hello from the browser; sleep 600'")
    assert _text(driver, "rent-deposit") == "5.04 tUSD"  # an hour at 5.04 tUSD/h
    screenshot(driver, "web-wallet-rent-form.png")
    driver.find_element(By.ID, "rent-submit").click()
    wait(
        driver,
        lambda d: d.find_element(By.ID, "rent-status").get_attribute("data-state") in ("confirmed", "failed"),
        "the rental to open and its spec to be uploaded",
        seconds=3 * WAIT_SECONDS,
    )
    assert driver.find_element(By.ID, "rent-status").get_attribute("data-state") == "confirmed", _text(
        driver, "rent-status"
    )
    calls = wallet_calls(driver)
    assert calls.count("eth_sendTransaction") == 2  # approve, openRental
    assert "eth_signTypedData_v4" in calls  # the spec upload
    assert [state for state, _ in _tx_states(driver)] == ["confirmed"] * 3
    screenshot(driver, "web-wallet-rented.png")
    return driver.find_element(By.ID, "rented").text.removeprefix("rental ")


def _terminate_and_withdraw(driver, web: str, rental: str) -> None:
    driver.get(web + "/account")
    wait(
        driver,
        lambda d: any(r[0] == rental and r[4] == "running" for r in _rows(d, "my-rentals")),
        "the running rental under My rentals",
    )
    assert _rows(driver, "my-rentals")[0][1] == "renter"
    screenshot(driver, "web-wallet-account.png")
    driver.find_element(By.CSS_SELECTOR, f"button.terminate[data-rental='{rental}']").click()
    _until_tx(driver, f"Terminate rental {rental}")
    wait(driver, lambda d: d.find_elements(By.ID, "withdraw"), "the refund to be withdrawable")
    assert "0.00 tUSD" not in _text(driver, "escrow-balance")
    driver.find_element(By.ID, "withdraw").click()
    _until_tx(driver, "Withdraw")
    wait(driver, lambda d: "0.00 tUSD" in _text(d, "escrow-balance"), "the withdrawable balance to be spent")
    assert [r[4] for r in _rows(driver, "my-rentals") if r[0] == rental] == ["terminated"]
    screenshot(driver, "web-wallet-withdrawn.png")


def _rent_is_refused_over_the_price_guard(driver) -> None:
    driver.find_element(By.ID, "rent-command").send_keys("true")
    driver.find_element(By.ID, "rent-submit").click()
    _until_tx(driver, "Rent offer #2", "failed")
    status = wait(
        driver,
        lambda d: (
            d.find_element(By.ID, "rent-status").get_attribute("data-state") == "failed" and _text(d, "rent-status")
        ),
        "the refusal",
    )
    assert status.startswith("Escrow_PriceAboveMax(offerId=2, pricePerSecond=800, maxPricePerSecond=700)"), status


def _provider_actions(driver, web: str, provider: str) -> None:
    driver.get(f"{web}/provider?address={provider}")
    reprice = "button.act[data-action='reprice'][data-offer='2']"
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, reprice), "the provider's buttons")
    driver.find_element(By.CSS_SELECTOR, reprice).click()
    price = driver.find_element(By.ID, "reprice-price")
    price.clear()
    price.send_keys("3.6")
    driver.find_element(By.ID, "reprice-submit").click()
    _until_tx(driver, "Reprice offer #2 to 3.6 tUSD/h")
    wait(driver, lambda d: [r[5] for r in _rows(d, "offers") if r[0] == "#2"] == ["3.60 tUSD"], "the new price")
    driver.find_element(By.CSS_SELECTOR, "button.act[data-action='pause'][data-offer='2']").click()
    _until_tx(driver, "Pause offer #2")
    resume = "button.act[data-action='resume'][data-offer='2']"
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, resume), "the paused offer's Resume button")
    assert [r[8] for r in _rows(driver, "offers") if r[0] == "#2"] == ["paused"]
    screenshot(driver, "web-wallet-provider.png")
    driver.find_element(By.CSS_SELECTOR, resume).click()
    _until_tx(driver, "Resume offer #2")
    wait(driver, lambda d: [r[8] for r in _rows(d, "offers") if r[0] == "#2"] == ["available"], "the offer resumed")
