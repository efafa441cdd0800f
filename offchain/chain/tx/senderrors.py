"""What a node's errors mean for a transaction: the endpoint is down or busy (try again later), or the node
answered eth_sendRawTransaction with a refusal, worded its own way by each client."""

from __future__ import annotations

from enum import Enum, auto

from web3.exceptions import (
    ProviderConnectionError,
    RequestTimedOut,
    TooManyRequests,
    TransactionIndexingInProgress,
    Web3RPCError,
)

from offchain.chain.rpc import TRANSPORT_ERRORS

#: Errors that mean the RPC endpoint is unreachable or overloaded, not that a transaction is wrong: the tick is
#: abandoned and retried with backoff. A connection made by `offchain.chain.rpc.connect` raises `ChainUnreachable`
#: (an `OSError`) for a node that does not answer; the other transport errors come from connections made otherwise.
TRANSIENT_RPC_ERRORS: tuple[type[BaseException], ...] = (
    *TRANSPORT_ERRORS,
    ProviderConnectionError,
    RequestTimedOut,
    TooManyRequests,
    TransactionIndexingInProgress,
)

# How nodes word their refusals of eth_sendRawTransaction (geth, anvil, erigon, nethermind, besu).
_ALREADY_KNOWN = ("already known", "already imported", "known transaction", "alreadyknown")
_NONCE_TOO_LOW = ("nonce too low", "nonce is too low", "oldnonce", "nonce has already been used")
_UNDERPRICED = ("underpriced", "less than block base fee", "fee cap less than", "feetoolow", "gas price too low")
_RETRY_LATER = ("insufficient funds", "pool is full", "txpool is full", "rate limit", "too many", "try again")
# Dry-run and gas-estimate errors that condemn the transaction rather than the endpoint.
_DOOMED_CALL = (
    "revert",
    "gas required exceeds",
    "out of gas",
    "intrinsic gas",
    "exceeds block gas limit",
    "invalid opcode",
)


class SendOutcome(Enum):
    """How a node answered eth_sendRawTransaction."""

    ACCEPTED = auto()
    ALREADY_KNOWN = auto()
    NONCE_TOO_LOW = auto()
    UNDERPRICED = auto()
    RETRY_LATER = auto()
    REFUSED = auto()


#: Outcomes after which the transaction is with the node (or was mined already).
SENT = frozenset({SendOutcome.ACCEPTED, SendOutcome.ALREADY_KNOWN, SendOutcome.NONCE_TOO_LOW})


def node_message(exc: Web3RPCError) -> str:
    """The node's own error message (web3 formats the whole error object into `exc.message`)."""
    error = (exc.rpc_response or {}).get("error")
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    return str(exc.message)


def classify_send_error(message: str) -> SendOutcome:
    text = message.lower()
    for phrases, outcome in (
        (_ALREADY_KNOWN, SendOutcome.ALREADY_KNOWN),
        (_NONCE_TOO_LOW, SendOutcome.NONCE_TOO_LOW),
        (_UNDERPRICED, SendOutcome.UNDERPRICED),
        (_RETRY_LATER, SendOutcome.RETRY_LATER),
    ):
        if any(p in text for p in phrases):
            return outcome
    return SendOutcome.REFUSED


def dooms_call(message: str) -> bool:
    """Whether a dry-run or gas-estimate error condemns the transaction rather than the endpoint."""
    text = message.lower()
    return any(phrase in text for phrase in _DOOMED_CALL)
