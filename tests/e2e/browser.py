"""What the browser tests share: Debian's headless Chromium through its chromedriver, a test EIP-1193 wallet
injected into every page before the page's own scripts run, waits that explain a timeout, and screenshots saved to
out/test-artifacts/.

The test wallet stands in for MetaMask: `window.ethereum.request` answers `eth_requestAccounts` and `eth_accounts`
with one account and forwards every other call (`eth_sendTransaction`, `eth_signTypedData_v4`, reads) as JSON-RPC
to the devnet's anvil, which signs for its dev accounts. Every request's method is recorded in
`window.__walletCalls`, so a test can check what the page asked the wallet for.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from offchain.chain.contracts import PROJECT_ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = PROJECT_ROOT / "out" / "test-artifacts"
#: What `wait` saves when it times out; a new browser removes the last test's.
FAILURE_SHOT = "web-failure.png"
WAIT_SECONDS = 20

_WALLET = """
(() => {
  const rpcUrl = %(rpc_url)s;
  let account = %(account)s;
  let nextId = 1;
  const listeners = {};
  window.__walletCalls = [];
  async function forward(method, params) {
    const response = await fetch(rpcUrl, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ jsonrpc: "2.0", id: nextId++, method, params: params || [] }),
    });
    const body = await response.json();
    if (body.error) {
      const error = new Error(body.error.message);
      error.code = body.error.code;
      error.data = body.error.data;
      throw error;
    }
    return body.result;
  }
  window.ethereum = {
    isGpuexTestWallet: true,
    async request({ method, params }) {
      window.__walletCalls.push(method);
      if (method === "eth_requestAccounts" || method === "eth_accounts") return [account];
      if (method === "wallet_switchEthereumChain" || method === "wallet_addEthereumChain") return null;
      return forward(method, params);
    },
    on(event, listener) { (listeners[event] = listeners[event] || []).push(listener); },
    removeListener(event, listener) {
      listeners[event] = (listeners[event] || []).filter((l) => l !== listener);
    },
    __switchAccount(next) {
      account = next;
      for (const listener of listeners.accountsChanged || []) listener([next]);
    },
  };
  window.dispatchEvent(new Event("ethereum#initialized"));
})();
"""


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    """A headless Chromium of its own for one test."""
    (ARTIFACTS / FAILURE_SHOT).unlink(missing_ok=True)
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.fail("Chromium and its driver are not installed: run `make browser` (apt chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium Manager is never asked to find (or download) one.
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def inject_wallet(driver: WebDriver, rpc_url: str, account: str) -> None:
    """Gives every page this driver loads from now on a test EIP-1193 wallet holding `account` (an anvil dev
    account: anvil signs its transactions and typed data)."""
    source = _WALLET % {"rpc_url": json.dumps(rpc_url), "account": json.dumps(account)}
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": source})


def wallet_calls(driver: WebDriver) -> list[str]:
    """The methods the page asked the test wallet for, in order."""
    return list(driver.execute_script("return window.__walletCalls || [];"))


def wait(driver: WebDriver, condition: Callable[[WebDriver], Any], what: str, seconds: float = WAIT_SECONDS) -> Any:
    """Waits for `condition(driver)` to be truthy (a missing or replaced element counts as not yet); on a timeout,
    saves web-failure.png and names the browser's console errors."""
    try:
        # A live page replaces what it re-renders: an element read as it is replaced is read again at the next poll.
        waiting = WebDriverWait(
            driver, seconds, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,)
        )
        return waiting.until(condition)
    except TimeoutException:
        screenshot(driver, FAILURE_SHOT)
        console = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        raise AssertionError(
            f"timed out after {seconds} s waiting for {what} at {driver.current_url} "
            f"(out/test-artifacts/web-failure.png); browser errors: {console}"
        ) from None


def click(driver: WebDriver, css: str, what: str) -> None:
    """Clicks what `css` selects once it is there. A live page may replace the element between finding it and
    clicking it; a replaced one is found again."""

    def clicked(d: WebDriver) -> bool:
        d.find_element(By.CSS_SELECTOR, css).click()
        return True

    wait(driver, clicked, what)


def screenshot(driver: WebDriver, name: str) -> None:
    """A screenshot of the whole page (beyond the window) in out/test-artifacts/."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    (ARTIFACTS / name).write_bytes(base64.b64decode(shot["data"]))
