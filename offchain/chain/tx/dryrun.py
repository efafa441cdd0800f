"""The check every transaction passes before it is signed, and the explanation of one that reverted on chain.

A dry-run is the `eth_call` of the transaction, then its gas estimate: a transaction that would revert fails here,
with its custom error named, and nothing is signed (as Lido's oracle does before each send).
"""

from __future__ import annotations

from typing import Any

from web3 import AsyncWeb3
from web3.exceptions import ContractLogicError, Web3RPCError
from web3.types import BlockIdentifier, TxParams

from offchain.chain.tx.reverts import RevertDecoder
from offchain.chain.tx.senderrors import dooms_call, node_message


class DryRunFailed(Exception):
    """The transaction cannot succeed: its call reverted (`reverted`; `reason` is the decoded error), or the node
    refused the call or the gas estimate for good (`reason` is the node's message)."""

    def __init__(self, reason: str, reverted: bool):
        super().__init__(reason)
        self.reason = reason
        self.reverted = reverted

    @property
    def summary(self) -> str:
        """`dry-run reverted: <error>` or `dry-run failed: <node's message>`."""
        return f"dry-run {'reverted' if self.reverted else 'failed'}: {self.reason}"


async def dry_run(w3: AsyncWeb3[Any], call: TxParams, decoder: RevertDecoder, block: BlockIdentifier) -> int:
    """Calls `call` (`from`, `to` unless it deploys, `data`, and `gas` when the sender fixed the gas limit) on
    `block`, then estimates its gas unless it has a gas limit. Returns the gas limit given or the estimate; raises
    `DryRunFailed`. Any other error (an unreachable endpoint) passes through: it says nothing of the transaction."""
    try:
        await w3.eth.call(call, block)
        if "gas" in call:
            return int(call["gas"])
        return int(await w3.eth.estimate_gas(call, block))
    except ContractLogicError as exc:
        raise DryRunFailed(decoder.explain(exc), reverted=True) from None
    except Web3RPCError as exc:
        message = node_message(exc)
        if dooms_call(message):
            raise DryRunFailed(message, reverted=False) from None
        raise


async def explain_onchain_revert(
    w3: AsyncWeb3[Any], call: TxParams, receipt: Any, gas_limit: int | None, decoder: RevertDecoder
) -> str:
    """Why the mined transaction `call` reverted: out of gas, or the error of a replay on the state after its
    block. A transaction that passed its dry-run usually reverts because another one in the same block got there
    first, which the post-block state shows."""
    block = int(receipt["blockNumber"])
    if gas_limit is not None and int(receipt["gasUsed"]) >= gas_limit:
        return f"reverted on chain in block {block}: out of gas (gas limit {gas_limit})"
    try:
        await w3.eth.call(call, block)
    except ContractLogicError as exc:
        return f"reverted on chain in block {block}: {decoder.explain(exc)}"
    except Web3RPCError as exc:
        return f"reverted on chain in block {block} (replay failed: {node_message(exc)})"
    return f"reverted on chain in block {block}"
