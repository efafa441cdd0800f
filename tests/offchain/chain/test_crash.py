"""Crash tests: the process running the TxManager is SIGKILLed between send and receipt, restarted, and the
report batch lands exactly once."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from brownie import web3

from offchain.chain.tx.manager import TxManager
from offchain.chain.tx.store import TxRecord, TxState
from tests.offchain.chain.helpers import (
    first_report_calldata,
    manual_mining,
    mine,
    rental_state,
    rpc,
    sent_count,
    started_rental,
)

WORKER = Path(__file__).with_name("txmgr_worker.py")
PROJECT_ROOT = Path(__file__).resolve().parents[3]


class Worker:
    """One run of txmgr_worker.py; always reaped."""

    def __init__(self, mode, sender, rpc_url, db_path, chain_id, key, to, data):
        env = dict(
            os.environ, TXMGR_WORKER_KEY="0x" + sender.key.hex().removeprefix("0x"), PYTHONPATH=str(PROJECT_ROOT)
        )
        self.log_path = Path(db_path).with_name(f"worker-{mode}.log")
        with open(self.log_path, "w") as log:  # a file, not a pipe: a chatty worker never blocks on it
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    str(WORKER),
                    mode,
                    "--rpc-url",
                    rpc_url,
                    "--db",
                    str(db_path),
                    "--chain-id",
                    str(chain_id),
                    "--key",
                    key,
                    "--to",
                    to,
                    "--data",
                    "0x" + data.hex(),
                ],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=env,
                cwd=PROJECT_ROOT,
            )

    def record(self, timeout=60.0) -> TxRecord:
        """The record the worker prints, waiting at most `timeout` seconds."""
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                raise TimeoutError(f"worker printed nothing in {timeout}s")
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"worker exited with {self.process.wait(10)}: {self.log_path.read_text()}")
        return TxRecord.model_validate_json(line)

    def kill(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        return self.wait()

    def wait(self, timeout=60.0):
        try:
            return self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(10)
            self.process.stdout.close()


def run_worker(mode, *args):
    worker = Worker(mode, *args)
    try:
        return worker, worker.record()
    except BaseException:
        worker.kill()
        raise


def report_applied_count(suite, rental_id):
    topic = web3.keccak(text="ReportApplied(uint256,uint256,uint256,uint256,uint256,bytes32)")
    logs = web3.eth.get_logs(
        {
            "address": suite.escrow.address,
            "fromBlock": 0,
            "toBlock": "latest",
            "topics": [topic, "0x" + rental_id.to_bytes(32, "big").hex()],
        }
    )
    return len(logs)


def test_killed_after_send_before_the_receipt_the_report_lands_once(
    suite, offer, renter, provider, sender, chain_id, db_path, rpc_url
):
    rental = started_rental(suite, renter, provider)
    calldata = first_report_calldata(suite, rental)
    args = (sender, rpc_url, db_path, chain_id, f"reports:{rental}-1", suite.escrow.address, calldata)

    with manual_mining():
        worker, sent = run_worker("send-then-hang", *args)
        assert worker.kill() == -signal.SIGKILL
        assert sent.state is TxState.UNCONFIRMED and sent.nonce == 0
        assert sent_count(sender.address, "pending") == 1 and sent_count(sender.address) == 0
        mine()  # it is mined while nobody watches

        worker, resumed = run_worker("resume", *args)
        assert worker.wait() == 0

    assert resumed.state is TxState.CONFIRMED and resumed.hash == sent.hash and resumed.attempts == 1
    assert resumed.data == calldata
    assert sent_count(sender.address) == 1
    assert rental_state(suite, rental).last_seq == 1
    assert report_applied_count(suite, rental) == 1


@pytest.mark.parametrize("mempool_lost", [False, True], ids=["mined-meanwhile", "mempool-lost"])
def test_killed_between_broadcast_and_bookkeeping_the_report_lands_once(
    suite, offer, renter, provider, sender, chain_id, db_path, rpc_url, mempool_lost
):
    rental = started_rental(suite, renter, provider)
    calldata = first_report_calldata(suite, rental)
    args = (sender, rpc_url, db_path, chain_id, f"reports:{rental}-1", suite.escrow.address, calldata)

    with manual_mining():
        worker = Worker("die-on-broadcast", *args)
        assert worker.wait() == -signal.SIGKILL
        stored = TxManager(None, db_path, sender, chain_id)
        try:
            assert stored.record(args[4]).state is TxState.IN_PROGRESS
            [attempt] = stored.attempts(args[4])
        finally:
            stored.close()
        assert sent_count(sender.address, "pending") == 1  # the node has it; the database never heard back
        if mempool_lost:
            rpc("anvil_dropAllTransactions")
            assert sent_count(sender.address, "pending") == 0
            rpc("evm_setAutomine", True)  # the stored raw transaction goes out again and is mined at once
        else:
            mine()
            assert sent_count(sender.address) == 1
        worker, resumed = run_worker("resume", *args)
        assert worker.wait() == 0

    assert resumed.state is TxState.CONFIRMED and resumed.hash == attempt.hash and resumed.attempts == 1
    assert sent_count(sender.address) == 1
    assert rental_state(suite, rental).last_seq == 1
    assert report_applied_count(suite, rental) == 1
