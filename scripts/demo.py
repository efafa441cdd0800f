"""One rental end to end on a local anvil, with a ledger that must balance.

A provider stakes, registers two GPUs and lists them; a renter rents them for ten minutes; the provider's
agent starts the job; 2-of-3 oracles co-sign usage reports (one period with a short outage, then the
completion); everyone withdraws. The script exits non-zero unless every token is accounted for.
"""

from __future__ import annotations

from brownie import TestStablecoin, accounts, chain
from eth_account import Account
from eth_utils import keccak

from offchain.reports import EscrowDomain, Report, ReportStatus, sign_batch
from scripts.deploy import USDC, deploy_suite

ORACLE_KEYS = [keccak(text=f"gpuex demo oracle {i}") for i in range(3)]
PRICE = 2_000  # tUSD units per second for the whole offer: 7.20 tUSD per hour


def fmt(units: int) -> str:
    return f"{units / USDC:,.6f}"


def main():
    deployer, treasury, provider, agent, renter, keeper = accounts[:6]
    oracles = [Account.from_key(k) for k in ORACLE_KEYS]
    token = TestStablecoin.deploy(deployer, {"from": deployer, "silent": True})
    suite = deploy_suite(deployer, token, token, treasury, [o.address for o in oracles], 2)
    registry, escrow = suite.registry, suite.escrow
    for account in (provider, renter):
        token.mint(account, 10_000 * USDC, {"from": deployer})
    parties = {"provider": provider, "renter": renter, "treasury": treasury}
    before = {name: token.balanceOf(a) for name, a in parties.items()}

    print("\n== provider lists two GPUs")
    gpus = [keccak(text=f"GPU-demo-{i}") for i in range(2)]
    token.approve(registry, 2**256 - 1, {"from": provider})
    registry.stake(500 * USDC, {"from": provider})
    registry.setAgent(agent, {"from": provider})
    registry.registerGpus(gpus, {"from": provider})
    terms = (b"H100-80GB".ljust(32, b"\0"), 81_559, PRICE, 60, 86_400, b"eu-west".ljust(16, b"\0"), 10_000, gpus)
    offer = registry.createOffer(terms, {"from": provider}).return_value

    print("\n== renter rents them for 10 minutes")
    token.approve(escrow, 2**256 - 1, {"from": renter})
    rental = escrow.openRental(offer, 600, PRICE, keccak(text="python train.py"), {"from": renter}).return_value
    escrow.start(rental, {"from": agent})
    since = escrow.getRental(rental)[4]

    domain = EscrowDomain(chain_id=chain.id, escrow=escrow.address, oracle_set_version=escrow.oracleSet()[0])

    def settle(report):
        sigs = [sign_batch([report], domain, key) for key in ORACLE_KEYS[:2]]
        escrow.submitReports([report.as_tuple()], sigs, {"from": keeper})

    print("\n== oracles report: 300 s with a 20 s outage, then completion after 420 s")
    chain.sleep(300)
    chain.mine()
    settle(Report(rental_id=rental, seq=1, period_end=since + 300, delivered_seconds=280, avg_util_bps=9_300,
                  telemetry_root=keccak(text="samples 1")))
    chain.sleep(120)
    chain.mine()
    settle(Report(rental_id=rental, seq=2, period_end=since + 420, delivered_seconds=120, avg_util_bps=9_800,
                  status=ReportStatus.COMPLETED, telemetry_root=keccak(text="samples 2")))

    print("\n== everyone withdraws")
    for account in (provider, renter, treasury):
        if escrow.balanceOf(account) > 0:
            escrow.withdraw({"from": account})
    registry.requestUnstake(registry.freeStake(provider), {"from": provider})
    chain.sleep(registry.unbondingPeriod())
    chain.mine()
    registry.withdrawUnstaked({"from": provider})

    after = {name: token.balanceOf(a) for name, a in parties.items()}
    held = token.balanceOf(escrow) + token.balanceOf(registry)
    print(f"\n{'party':<10}{'before':>16}{'after':>16}{'change':>16}")
    for name in parties:
        print(f"{name:<10}{fmt(before[name]):>16}{fmt(after[name]):>16}{fmt(after[name] - before[name]):>16}")
    print(f"{'contracts':<10}{'':>16}{fmt(held):>16}{fmt(held):>16}")
    total = sum(after[n] - before[n] for n in parties) + held
    delivered = 400
    expected_provider = PRICE * 280 * 1 + PRICE * 120  # pure time pricing: util does not change the price
    fee = expected_provider * escrow.feeConfig()[0] // 10_000
    checks = {
        "ledger sums to zero": total == 0,
        "provider paid for delivered seconds less the fee": after["provider"] - before["provider"] == expected_provider - fee,
        "treasury got the fee": after["treasury"] - before["treasury"] == fee,
        "renter paid only for delivered seconds": before["renter"] - after["renter"] == PRICE * delivered,
        "contracts hold nothing": held == 0,
    }
    for name, ok in checks.items():
        print(f"[{'ok' if ok else 'FAIL'}] {name}")
    failed = [name for name, ok in checks.items() if not ok]
    if failed:
        raise RuntimeError(f"ledger check failed: {', '.join(failed)}")
