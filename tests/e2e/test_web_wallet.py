"""Renting from the browser: the marketplace page in a real headless Chromium with the test EIP-1193 wallet
(`tests.e2e.browser`) backed by the devnet's anvil. As the renter, the page rents an offer (allowance, `openRental`
with the price guard, the job spec signed and uploaded to the provider's agent, which runs in this process and
starts the job), shows it under My account, terminates it and withdraws the refund; a rent whose price rose after
it was shown is refused with the escrow's error named. As the provider, it reprices, pauses and resumes an offer.
Screenshots go to out/test-artifacts/web-wallet-*.png; the page's load time to its first offer row is printed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from selenium.webdriver.common.by import By

from offchain.chain import deployments
from offchain.chain.contracts import contract
from offchain.telemetry.simulated import SimulatedSource
from tests.e2e.browser import WAIT_SECONDS, click, inject_wallet, screenshot, wait, wallet_calls
from tests.e2e.webmarket import OFFERS, list_offers, market_devnet, provider_agent, rows, running, until_rental, wallet

ANVIL_PORT = 9300
ORACLE_PORT = 9301
AGENT_API_PORT = 9302
#: Records when the first offer row appears, in milliseconds since the navigation started.
FIRST_ROW_PROBE = """
new MutationObserver((_, observer) => {
  if (document.querySelector("#offers tbody tr")) {
    window.__firstOfferRow = performance.now();
    observer.disconnect();
  }
}).observe(document, { childList: true, subtree: true });
"""

#: Puts the test wallet on chain 1 until the page asks it to switch, and refuses the next transaction once
#: `window.__rejectNext` is set, as its owner would (run after `inject_wallet`).
ON_ANOTHER_CHAIN = """
(() => {
  const wallet = window.ethereum;
  const forward = wallet.request.bind(wallet);
  let chainId = "0x1";
  wallet.request = async ({ method, params }) => {
    if (method === "eth_chainId") { window.__walletCalls.push(method); return chainId; }
    if (method === "wallet_switchEthereumChain") chainId = params[0].chainId;
    if (method === "eth_sendTransaction" && window.__rejectNext) {
      window.__rejectNext = false;
      throw Object.assign(new Error("User rejected the request."), { code: 4001 });
    }
    return forward({ method, params });
  };
})();
"""


def test_a_renter_rents_terminates_and_withdraws_and_a_provider_reprices_and_pauses_in_the_browser(
    tmp_path, monkeypatch, browser, job_image
):
    monkeypatch.setenv(deployments.DIR_ENV, str(tmp_path / "deployments"))
    asyncio.run(_scenario(tmp_path, browser, job_image))


async def _scenario(tmp_path: Path, driver, job_image: str) -> None:
    async with market_devnet(tmp_path, ANVIL_PORT, ORACLE_PORT) as (state, state_dir, w3):
        source = SimulatedSource(gpu_count=2, seed=11)
        await list_offers(w3, state, state_dir, source, agent_url=f"http://127.0.0.1:{AGENT_API_PORT}")
        agent = provider_agent(state, state_dir, tmp_path / "agent", source, job_image, api_port=AGENT_API_PORT)
        async with running(agent) as agent_task:
            web = f"{state.oracle_url}/web"
            record = state.deployment
            token = contract(w3, "TestStablecoin", record.payment_token)
            registry = contract(w3, "ProviderRegistry", record.registry)
            renter, provider = state.accounts["renter"], state.accounts["provider"]

            first_row_ms = await asyncio.to_thread(_without_a_wallet, driver, web)
            inject_wallet(driver, state.rpc_url, renter)
            rental = await asyncio.to_thread(_rent, driver, web, 1)
            await until_rental(f"{web}/api/rentals/{rental}", lambda r: r["status"] == "running", "start", agent_task)
            held_before = await token.functions.balanceOf(renter).call()
            await asyncio.to_thread(_terminate_and_withdraw, driver, web, rental)
            held_after = await token.functions.balanceOf(renter).call()
            assert held_after > held_before, "the withdrawal brought the unused deposit back to the wallet"

            # The price guard: the provider raises the price after the renter saw it; the escrow refuses, named.
            await asyncio.to_thread(_choose_offer, driver, web, 2)
            raise_price = registry.functions.updateOfferPrice(2, OFFERS[1][5] + 100)
            await wallet(w3, state_dir, "provider").transact(raise_price)
            await asyncio.to_thread(_rent_is_refused_over_the_price_guard, driver)

            inject_wallet(driver, state.rpc_url, provider)  # the wallet of the pages loaded from now on
            await asyncio.to_thread(_provider_actions, driver, web, provider)
            offer = await registry.functions.getOffer(2).call()
            assert offer[6] == 1_000  # pricePerSecond: 3.60 tUSD/h

            driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": ON_ANOTHER_CHAIN})
            await asyncio.to_thread(_wrong_chain, driver, web, record.chain_id)
            await asyncio.to_thread(_rejected_in_the_wallet, driver, web, provider)
    print(f"\npage load to the first offer row (cold, headless): {first_row_ms:.0f} ms")


def _text(driver, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def _rent_state(driver) -> str | None:
    return driver.find_element(By.ID, "rent-status").get_attribute("data-state")


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
    wait(driver, lambda d: len(rows(d, "offers")) == 4, "the four offers")
    first_row_ms = driver.execute_script("return window.__firstOfferRow;")
    assert "No browser wallet found" in _text(driver, "wallet")
    return float(first_row_ms)


def _choose_offer(driver, web: str, offer_id: int) -> None:
    driver.get(web + "/")
    wait(driver, lambda d: d.find_elements(By.ID, "account"), "the wallet bar to show the account")
    click(driver, f"button.rent[data-offer='{offer_id}']", f"offer {offer_id}'s Rent button")
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
        lambda d: _rent_state(d) in ("confirmed", "failed"),
        "the rental to open and its spec to be uploaded",
        seconds=3 * WAIT_SECONDS,
    )
    assert _rent_state(driver) == "confirmed", _text(driver, "rent-status")
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
        lambda d: any(r[0] == rental and r[4] == "running" for r in rows(d, "my-rentals")),
        "the running rental under My rentals",
    )
    assert rows(driver, "my-rentals")[0][1] == "renter"
    screenshot(driver, "web-wallet-account.png")
    click(driver, f"button.terminate[data-rental='{rental}']", "Terminate")
    _until_tx(driver, f"Terminate rental {rental}")
    wait(driver, lambda d: d.find_elements(By.ID, "withdraw"), "the refund to be withdrawable")
    assert "0.00 tUSD" not in _text(driver, "escrow-balance")
    click(driver, "#withdraw", "Withdraw")
    _until_tx(driver, "Withdraw")
    wait(driver, lambda d: "0.00 tUSD" in _text(d, "escrow-balance"), "the withdrawable balance to be spent")
    assert [r[4] for r in rows(driver, "my-rentals") if r[0] == rental] == ["terminated"]
    screenshot(driver, "web-wallet-withdrawn.png")


def _rent_is_refused_over_the_price_guard(driver) -> None:
    driver.find_element(By.ID, "rent-command").send_keys("true")
    driver.find_element(By.ID, "rent-submit").click()
    _until_tx(driver, "Rent offer #2", "failed")
    status = wait(
        driver,
        lambda d: _rent_state(d) == "failed" and _text(d, "rent-status"),
        "the refusal",
    )
    assert status.startswith("Escrow_PriceAboveMax(offerId=2, pricePerSecond=800, maxPricePerSecond=700)"), status


def _provider_actions(driver, web: str, provider: str) -> None:
    driver.get(f"{web}/provider?address={provider}")
    reprice = "button.act[data-action='reprice'][data-offer='2']"
    click(driver, reprice, "the provider's Reprice button")
    price = driver.find_element(By.ID, "reprice-price")
    price.clear()
    price.send_keys("3.6")
    driver.find_element(By.ID, "reprice-submit").click()
    _until_tx(driver, "Reprice offer #2 to 3.6 tUSD/h")
    wait(driver, lambda d: [r[5] for r in rows(d, "offers") if r[0] == "#2"] == ["3.60 tUSD/h"], "the new price")
    click(driver, "button.act[data-action='pause'][data-offer='2']", "Pause")
    _until_tx(driver, "Pause offer #2")
    resume = "button.act[data-action='resume'][data-offer='2']"
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, resume), "the paused offer's Resume button")
    assert [r[8] for r in rows(driver, "offers") if r[0] == "#2"] == ["paused"]
    screenshot(driver, "web-wallet-provider.png")
    click(driver, resume, "Resume")
    _until_tx(driver, "Resume offer #2")
    wait(driver, lambda d: [r[8] for r in rows(d, "offers") if r[0] == "#2"] == ["available"], "the offer resumed")


def _wrong_chain(driver, web: str, chain_id: int) -> None:
    """A wallet on another chain: the bar says so, a rent is refused before anything is sent, and Switch asks
    the wallet for the deployment's chain. Then a rent of an offer whose provider publishes no agent URL is
    refused before anything is sent."""
    _choose_offer(driver, web, 4)
    wrong = wait(driver, lambda d: d.find_elements(By.ID, "wrong-chain"), "the wrong-chain warning")[0]
    assert wrong.text == f"wrong network: the wallet is on chain 1, the market on {chain_id}"
    driver.find_element(By.ID, "rent-command").send_keys("true")
    sent_before = wallet_calls(driver).count("eth_sendTransaction")
    driver.find_element(By.ID, "rent-submit").click()
    wait(driver, lambda d: _rent_state(d) == "failed", "the refusal on the wrong chain")
    assert _text(driver, "rent-status") == f"the wallet is on chain 1; switch it to chain {chain_id}"
    assert wallet_calls(driver).count("eth_sendTransaction") == sent_before
    screenshot(driver, "web-wallet-wrong-chain.png")
    click(driver, "#switch-chain", "Switch")
    wait(driver, lambda d: not d.find_elements(By.ID, "wrong-chain"), "the warning to go once switched")
    assert "wallet_switchEthereumChain" in wallet_calls(driver)

    # On the right chain now; offer 4's provider publishes no agent URL, so the spec could not reach its agent:
    # refused before anything is paid.
    driver.find_element(By.ID, "rent-submit").click()
    wait(driver, lambda d: "no agent URL" in _text(d, "rent-status"), "the refusal of a provider without an agent")
    assert _rent_state(driver) == "failed"
    assert wallet_calls(driver).count("eth_sendTransaction") == sent_before


def _rejected_in_the_wallet(driver, web: str, provider: str) -> None:
    """A transaction its owner refuses in the wallet is shown failed, saying so, and changes nothing."""
    driver.get(f"{web}/provider?address={provider}")
    click(driver, "#switch-chain", "Switch in the wrong-chain warning")
    wait(driver, lambda d: not d.find_elements(By.ID, "wrong-chain"), "the switch")
    driver.execute_script("window.__rejectNext = true;")
    click(driver, "button.act[data-action='pause'][data-offer='2']", "Pause")
    assert _until_tx(driver, "Pause offer #2", "failed") == "Pause offer #2: failed: rejected in the wallet"
    assert [r[8] for r in rows(driver, "offers") if r[0] == "#2"] == ["available"]
