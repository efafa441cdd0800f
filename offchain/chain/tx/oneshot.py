"""One account sending one transaction at a time and waiting for it: what the CLI and the deploy script need.

Every call is dry-run first (`offchain.chain.tx.dryrun`, as `TxManager` does), so a call that would revert fails
before anything is signed, with the custom error named (`Registry_UnknownOffer: 7`). Long-running services send
through `TxManager` instead, which persists and bumps; a person at a terminal sees the outcome of each call before
the next.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from web3 import AsyncWeb3
from web3.contract.async_contract import AsyncContractConstructor
from web3.exceptions import TimeExhausted, Web3RPCError
from web3.types import TxParams

from offchain.chain.contracts import load_artifact
from offchain.chain.tx.dryrun import DryRunFailed, dry_run, explain_onchain_revert
from offchain.chain.tx.fees import DEFAULT_MAX_FEE_CAP, base_fee, initial_fees, suggested_tip
from offchain.chain.tx.reverts import RevertDecoder
from offchain.chain.tx.signers import LocalSigner

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
    """Signs locally with `account` and sends through `w3`, at most `max_fee_cap` wei per gas."""

    def __init__(
        self, w3: AsyncWeb3[Any], account: LocalAccount, timeout: float = 180.0, max_fee_cap: int = DEFAULT_MAX_FEE_CAP
    ):
        self.w3 = w3
        self.timeout = timeout
        self.max_fee_cap = max_fee_cap
        self.decoder = RevertDecoder.from_artifacts()
        self._signer = LocalSigner(account)

    @property
    def address(self) -> ChecksumAddress:
        return self._signer.address

    async def estimate(self, call: Any) -> int:
        """Gas of a contract call or constructor from this account (its dry-run); raises `TxFailed` if it would
        revert."""
        return await self._dry_run(self._message(call))

    async def transact(self, call: Any) -> Sent:
        """Dry-runs, signs and sends a contract call (`contract.functions.f(...)`) and waits for its receipt."""
        return await self._send(call)

    def constructor(self, name: str, *args: Any) -> Any:
        """The constructor call of contract `name` (Brownie build artifact) with `args`, to estimate or deploy."""
        artifact = load_artifact(name)
        return self.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"]).constructor(*args)

    async def deploy(self, name: str, *args: Any) -> Sent:
        """Deploys contract `name` with constructor `args`."""
        return await self._send(self.constructor(name, *args))

    def _message(self, call: Any) -> TxParams:
        """The call's sender, recipient (none for a deployment) and calldata."""
        if isinstance(call, AsyncContractConstructor):
            return {"from": self.address, "data": call.data_in_transaction}
        return {"from": self.address, "to": call.address, "data": call._encode_transaction_data()}

    async def _dry_run(self, message: TxParams) -> int:
        try:
            return await dry_run(self.w3, message, self.decoder, "latest")
        except DryRunFailed as exc:
            raise TxFailed(exc.reason) from None

    async def _send(self, call: Any) -> Sent:
        message = self._message(call)
        gas = int(await self._dry_run(message) * GAS_HEADROOM)
        base, tip, nonce, chain_id = await asyncio.gather(
            base_fee(self.w3),
            suggested_tip(self.w3),
            self.w3.eth.get_transaction_count(self.address, "pending"),
            self.w3.eth.chain_id,
        )
        fees = initial_fees(base, tip, self.max_fee_cap)
        tx = {key: value for key, value in message.items() if key != "from"}
        raw = await self._signer.sign(
            {
                **tx,
                "type": 2,
                "chainId": chain_id,
                "nonce": nonce,
                "value": 0,
                "gas": gas,
                "maxFeePerGas": fees.max_fee,
                "maxPriorityFeePerGas": fees.tip,
            }
        )
        try:
            tx_hash = await self.w3.eth.send_raw_transaction(raw)
        except Web3RPCError as exc:
            raise TxFailed(f"the node refused the transaction: {exc.message or exc}") from None
        try:
            receipt = await self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=self.timeout, poll_latency=0.2)
        except TimeExhausted:
            raise TxFailed(f"transaction 0x{tx_hash.hex()} not mined within {self.timeout:.0f} s") from None
        if receipt["status"] != 1:
            reason = await explain_onchain_revert(self.w3, message, receipt, gas, self.decoder)
            raise TxFailed(f"transaction 0x{tx_hash.hex()} {reason}")
        return Sent(
            tx_hash="0x" + tx_hash.hex(),
            block_number=receipt["blockNumber"],
            gas_used=receipt["gasUsed"],
            contract_address=receipt.get("contractAddress"),
            logs=tuple(receipt["logs"]),
        )
