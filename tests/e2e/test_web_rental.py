"""The rental page watched by its renter, in headless Chromium against a devnet as `gpuex devnet up` brings it up:
the market of `webmarket.py` with the agent's URL published on chain; the renter rents offer 1 (two simulated GPUs)
with a job that prints a line a second, and the agent runs in this process. The page, with a test wallet holding
the renter's account, shows the usage and per-GPU telemetry charts filling, the job's state by the chain and, once
the renter asks, the job's status and its log lines from the agent, each request signed by the wallet; the panel
is hidden while the wallet holds another account. When the renter terminates, the log ends and the status says
how the job ended. Markup the job prints shows as text; an unknown rental's page has no charts.
Screenshot: out/test-artifacts/web-rental-live.png.

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
from tests.e2e.browser import inject_wallet, screenshot, wait, wallet_calls
from tests.e2e.webmarket import (
    MAX_UINT,
    OFFERS,
    list_offers,
    market_devnet,
    provider_agent,
    running,
    until_rental,
    wallet,
)

ANVIL_PORT = 9380
ORACLE_PORT = 9381
AGENT_API_PORT = 9382
RENTAL_SECONDS = 3_600
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
    asyncio.run(_scenario(tmp_path, browser, job_image))


async def _scenario(tmp_path: Path, driver, job_image: str) -> None:
    async with market_devnet(tmp_path, ANVIL_PORT, ORACLE_PORT) as (state, state_dir, w3):
        source = SimulatedSource(gpu_count=2, seed=11)
        await list_offers(w3, state, state_dir, source, agent_url=f"http://127.0.0.1:{AGENT_API_PORT}")
        escrow = contract(w3, "RentalEscrow", state.deployment.escrow)
        renter = wallet(w3, state_dir, "renter")
        JobSpecStore(tmp_path / "agent" / "specs").put(JOB)
        await renter.transact(
            contract(w3, "TestStablecoin", state.deployment.payment_token).functions.approve(
                state.deployment.escrow, MAX_UINT
            )
        )
        await renter.transact(escrow.functions.openRental(1, RENTAL_SECONDS, OFFERS[0][5], JOB.spec_hash()))
        rented = rental_id(1, 1)
        agent = provider_agent(state, state_dir, tmp_path / "agent", source, job_image, AGENT_API_PORT)
        async with running(agent) as agent_task:
            web = f"{state.oracle_url}/web"
            await until_rental(
                f"{web}/api/rentals/{rented}", lambda r: len(r["reports"]) >= 2, "2 applied reports", agent_task
            )
            inject_wallet(driver, state.rpc_url, state.accounts["renter"])
            await asyncio.to_thread(_watch, driver, web, rented, state.accounts["provider"], state.accounts["renter"])
            await renter.transact(escrow.functions.terminate(rented))
            await asyncio.to_thread(_check_the_end, driver)
            await asyncio.to_thread(_check_an_unknown_rental, driver, web)


def _text(driver, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def _watch(driver, web: str, rented: int, provider: str, renter: str) -> None:
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
    assert driver.execute_script("return gpuexLib.connectedAccount();") == provider
    driver.execute_script("window.ethereum.__switchAccount(arguments[0]);", renter)
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
