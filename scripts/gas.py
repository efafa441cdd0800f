"""Gas table of a fixed scenario, one row per call, against the budgets of the contracts issue.

Run with `make gas`. Figures are whole-transaction gas (including the 21,000 intrinsic gas), on a fresh
local anvil. Where the first call of a kind differs from the steady state (storage written for the first
time), both are measured and named.
"""

from __future__ import annotations

from brownie import TestStablecoin, accounts, chain
from eth_account import Account
from eth_utils import keccak

from offchain.reports import EscrowDomain, Report, ReportStatus, sign_batch
from scripts.deploy import USDC, deploy_suite

ORACLE_KEY = keccak(text="gpuex gas oracle")
PRICE = 1_000
BATCH = 50

BUDGETS = {
    "openRental": 90_000,
    "submitReports (1 report, k=1)": 45_000,
    f"submitReports/{BATCH} per report": 15_000,
    "finalize": 75_000,
    "withdraw": 45_000,
}


class GasTable:
    def __init__(self):
        self.rows: list[tuple[str, int]] = []

    def record(self, name, tx, per=1):
        self.rows.append((name, tx.gas_used // per))
        return tx

    def print(self):
        print(f"\n{'call':<40}{'gas':>10}{'budget':>10}  verdict")
        for name, gas in self.rows:
            budget = BUDGETS.get(name)
            verdict = "" if budget is None else ("met, " if gas <= budget else "OVER, ") + f"{budget - gas:+,}"
            print(f"{name:<40}{gas:>10,}{'' if budget is None else f'{budget:,}':>10}  {verdict}")


def main():
    deployer, treasury, provider, provider_b, renter, renter_b, relayer = accounts[:7]
    oracle = Account.from_key(ORACLE_KEY)
    token = TestStablecoin.deploy(deployer, {"from": deployer})
    suite = deploy_suite(deployer, token, token, treasury, [oracle.address], 1)
    registry, escrow = suite.registry, suite.escrow
    for account in (provider, provider_b, renter, renter_b):
        token.mint(account, 1_000_000 * USDC, {"from": deployer})
        token.approve(registry, 2**256 - 1, {"from": account})
        token.approve(escrow, 2**256 - 1, {"from": account})
    domain = EscrowDomain(chain_id=chain.id, escrow=escrow.address, oracle_set_version=1)
    table = GasTable()

    def submit(reports):
        return escrow.submitReports([r.as_tuple() for r in reports], [sign_batch(reports, domain, ORACLE_KEY)],
                                    {"from": relayer})

    def offer_terms(hashes):
        return (b"H100-80GB".ljust(32, b"\0"), 81_559, PRICE, 60, 86_400, b"eu-west".ljust(16, b"\0"), 10_000,
                hashes)

    # Provider onboarding.
    table.record("stake (first)", registry.stake(10_000 * USDC, {"from": provider}))
    table.record("stake", registry.stake(10_000 * USDC, {"from": provider}))
    gpus = [keccak(text=f"GPU-gas-{i}") for i in range(4)]
    table.record("registerGpus (2 GPUs)", registry.registerGpus(gpus[:2], {"from": provider}))
    registry.registerGpus(gpus[2:], {"from": provider})
    offer_a = table.record("createOffer (2 GPUs)", registry.createOffer(offer_terms(gpus[:2]), {"from": provider}))
    offer_a = offer_a.return_value
    offer_b = registry.createOffer(offer_terms(gpus[2:]), {"from": provider}).return_value
    registry.setAgent(provider_b, {"from": provider})

    # First rental of an offer: its storage is written for the first time.
    rid = table.record("openRental (first on offer)",
                       escrow.openRental(offer_a, 3_600, PRICE, b"\x11" * 32, {"from": renter})).return_value
    table.record("start", escrow.start(rid, {"from": provider_b}))
    chain.sleep(60)
    chain.mine()
    since = escrow.getRental(rid)[4]
    table.record("submitReports (1 report, k=1)", submit([Report(
        rental_id=rid, seq=1, period_end=since + 60, delivered_seconds=60, avg_util_bps=9_000)]))
    chain.sleep(60)
    chain.mine()
    table.record("submitReports (completing report)", submit([Report(
        rental_id=rid, seq=2, period_end=since + 120, delivered_seconds=60, avg_util_bps=9_000,
        status=ReportStatus.COMPLETED)]))

    # Steady state: the offer is rented again; parties already hold balances.
    rid = table.record("openRental", escrow.openRental(offer_a, 600, PRICE, b"\x12" * 32,
                                                       {"from": renter})).return_value
    chain.sleep(600)
    chain.mine()
    since = escrow.getRental(rid)[4]
    submit([Report(rental_id=rid, seq=1, period_end=since + 600, delivered_seconds=600, avg_util_bps=10_000)])
    chain.sleep(escrow.reportGrace())
    chain.mine()
    table.record("finalize", escrow.finalize(rid, {"from": relayer}))
    table.record("withdraw", escrow.withdraw({"from": renter}))

    # The same, but half of the rental is never reported: the SLA slash pays the renter from collateral.
    rid = escrow.openRental(offer_a, 600, PRICE, b"\x12" * 32, {"from": renter}).return_value
    chain.sleep(300)
    chain.mine()
    since = escrow.getRental(rid)[4]
    submit([Report(rental_id=rid, seq=1, period_end=since + 300, delivered_seconds=300, avg_util_bps=10_000)])
    chain.sleep(300 + escrow.reportGrace())
    chain.mine()
    table.record("finalize (SLA slash)", escrow.finalize(rid, {"from": relayer}))

    rid = escrow.openRental(offer_b, 600, PRICE, b"\x13" * 32, {"from": renter}).return_value
    chain.sleep(escrow.startTimeout() + 1)
    chain.mine()
    table.record("claimStartTimeout", escrow.claimStartTimeout(rid, {"from": relayer}))

    rid = escrow.openRental(offer_a, 600, PRICE, b"\x14" * 32, {"from": renter}).return_value
    escrow.start(rid, {"from": provider})
    chain.sleep(60)
    chain.mine()
    table.record("terminate (running)", escrow.terminate(rid, {"from": renter}))
    table.record("withdrawCompensation", registry.withdrawCompensation({"from": renter}))

    # A batch of reports for BATCH rentals on BATCH one-GPU offers.
    registry.stake(BATCH * 100 * USDC, {"from": provider_b})
    batch_gpus = [keccak(text=f"GPU-batch-{i}") for i in range(BATCH)]
    registry.registerGpus(batch_gpus, {"from": provider_b})
    rentals = []
    for gpu in batch_gpus:
        offer = registry.createOffer(offer_terms([gpu]), {"from": provider_b}).return_value
        rentals.append(escrow.openRental(offer, 3_600, PRICE, b"\x15" * 32, {"from": renter_b}).return_value)
    chain.sleep(60)
    chain.mine()
    first = [Report(rental_id=r, seq=1, period_end=escrow.getRental(r)[4] + 60, delivered_seconds=55,
                    avg_util_bps=8_000) for r in rentals]
    table.record(f"submitReports/{BATCH} per report (first, starts)", submit(first), per=BATCH)
    chain.sleep(60)
    chain.mine()
    steady = [Report(rental_id=r.rental_id, seq=2, period_end=r.period_end + 60, delivered_seconds=60,
                     avg_util_bps=7_500) for r in first]
    table.record(f"submitReports/{BATCH} per report", submit(steady), per=BATCH)

    table.print()
