"""The rental page watched by its renter, in headless Chromium against a devnet as `gpuex devnet up` brings it up:
a provider lists an offer of two simulated GPUs with its agent's URL published on chain, the renter rents it with a
job that prints a line a second, and the agent runs in this process. The page, with a test wallet holding the
renter's account, shows the usage and per-GPU telemetry charts filling, the job's state by the chain and, once the
renter asks, the job's status and its log lines from the agent, each request signed by the wallet; the panel is
hidden while the wallet holds another account. When the renter terminates, the log ends and the status says how
the job ended. Markup the job prints shows as text; an unknown rental's page has no charts.
Screenshot: out/test-artifacts/web-rental-live.png.

Needs `make browser` (apt packages chromium and chromium-driver); the test fails, saying so, without them.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from eth_account import Account
from selenium.webdriver.common.by import By

from offchain.agent.jobspec import JobSpec, JobSpecStore
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
from tests.e2e.browser import ARTIFACTS, inject_wallet, screenshot, wait, wallet_calls
from tests.e2e.test_web import _devnet_up, _key, _start_agent, _until_reports

ANVIL_PORT = 9380
ORACLE_PORT = 9381
AGENT_API_PORT = 9382
MAX_UINT = 2**256 - 1
RENTAL_SECONDS = 3_600
PRICE_PER_SECOND = 1_400
LINES_SEEN = 3
#: Markup the job prints must reach the page as text.
MARKUP = '<img src=x onerror="document.title=1">'
JOB = JobSpec(
    command=("sh", "-c", f"echo '{MARKUP}'; i=0; while [ $i -lt 3600 ]; do echo line $i; i=$((i+1)); sleep 1; done")
)

#: Rows of the uPlot charts on the page by name: how many x values each holds and its series' labels.
CHARTS = """
return Object.fromEntries(Object.entries(gpuexRental.plots).map(
  ([name, plot]) => [name, { points: plot.data[0].length, series: plot.series.slice(1).map((s) => s.label),
                              values: plot.data.slice(1).map((column) => column.filter((v) => v !== null).length) }]));
"""


def test_the_renter_watches_the_live_charts_the_job_status_and_its_logs(tmp_path, monkeypatch, browser, job_image):
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
        source = SimulatedSource(gpu_count=2, seed=11)
        rented = await _rent(w3, state, state_dir, source, tmp_path / "agent" / "specs")
        agent_task = _start_agent(state, state_dir, tmp_path / "agent", source, job_image, AGENT_API_PORT)
        web = f"{state.oracle_url}/web"
        await _until_reports(f"{web}/api/rentals/{rented}", 2, agent_task)
        inject_wallet(driver, state.rpc_url, state.accounts["renter"])
        await asyncio.to_thread(_watch, driver, web, rented, state.accounts["provider"])
        renter = Wallet(w3, Account.from_key(_key(state_dir, "renter")))
        await renter.transact(contract(w3, "RentalEscrow", state.deployment.escrow).functions.terminate(rented))
        await asyncio.to_thread(_check_the_end, driver)
        await asyncio.to_thread(_check_an_unknown_rental, driver, web)
    finally:
        if agent_task is not None:
            agent_task.cancel()
            await asyncio.gather(agent_task, return_exceptions=True)
        await w3.provider.disconnect()
        devnet.down(state_dir, say=lambda _: None)


async def _rent(w3, state, state_dir: Path, source: SimulatedSource, spec_dir: Path) -> int:
    """Stakes the provider, sets its agent key and URL, lists the GPUs of `source` as offer 1 and rents it with
    JOB; returns the rental id."""
    record = state.deployment
    token = contract(w3, "TestStablecoin", record.payment_token)
    registry = contract(w3, "ProviderRegistry", record.registry)
    escrow = contract(w3, "RentalEscrow", record.escrow)
    provider = Wallet(w3, Account.from_key(_key(state_dir, "provider")))
    renter = Wallet(w3, Account.from_key(_key(state_dir, "renter")))
    hashes = [gpu_uuid_hash(gpu.uuid) for gpu in source.gpus()]
    for call in (
        token.functions.approve(record.registry, MAX_UINT),
        registry.functions.stake(1_000 * USDC),
        registry.functions.setAgent(state.accounts["agent"]),
        registry.functions.setAgentUrl(f"http://127.0.0.1:{AGENT_API_PORT}"),
        registry.functions.registerGpus(hashes),
        registry.functions.createOffer(
            (
                pack_text("H100-80GB", 32),
                81_559,
                PRICE_PER_SECOND,
                60,
                86_400,
                pack_text("eu-west", 16),
                10_000,
                False,
                hashes,
            )
        ),
    ):
        await provider.transact(call)
    JobSpecStore(spec_dir).put(JOB)
    await renter.transact(token.functions.approve(record.escrow, MAX_UINT))
    await renter.transact(escrow.functions.openRental(1, RENTAL_SECONDS, PRICE_PER_SECOND, JOB.spec_hash()))
    return rental_id(1, 1)


def _text(driver, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def _watch(driver, web: str, rented: int, provider: str) -> None:
    driver.get(f"{web}/rental?id={rented}")
    wait(driver, lambda d: (driver.execute_script(CHARTS).get("usage") or {}).get("points", 0) >= 2, "the usage chart")
    assert _text(driver, "job-chain").startswith("Running since"), _text(driver, "job-chain")

    wait(
        driver,
        lambda d: all(
            (driver.execute_script(CHARTS).get(f"telemetry:{metric}") or {}).get("points", 0) >= 2
            for metric in ("util_pct", "mem_used_mib", "power_w", "temp_c")
        ),
        "four telemetry charts of two periods or more",
    )
    charts = driver.execute_script(CHARTS)
    for metric in ("util_pct", "mem_used_mib", "power_w", "temp_c"):
        chart = charts[f"telemetry:{metric}"]
        assert len(chart["series"]) == 2 and all(label.startswith("GPU ") for label in chart["series"]), chart
        assert all(count >= 2 for count in chart["values"]), (metric, chart)
    first = charts["telemetry:util_pct"]["points"]
    wait(
        driver,
        lambda d: driver.execute_script(CHARTS)["telemetry:util_pct"]["points"] > first,
        "telemetry arriving live",
    )

    # The renter's panel follows the wallet's account: hidden for anyone else.
    wait(driver, lambda d: d.find_element(By.ID, "renter").is_displayed(), "the renter's panel")
    driver.execute_script("window.ethereum.__switchAccount(arguments[0]);", provider)
    wait(driver, lambda d: not d.find_element(By.ID, "renter").is_displayed(), "the panel hidden from the provider")
    assert driver.execute_script("return gpuexRental.walletAccounts();") == [provider]
    driver.execute_script("window.ethereum.__switchAccount(arguments[0]);", _renter_of(driver, web, rented))
    wait(driver, lambda d: d.find_element(By.ID, "renter").is_displayed(), "the renter's panel again")
    assert "eth_signTypedData_v4" not in wallet_calls(driver), "nothing is signed before the renter asks"

    driver.find_element(By.ID, "renter-show").click()
    status = wait(
        driver,
        lambda d: d.find_element(By.ID, "job-status").is_displayed() and _text(d, "job-status"),
        "the job's status from the agent",
    )
    assert "Phase\nrunning" in status and "Job spec\nreceived" in status and "Exit code\n—" in status, status
    wait(
        driver,
        lambda d: f"line {LINES_SEEN}\n" in _text(d, "logs"),
        f"{LINES_SEEN + 1} log lines of the job",
    )
    logs = _text(driver, "logs").splitlines()
    assert logs[: LINES_SEEN + 2] == [MARKUP] + [f"line {i}" for i in range(LINES_SEEN + 1)], logs
    assert driver.execute_script("return document.querySelectorAll('#logs img').length;") == 0
    seen = len(logs)
    wait(driver, lambda d: len(_text(d, "logs").splitlines()) > seen + 1, "more log lines, followed live")
    assert wallet_calls(driver).count("eth_signTypedData_v4") == 2, "one signature for the status, one for the logs"
    assert not driver.find_element(By.ID, "renter-error").is_displayed(), _text(driver, "renter-error")
    screenshot(driver, "web-rental-live.png")


def _renter_of(driver, web: str, rented: int) -> str:
    return driver.execute_script(
        "return fetch(arguments[0]).then((r) => r.json()).then((r) => r.renter);", f"{web}/api/rentals/{rented}"
    )


def _check_the_end(driver) -> None:
    """Once the renter terminates, the followed log ends with the job and the status shows how it ended."""
    wait(driver, lambda d: _text(d, "logs-note").startswith("(the job ended"), "the end of the job's log")
    status = wait(driver, lambda d: "Phase\ndone" in _text(d, "job-status") and _text(d, "job-status"), "done")
    assert "Exit code\n—" not in status, status
    assert wallet_calls(driver).count("eth_signTypedData_v4") == 3, "the status read again once, at the end"
    wait(driver, lambda d: _text(d, "status") == "terminated", "the termination, by the chain")


def _check_an_unknown_rental(driver, web: str) -> None:
    """A rental the chain does not know: the page says so, has no telemetry to show and offers no renter's panel."""
    driver.get(f"{web}/rental?id=12345")
    wait(driver, lambda d: "no rental 12345" in _text(d, "error"), "the refusal of an unknown rental")
    wait(
        driver,
        lambda d: _text(d, "telemetry-empty") == "No live telemetry from this oracle.",
        "the note that there is no telemetry",
    )
    assert not driver.find_element(By.ID, "renter").is_displayed()
    assert driver.execute_script(CHARTS) == {}
