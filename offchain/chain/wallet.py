"""One account sending one transaction at a time and waiting for it: what the CLI and the deploy script need.

Every call is dry-run first (`eth_call`), so a call that would revert fails before anything is signed, with the
custom error named (`Registry_UnknownOffer: 7`). Long-running services send through `TxManager` instead, which
persists and bumps; a person at a terminal sees the outcome of each call before the next.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import AsyncWeb3
from web3.exceptions import ContractLogicError, TimeExhausted, Web3RPCError

from offchain.chain.contracts import load_artifact
from offchain.chain.txmanager import RevertDecoder

#: The contracts whose custom errors a revert is named after.
DECODED_CONTRACTS = ("ProviderRegistry", "RentalEscrow", "TestStablecoin")
GAS_HEADROOM = 1.2


class TxFailed(RuntimeError):
    """A transaction would revert, reverted, or was not mined in time; the message names the cause."""


@dataclass(frozen=True)
class Sent:
    """A mined, successful transaction."""

    tx_hash: str
    block_number: int
    gas_used: int
    contract_address: str | None = None  # for deployments
    logs: tuple[Any, ...] = ()  # the receipt's logs, for reading the events the call emitted


class Wallet:
    """Signs locally with `account` and sends through `w3`."""

    def __init__(self, w3: AsyncWeb3, account: LocalAccount, timeout: float = 180.0):
        self.w3 = w3
        self.account = account
        self.timeout = timeout
        self.decoder = RevertDecoder.from_artifacts(*DECODED_CONTRACTS)

    @property
    def address(self) -> str:
        return self.account.address

    async def estimate(self, call: Any) -> int:
        """Gas of a contract call or constructor from this account; raises `TxFailed` if it would revert."""
        try:
            return await call.estimate_gas({"from": self.address})
        except ContractLogicError as exc:
            raise TxFailed(self.decoder.explain(exc)) from None

    async def transact(self, call: Any) -> Sent:
        """Dry-runs, signs and sends a contract call (`contract.functions.f(...)`) and waits for its receipt."""
        try:
            await call.call({"from": self.address})
        except ContractLogicError as exc:
            raise TxFailed(self.decoder.explain(exc)) from None
        return await self._send(call)

    def constructor(self, name: str, *args: Any) -> Any:
        """The constructor call of contract `name` (Brownie build artifact) with `args`, to estimate or deploy."""
        artifact = load_artifact(name)
        return self.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"]).constructor(*args)

    async def deploy(self, name: str, *args: Any) -> Sent:
        """Deploys contract `name` with constructor `args`."""
        return await self._send(self.constructor(name, *args))

    async def _send(self, call: Any) -> Sent:
        gas = int(await self.estimate(call) * GAS_HEADROOM)
        block, tip, nonce, chain_id = await asyncio.gather(
            self.w3.eth.get_block("latest"), self._tip(),
            self.w3.eth.get_transaction_count(self.address, "pending"), self.w3.eth.chain_id)
        base_fee = int(block.get("baseFeePerGas", 0))
        tx = await call.build_transaction({
            "from": self.address, "nonce": nonce, "gas": gas, "chainId": chain_id,
            "maxPriorityFeePerGas": tip, "maxFeePerGas": 2 * base_fee + tip,
        })
        signed = self.account.sign_transaction(tx)
        try:
            tx_hash = await self.w3.eth.send_raw_transaction(signed.raw_transaction)
        except Web3RPCError as exc:
            raise TxFailed(f"the node refused the transaction: {exc.message or exc}") from None
        try:
            receipt = await self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=self.timeout,
                                                                     poll_latency=0.2)
        except TimeExhausted:
            raise TxFailed(f"transaction 0x{tx_hash.hex()} not mined within {self.timeout:.0f} s") from None
        if receipt["status"] != 1:
            raise TxFailed(f"transaction 0x{tx_hash.hex()} reverted: {await self._revert_reason(tx, receipt)}")
        return Sent(tx_hash="0x" + tx_hash.hex(), block_number=receipt["blockNumber"], gas_used=receipt["gasUsed"],
                    contract_address=receipt.get("contractAddress"), logs=tuple(receipt["logs"]))

    async def _tip(self) -> int:
        try:
            return int(await self.w3.eth.max_priority_fee)
        except Web3RPCError:  # nodes without eth_maxPriorityFeePerGas
            return 10**9

    async def _revert_reason(self, tx: dict[str, Any], receipt: Any) -> str:
        """Replays a mined, reverted transaction to name its error (the state may have moved since the dry-run)."""
        call = {k: tx[k] for k in ("from", "to", "data", "value") if k in tx}
        try:
            await self.w3.eth.call(call, receipt["blockNumber"] - 1)
        except ContractLogicError as exc:
            return self.decoder.explain(exc)
        return "out of gas or reverted without data"
