"""Plain helpers for the transaction manager and keeper tests (fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import subprocess
import time
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import NamedTuple

from brownie import chain, web3
from eth_utils import keccak

from offchain.chain.reads import Rental
from offchain.chain.rpc import connect
from offchain.chain.tx.manager import TxManager
from offchain.chain.tx.store import FINAL_STATES
from offchain.protocol.reports import EscrowDomain, Report, sign_batch, submit_args
from scripts.deploy import USDC
from tests.offchain.conftest import ORACLE_KEYS

ANVIL = Path(__file__).resolve().parents[3] / ".venv" / "bin" / "anvil"
_gpu_counter = itertools.count(1)


def rpc(method, *params):
    """A raw JSON-RPC call to Brownie's anvil; raises on an error answer."""
    response = web3.provider.make_request(method, list(params))
    if "error" in response:
        raise RuntimeError(f"{method}: {response['error']}")
    return response.get("result")


def mine(blocks=1):
    for _ in range(blocks):
        rpc("evm_mine")


def latest_block():
    return web3.eth.get_block("latest")


def new_offer(suite, provider, gpus=1):
    """A fresh offer of `gpus` newly registered GPUs by `provider` (who must hold tokens and approvals)."""
    hashes = [keccak(text=f"txmgr test GPU {next(_gpu_counter)}") for _ in range(gpus)]
    suite.registry.stake(200 * USDC * gpus, {"from": provider})
    suite.registry.registerGpus(hashes, {"from": provider})
    terms = (
        b"H100-80GB".ljust(32, b"\0"),
        81_559,
        1_000,
        60,
        86_400,
        b"eu-west".ljust(16, b"\0"),
        10_000,
        False,
        hashes,
    )
    return suite.registry.createOffer(terms, {"from": provider}).return_value


def open_rental(suite, renter, offer_id, duration=600):
    return suite.escrow.openRental(offer_id, duration, 2**64 - 1, b"\x11" * 32, {"from": renter}).return_value


def started_rental(suite, renter, provider, duration=600):
    """A new offer, rented by `renter` and started by `provider`; returns the rental id."""
    rental = open_rental(suite, renter, new_offer(suite, provider), duration)
    suite.escrow.start(rental, {"from": provider})
    return rental


def report_args(suite, reports: list[Report]) -> list:
    """`submitReports` arguments of a batch co-signed by two of the three conftest oracles under the escrow's
    oracle set."""
    version = suite.read(lambda r: r.oracle_set()).version
    domain = EscrowDomain(chain_id=chain.id, escrow=suite.escrow.address, oracle_set_version=version)
    return submit_args(reports, [sign_batch(reports, domain, key) for key in ORACLE_KEYS[:2]], version)


def report_calldata(suite, rental_id, seq, covered_until, delivered):
    """`submitReports` calldata of a one-report batch (utilisation 90 %) co-signed by two of the three conftest
    oracles."""
    report = Report(
        rental_id=rental_id,
        seq=seq,
        covered_until=covered_until,
        delivered_seconds=delivered,
        util_seconds=delivered * 9 // 10,
    )
    return bytes.fromhex(suite.escrow.submitReports.encode_input(*report_args(suite, [report]))[2:])


def free_port(candidates=range(8650, 8660)):
    """A port of the range these tests may use for their own anvil, not listening now."""
    for port in candidates:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise RuntimeError("no free port in 8650-8659")


class OwnAnvil:
    """An extra anvil these tests start, stop and restart themselves; state kept in `state_file` across restarts."""

    def __init__(self, port, state_file):
        self.port = port
        self.state_file = state_file
        self.url = f"http://127.0.0.1:{port}"
        self.process = None

    def start(self, timeout=15.0):
        self.process = subprocess.Popen(
            [str(ANVIL), "--port", str(self.port), "--base-fee", "0", "--silent", "--state", str(self.state_file)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.process.poll() is not None:
                raise RuntimeError(f"anvil on {self.port} exited with {self.process.returncode}")
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"anvil on {self.port} did not start in {timeout}s")

    def stop(self, timeout=15.0):
        """SIGTERM (anvil writes its state file on the way out), SIGKILL if it does not exit in time."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout)


@asynccontextmanager
async def started_manager(rpc_url, db_path, account, chain_id, **options):
    """A started TxManager on its own AsyncWeb3 connection; closed (database and HTTP session) on exit."""
    w3 = connect(rpc_url)
    manager = TxManager(w3, db_path, account, chain_id, **options)
    await manager.start()
    try:
        yield manager
    finally:
        manager.close()
        await w3.provider.disconnect()


@contextmanager
def manual_mining():
    """Automine off inside the block; afterwards a zero base fee, automine and a block, so that Brownie's own
    transactions go through again."""
    rpc("evm_setAutomine", False)
    try:
        yield
    finally:
        rpc("anvil_setNextBlockBaseFeePerGas", hex(0))
        rpc("evm_setAutomine", True)
        mine()


class ForkPoint(NamedTuple):
    """A snapshot of the chain at `block`, where a later `reorg` forks off."""

    snapshot: str
    block: int


def fork_point() -> ForkPoint:
    """The chain as it is now, for a later `reorg` to fork off from."""
    return ForkPoint(rpc("evm_snapshot"), web3.eth.block_number)


def reorg(fork: ForkPoint) -> None:
    """Replaces every block after `fork` with an empty one and mines one more on top, as a chain keeps making
    blocks; the replacements carry later times than the blocks they replace, so each has another hash. Their
    transactions are gone, as an RPC node drops those of a reorged branch that no one sends again.

    This reverts to the snapshot rather than calling `anvil_reorg`: after a long suite on one anvil, a call on the
    head that `anvil_reorg` built could find no state at all, while reverting to a snapshot is what every test's
    isolation does."""
    head = latest_block()
    rpc("evm_revert", fork.snapshot)
    rpc("evm_setNextBlockTimestamp", head.timestamp + 1)
    mine(head.number - fork.block + 1)


def sent_count(address, block="latest"):
    return web3.eth.get_transaction_count(address, block)


def rental_state(suite, rental_id) -> Rental:
    return suite.read(lambda r: r.rental(rental_id))


def first_report_calldata(suite, rental_id, elapsed=30):
    """Lets `elapsed` seconds of a started rental pass and returns the calldata of its seq-1 report."""
    chain.sleep(elapsed)
    chain.mine()
    since = rental_state(suite, rental_id).since
    covered_until = latest_block().timestamp
    return report_calldata(suite, rental_id, 1, covered_until, covered_until - since)


async def settle(manager, *keys, timeout=20.0):
    """Ticks `manager` until every key is final (automine may mine a moment after the send returns); returns
    their records."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        await manager.tick()
        records = [manager.record(key) for key in keys]
        if all(r.state in FINAL_STATES for r in records):
            return records
        if loop.time() > deadline:
            raise TimeoutError(f"not final within {timeout}s: {[(r.key, r.state.value) for r in records]}")
        await asyncio.sleep(0.05)
