"""Transaction manager in the spirit of Chainlink's txmgr (`core/chains/evm/txmgr/`).

Every transaction is written to SQLite before anything is sent, under an idempotency key chosen by the caller
(`reports:<rentalId>-<seq>+...`, `finalize:<rentalId>`); submitting a key again returns the stored record. A
transaction moves

    unstarted -> in_progress -> unconfirmed -> confirmed

or ends `failed` (its `eth_call` dry-run reverted, nothing was sent; or it was mined and reverted) or `fatal`
(the node refused it for good, e.g. a gas limit above the block's; its nonce is released).

- `in_progress`: a nonce is assigned and the signed raw transaction is stored; the broadcast has not been
  acknowledged. At most one transaction is in this state, and it holds the highest nonce, so a crash or a
  refusal never leaves a gap: after a restart the stored raw transaction is broadcast again (same hash).
- `unconfirmed`: the node accepted it. Each tick looks for a receipt of any of its attempts, re-broadcasts it
  when the node has forgotten it (a restarted node loses its mempool), and after `bump_after_blocks` blocks
  without a receipt signs a replacement with the same nonce and fees raised by `bump_percent` (capped at
  `max_fee_cap`). A mined transaction keeps being checked until it is `confirmations` blocks deep: if the
  block at its height changes (a reorg), its receipt is dropped and it is sent again.
- Nonces are owned locally: synced at start with `eth_getTransactionCount(pending)` and with the nonces already
  stored, then handed out one by one. If another sender took a nonce that none of our attempts got mined
  under, the transaction goes back to `unstarted` and gets a fresh nonce (its payload never landed).

The account must be used by this manager only; another sender on the same account only costs re-queues.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import aiohttp
from eth_abi import decode as abi_decode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import is_address, keccak, to_checksum_address
from eth_utils.abi import collapse_if_tuple
from hexbytes import HexBytes
from pydantic import BaseModel, ConfigDict, SecretStr
from web3 import AsyncWeb3
from web3.exceptions import (
    BlockNotFound,
    ContractLogicError,
    ProviderConnectionError,
    RequestTimedOut,
    TooManyRequests,
    TransactionIndexingInProgress,
    TransactionNotFound,
    Web3RPCError,
)

from offchain.chain.contracts import abi
from offchain.sqlite import open_db, transaction

log = logging.getLogger(__name__)

#: Errors that mean the RPC endpoint is unreachable or overloaded, not that a transaction is wrong: the tick is
#: abandoned and `run` retries with exponential backoff.
TRANSIENT_RPC_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientError,
    OSError,  # includes TimeoutError and ConnectionError
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
_DOOMED_CALL = ("revert", "gas required exceeds", "out of gas", "intrinsic gas", "exceeds block gas limit",
                "invalid opcode")


class TxState(str, Enum):
    UNSTARTED = "unstarted"
    IN_PROGRESS = "in_progress"
    UNCONFIRMED = "unconfirmed"
    CONFIRMED = "confirmed"
    FAILED = "failed"
    FATAL = "fatal"


FINAL_STATES = frozenset({TxState.CONFIRMED, TxState.FAILED, TxState.FATAL})


class TxRecord(BaseModel):
    """A stored transaction as callers see it. `hash` is the mined attempt's hash once mined, else the latest
    attempt's; `gas_limit` the one signed (or requested, before signing)."""

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_bytes="hex", val_json_bytes="hex")

    key: str
    state: TxState
    chain_id: int
    from_address: str
    to: str
    data: bytes
    nonce: int | None
    hash: str | None
    attempts: int
    gas_limit: int | None
    block_number: int | None
    block_hash: str | None
    gas_used: int | None
    effective_gas_price: int | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    broadcast_at: datetime | None
    confirmed_at: datetime | None


class TxAttempt(BaseModel):
    """One signed version of a transaction: the first send or a gas bump of the same nonce."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hash: str
    nonce: int
    gas_limit: int
    max_fee_per_gas: int
    max_priority_fee_per_gas: int
    sent_block: int  # chain head when it was signed; bumps count blocks from here
    created_at: datetime


@dataclass(frozen=True)
class Fees:
    """EIP-1559 fee caps of one attempt, in wei."""

    max_fee: int
    tip: int


def initial_fees(base_fee: int, suggested_tip: int, max_fee_cap: int) -> Fees:
    """Fees for a first send: room for the base fee to double, plus the node's suggested tip, capped."""
    max_fee = min(2 * base_fee + suggested_tip, max_fee_cap)
    return Fees(max_fee=max_fee, tip=min(suggested_tip, max_fee))


def bumped_fees(
    previous: Fees, base_fee: int, suggested_tip: int, bump_percent: float, max_fee_cap: int
) -> Fees | None:
    """Fees for a replacement: both caps raised by at least `bump_percent` (nodes refuse smaller replacements)
    and to at least what a first send would pay now. None when the cap leaves no room to raise both."""
    factor = 1 + Fraction(str(bump_percent)) / 100

    def raised(value: int) -> int:
        return max(math.ceil(value * factor), value + 1)

    tip = max(raised(previous.tip), suggested_tip)
    max_fee = min(max(raised(previous.max_fee), 2 * base_fee + tip), max_fee_cap)
    tip = min(tip, max_fee)
    if max_fee <= previous.max_fee or tip <= previous.tip:
        return None
    return Fees(max_fee=max_fee, tip=tip)


class Backoff:
    """Exponential backoff of a polling loop: `interval` while healthy, `interval * 2**failures` (at most
    `max_delay`) after consecutive failures."""

    def __init__(self, interval: float, max_delay: float):
        self.interval = interval
        self.max_delay = max_delay
        self.failures = 0

    @property
    def delay(self) -> float:
        if self.failures == 0:
            return self.interval
        return min(self.interval * 2**self.failures, self.max_delay)

    def failed(self) -> None:
        self.failures += 1

    def succeeded(self) -> None:
        self.failures = 0


async def wait_any(awaitables: Sequence[Any], timeout: float) -> None:
    """Returns when the first of `awaitables` completes or after `timeout` seconds; cancels the rest."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


class RevertDecoder:
    """Names revert data after the custom errors of some ABIs, plus Solidity's `Error(string)` and
    `Panic(uint256)`. The result reads like Brownie's revert strings: `Escrow_NotYetFinalizable: 7, 1700000000`."""

    def __init__(self, abis: Iterable[Sequence[dict[str, Any]]]):
        self._errors: dict[bytes, tuple[str, list[str]]] = {
            keccak(text="Error(string)")[:4]: ("Error", ["string"]),
            keccak(text="Panic(uint256)")[:4]: ("Panic", ["uint256"]),
        }
        for contract_abi in abis:
            for item in contract_abi:
                if item.get("type") == "error":
                    types = [collapse_if_tuple(param) for param in item["inputs"]]
                    self._errors[keccak(text=f"{item['name']}({','.join(types)})")[:4]] = (item["name"], types)

    @classmethod
    def from_artifacts(cls, *contract_names: str) -> RevertDecoder:
        """A decoder for the errors of the named contracts' Brownie build artifacts."""
        return cls(abi(name) for name in contract_names)

    def decode(self, data: bytes) -> str:
        if len(data) < 4:
            return "reverted without data"
        known = self._errors.get(bytes(data[:4]))
        if known is None:
            return f"unknown error 0x{bytes(data[:4]).hex()}"
        name, types = known
        if not types:
            return name
        try:
            args = abi_decode(types, bytes(data[4:]))
        except Exception:  # malformed revert data: the name is still worth reporting
            return name
        if name == "Panic":
            return f"Panic: 0x{args[0]:02x}"
        return f"{name}: {', '.join(_format_arg(a) for a in args)}"

    def explain(self, exc: ContractLogicError) -> str:
        """The decoded error of a reverted call, or the node's message when it sent no revert data."""
        data = exc.data.get("data") if isinstance(exc.data, dict) else exc.data
        if isinstance(data, str) and data.startswith("0x"):
            return self.decode(bytes.fromhex(data[2:]))
        return str(exc.message or exc)


def _format_arg(value: Any) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_format_arg(v) for v in value) + ")"
    return str(value)


class _LocalSigner:
    """Signs with a private key held in this process."""

    def __init__(self, account: LocalAccount):
        self.address = account.address
        self._account = account

    async def sign(self, tx: dict[str, Any]) -> bytes:
        return bytes(self._account.sign_transaction(tx).raw_transaction)


class _NodeSigner:
    """An account unlocked on the node (dev chains only). The node signs with `eth_signTransaction`, so the raw
    transaction can still be stored before it is broadcast."""

    def __init__(self, w3: AsyncWeb3, address: str):
        self.address = address
        self._w3 = w3

    async def sign(self, tx: dict[str, Any]) -> bytes:
        params = {k: (v if isinstance(v, str) else hex(v)) for k, v in tx.items()}
        params["from"] = self.address
        response = await self._w3.provider.make_request("eth_signTransaction", [params])
        if "error" in response:
            raise Web3RPCError(str(response["error"]), rpc_response=response)
        result = response["result"]
        raw = result["raw"] if isinstance(result, dict) else result
        return bytes(HexBytes(raw))


class _Outcome(str, Enum):
    """How a node answered eth_sendRawTransaction."""

    ACCEPTED = "accepted"
    ALREADY_KNOWN = "already_known"
    NONCE_TOO_LOW = "nonce_too_low"
    UNDERPRICED = "underpriced"
    RETRY_LATER = "retry_later"
    REFUSED = "refused"


def _node_message(exc: Web3RPCError) -> str:
    """The node's own error message (web3 formats the whole error object into `exc.message`)."""
    error = (exc.rpc_response or {}).get("error")
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    return str(exc.message)


def _classify_send_error(message: str) -> _Outcome:
    text = message.lower()
    for phrases, outcome in (
        (_ALREADY_KNOWN, _Outcome.ALREADY_KNOWN),
        (_NONCE_TOO_LOW, _Outcome.NONCE_TOO_LOW),
        (_UNDERPRICED, _Outcome.UNDERPRICED),
        (_RETRY_LATER, _Outcome.RETRY_LATER),
    ):
        if any(p in text for p in phrases):
            return outcome
    return _Outcome.REFUSED


_SCHEMA = """
CREATE TABLE IF NOT EXISTS tx (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    chain_id INTEGER NOT NULL,
    from_address TEXT NOT NULL,
    to_address TEXT NOT NULL,
    data BLOB NOT NULL,
    requested_gas_limit INTEGER,
    state TEXT NOT NULL,
    nonce INTEGER,
    error TEXT,
    mined_hash TEXT,
    block_number INTEGER,
    block_hash TEXT,
    receipt_status INTEGER,
    gas_used INTEGER,
    effective_gas_price INTEGER,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    broadcast_at REAL,
    confirmed_at REAL
);
CREATE INDEX IF NOT EXISTS tx_by_sender_state ON tx (chain_id, from_address, state, id);
CREATE TABLE IF NOT EXISTS tx_attempt (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tx_id INTEGER NOT NULL REFERENCES tx (id),
    nonce INTEGER NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    raw BLOB NOT NULL,
    gas_limit INTEGER NOT NULL,
    max_fee INTEGER NOT NULL,
    tip INTEGER NOT NULL,
    sent_block INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tx_attempt_by_tx ON tx_attempt (tx_id, nonce, id);
"""


def _datetime(timestamp: float | None) -> datetime | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, tz=timezone.utc)


class TxManager:
    """Persists, sends, bumps and confirms the transactions of one account on one chain.

    `account_or_address`: an eth-account `LocalAccount`, or a `SecretStr` private key (as settings hold it), to
    sign here; or the address of an account unlocked on the node (dev chains), which signs with
    `eth_signTransaction`.

    `confirmations`: blocks deep a receipt must be before the transaction is final; reorgs are watched for until
    then. `bump_after_blocks`, `bump_percent`, `max_fee_cap` (wei): the gas bump policy. `dry_run_block`: the
    block tag of the dry-run and gas estimate; "pending" lets a transaction that depends on an earlier one of
    ours, still in the mempool, pass (use "latest" for nodes without a pending state). `revert_decoder` names
    reverts; by default it knows the errors of RentalEscrow and ProviderRegistry from their build artifacts.
    `on_final` is called (in the ticking process) with the record of each transaction that becomes confirmed,
    failed or fatal: the place for metrics such as latency (`confirmed_at - created_at`) and gas used.
    """

    def __init__(
        self,
        w3: AsyncWeb3,
        db_path: str | Path,
        account_or_address: LocalAccount | SecretStr | str,
        chain_id: int,
        *,
        confirmations: int = 1,
        bump_after_blocks: int = 3,
        bump_percent: float = 12.5,
        max_fee_cap: int = 500 * 10**9,
        default_tip: int = 10**9,
        gas_limit_multiplier: float = 1.25,
        max_sends_per_tick: int = 50,
        max_backoff: float = 30.0,
        dry_run_block: str = "pending",
        revert_decoder: RevertDecoder | None = None,
        on_final: Callable[[TxRecord], None] | None = None,
    ):
        if confirmations < 1 or bump_after_blocks < 1 or bump_percent < 10 or max_sends_per_tick < 1:
            raise ValueError("confirmations, bump_after_blocks and max_sends_per_tick must be >= 1, bump_percent >= 10")
        self._w3 = w3
        self._chain_id = chain_id
        self._confirmations = confirmations
        self._bump_after_blocks = bump_after_blocks
        self._bump_percent = bump_percent
        self._max_fee_cap = max_fee_cap
        self._default_tip = default_tip
        self._gas_limit_multiplier = gas_limit_multiplier
        self._max_sends_per_tick = max_sends_per_tick
        self._max_backoff = max_backoff
        self._dry_run_block = dry_run_block
        self._on_final = on_final
        self._decoder = revert_decoder or RevertDecoder.from_artifacts("RentalEscrow", "ProviderRegistry")
        self._signer = self._make_signer(w3, account_or_address)
        self._db = open_db(db_path)
        self._db.executescript(_SCHEMA)
        self._next_nonce: int | None = None
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._backoff = Backoff(1.0, max_backoff)

    @staticmethod
    def _make_signer(w3: AsyncWeb3, account_or_address: LocalAccount | SecretStr | str) -> _LocalSigner | _NodeSigner:
        if isinstance(account_or_address, SecretStr):
            return _LocalSigner(Account.from_key(account_or_address.get_secret_value()))
        if isinstance(account_or_address, str):
            if not is_address(account_or_address):
                raise ValueError("expected an unlocked node account's address; pass private keys as SecretStr")
            return _NodeSigner(w3, to_checksum_address(account_or_address))
        return _LocalSigner(account_or_address)

    @property
    def address(self) -> str:
        return self._signer.address

    @property
    def backoff(self) -> Backoff:
        """The retry state of `run`: consecutive failed ticks and the current delay."""
        return self._backoff

    # ------------------------------------------------------------------ public API

    async def start(self) -> None:
        """Syncs the local nonce with the chain. With the RPC down this is deferred to the first tick that
        reaches it; stored in-flight transactions are resumed by the ticks."""
        try:
            async with self._lock:
                await self._sync_nonce()
        except TRANSIENT_RPC_ERRORS as exc:
            log.warning("txmgr %s: RPC unavailable at start (%s); nonce sync deferred", self.address, exc)

    async def submit(self, key: str, to: str, data: bytes | str, gas_limit: int | None = None) -> TxRecord:
        """Stores a transaction as `unstarted` under an idempotency key and returns its record; the next tick
        dry-runs and sends it. A key that already exists in the database returns the stored record, whatever its
        state, and nothing is sent again: a failed key stays failed, so retry under a new key."""
        if not key or len(key) > 256:
            raise ValueError("idempotency key must be 1..256 characters")
        if not is_address(to):
            raise ValueError(f"not an address: {to}")
        if gas_limit is not None and gas_limit <= 0:
            raise ValueError("gas_limit must be positive")
        payload = bytes(HexBytes(data))
        now = time.time()
        with transaction(self._db) as db:
            db.execute(
                "INSERT INTO tx (key, chain_id, from_address, to_address, data, requested_gas_limit, state,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
                (key, self._chain_id, self.address, to_checksum_address(to), payload, gas_limit,
                 TxState.UNSTARTED.value, now, now),
            )
        record = self._to_record(self._db.execute("SELECT * FROM tx WHERE key = ?", (key,)).fetchone())
        if record.to != to_checksum_address(to) or record.data != payload:
            log.warning("txmgr: key %s resubmitted with another payload; the stored transaction stands", key)
        self._wake.set()
        return record

    def record(self, key: str) -> TxRecord | None:
        row = self._db.execute("SELECT * FROM tx WHERE key = ?", (key,)).fetchone()
        return None if row is None else self._to_record(row)

    def records(self, state: TxState | None = None) -> list[TxRecord]:
        """This account's transactions on this chain in submission order, optionally of one state."""
        sql = "SELECT * FROM tx WHERE chain_id = ? AND from_address = ?"
        args: list[Any] = [self._chain_id, self.address]
        if state is not None:
            sql += " AND state = ?"
            args.append(state.value)
        return [self._to_record(row) for row in self._db.execute(sql + " ORDER BY id", args)]

    def attempts(self, key: str) -> list[TxAttempt]:
        """Every signed attempt of a transaction, oldest first (all nonces it ever held)."""
        rows = self._db.execute(
            "SELECT a.* FROM tx_attempt a JOIN tx t ON t.id = a.tx_id WHERE t.key = ? ORDER BY a.id", (key,)
        ).fetchall()
        return [
            TxAttempt(
                hash=r["hash"], nonce=r["nonce"], gas_limit=r["gas_limit"], max_fee_per_gas=r["max_fee"],
                max_priority_fee_per_gas=r["tip"], sent_block=r["sent_block"], created_at=_datetime(r["created_at"]),
            )
            for r in rows
        ]

    async def tick(self) -> None:
        """One pass: resume the in-progress transaction, dry-run and send unstarted ones, then look for receipts,
        reorgs and stuck transactions. RPC outages raise one of TRANSIENT_RPC_ERRORS; nothing is lost."""
        async with self._lock:
            if self._next_nonce is None:
                await self._sync_nonce()
            head = await self._w3.eth.block_number
            if await self._resume_in_progress(head):
                await self._send_unstarted(head)
            await self._check_unconfirmed()

    async def run(self, stop_event: asyncio.Event, interval: float = 1.0) -> None:
        """Ticks every `interval` seconds (sooner after a submit) until `stop_event` is set. After failures it
        waits `interval * 2**failures`, at most `max_backoff`, and catches up once the RPC answers again."""
        backoff = Backoff(interval, self._max_backoff)
        self._backoff = backoff
        while not stop_event.is_set():
            self._wake.clear()
            try:
                await self.tick()
            except TRANSIENT_RPC_ERRORS as exc:
                backoff.failed()
                log.warning("txmgr %s: RPC unavailable (%s: %s); retrying in %.2fs",
                            self.address, type(exc).__name__, exc, backoff.delay)
            except Exception:
                backoff.failed()
                log.exception("txmgr %s: tick failed; retrying in %.2fs", self.address, backoff.delay)
            else:
                backoff.succeeded()
            waiters = [stop_event.wait()] + ([self._wake.wait()] if backoff.failures == 0 else [])
            await wait_any(waiters, backoff.delay)

    async def wait_confirmed(self, key: str, timeout: float, poll_interval: float = 0.05) -> TxRecord:
        """Waits until the transaction is final (confirmed, failed or fatal) and returns its record; something
        must be ticking meanwhile (`run`, or another process on the same database). Raises KeyError for an
        unknown key and TimeoutError when it is not final in time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            record = self.record(key)
            if record is None:
                raise KeyError(key)
            if record.state in FINAL_STATES:
                return record
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"transaction {key} still {record.state.value} after {timeout}s")
            await asyncio.sleep(min(poll_interval, remaining))

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------------ nonces

    async def _sync_nonce(self) -> None:
        on_chain = await self._w3.eth.get_transaction_count(self.address, "pending")
        stored = self._db.execute(
            "SELECT MAX(nonce) FROM tx WHERE chain_id = ? AND from_address = ?", (self._chain_id, self.address)
        ).fetchone()[0]
        local = 0 if stored is None else stored + 1
        if on_chain > local:
            log.info("txmgr %s: chain nonce %d ahead of stored %d (sent elsewhere); using the chain's",
                     self.address, on_chain, local)
        self._next_nonce = max(on_chain, local)

    # ------------------------------------------------------------------ sending

    async def _resume_in_progress(self, head: int) -> bool:
        """Re-broadcasts the transaction whose send was not acknowledged (crash, outage, refusal). True when
        none is left in progress, so new nonces may be handed out."""
        row = self._one(TxState.IN_PROGRESS)
        if row is None:
            return True
        return await self._broadcast_first(row, self._latest_attempt(row), head)

    async def _send_unstarted(self, head: int) -> None:
        for row in self._rows(TxState.UNSTARTED, limit=self._max_sends_per_tick):
            gas_limit, failure = await self._preflight(row)
            if failure is not None:
                self._finish(row["id"], TxState.FAILED, error=failure)
                log.warning("txmgr: %s not sent, %s", row["key"], failure)
                continue
            fees = initial_fees(await self._base_fee(), await self._suggested_tip(), self._max_fee_cap)
            nonce = self._next_nonce
            attempt = await self._sign_attempt(row, nonce, gas_limit, fees, head, state=TxState.IN_PROGRESS)
            self._next_nonce = nonce + 1
            if not await self._broadcast_first(self._row(row["id"]), attempt, head):
                return

    async def _broadcast_first(self, row: sqlite3.Row, attempt: sqlite3.Row, head: int) -> bool:
        """Broadcasts an in-progress transaction until the node takes it. True when it left `in_progress`
        (accepted, or refused for good); False to retry on a later tick."""
        for _ in range(3):
            outcome, message = await self._broadcast(attempt["raw"])
            if outcome in (_Outcome.ACCEPTED, _Outcome.ALREADY_KNOWN, _Outcome.NONCE_TOO_LOW):
                # NONCE_TOO_LOW: an earlier broadcast of ours was mined, or another sender took the nonce;
                # the receipt check tells which.
                self._update(row["id"], state=TxState.UNCONFIRMED, broadcast_at=row["broadcast_at"] or time.time())
                log.info("txmgr: %s sent, nonce %d hash %s (%s)", row["key"], row["nonce"], attempt["hash"],
                         outcome.value)
                return True
            if outcome is _Outcome.UNDERPRICED:
                fees = bumped_fees(Fees(attempt["max_fee"], attempt["tip"]), await self._base_fee(),
                                   await self._suggested_tip(), self._bump_percent, self._max_fee_cap)
                if fees is None:
                    log.warning("txmgr: %s underpriced at the fee cap: %s", row["key"], message)
                    return False
                attempt = await self._sign_attempt(row, row["nonce"], attempt["gas_limit"], fees, head)
                continue
            if outcome is _Outcome.RETRY_LATER:
                log.warning("txmgr: %s not accepted yet: %s", row["key"], message)
                return False
            self._finish(row["id"], TxState.FATAL, nonce=None, error=f"refused by the node: {message}")
            self._next_nonce = row["nonce"]
            log.error("txmgr: %s refused by the node, nonce %d released: %s", row["key"], row["nonce"], message)
            return True
        return False

    async def _broadcast(self, raw: bytes) -> tuple[_Outcome, str]:
        try:
            await self._w3.eth.send_raw_transaction(raw)
        except Web3RPCError as exc:
            message = _node_message(exc)
            return _classify_send_error(message), message
        return _Outcome.ACCEPTED, ""

    async def _sign_attempt(
        self, row: sqlite3.Row, nonce: int, gas_limit: int, fees: Fees, head: int, state: TxState | None = None
    ) -> sqlite3.Row:
        """Signs an attempt and stores it (and the new state and nonce) before anything is broadcast."""
        raw = await self._signer.sign({
            "type": 2,
            "chainId": self._chain_id,
            "nonce": nonce,
            "to": row["to_address"],
            "value": 0,
            "data": "0x" + bytes(row["data"]).hex(),
            "gas": gas_limit,
            "maxFeePerGas": fees.max_fee,
            "maxPriorityFeePerGas": fees.tip,
        })
        tx_hash = "0x" + keccak(raw).hex()
        now = time.time()
        with transaction(self._db) as db:
            db.execute(
                "INSERT INTO tx_attempt (tx_id, nonce, hash, raw, gas_limit, max_fee, tip, sent_block, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (row["id"], nonce, tx_hash, raw, gas_limit, fees.max_fee, fees.tip, head, now),
            )
            if state is not None:
                db.execute("UPDATE tx SET state = ?, nonce = ?, error = NULL, updated_at = ? WHERE id = ?",
                           (state.value, nonce, now, row["id"]))
        return self._db.execute("SELECT * FROM tx_attempt WHERE hash = ?", (tx_hash,)).fetchone()

    async def _preflight(self, row: sqlite3.Row) -> tuple[int, str | None]:
        """The `eth_call` dry-run, then the gas estimate unless a gas limit was given: (gas limit, None), or
        (0, why it cannot succeed)."""
        call: dict[str, Any] = {"from": self.address, "to": row["to_address"], "data": bytes(row["data"])}
        requested = row["requested_gas_limit"]
        if requested is not None:
            call["gas"] = requested
        try:
            await self._w3.eth.call(call, self._dry_run_block)
            if requested is not None:
                return requested, None
            estimate = await self._w3.eth.estimate_gas(call, self._dry_run_block)
        except ContractLogicError as exc:
            return 0, f"dry-run reverted: {self._decoder.explain(exc)}"
        except Web3RPCError as exc:
            message = _node_message(exc)
            if any(phrase in message.lower() for phrase in _DOOMED_CALL):
                return 0, f"dry-run failed: {message}"
            raise
        return int(estimate * self._gas_limit_multiplier), None

    async def _base_fee(self) -> int:
        block = await self._w3.eth.get_block("latest")
        return int(block.get("baseFeePerGas", 0))

    async def _suggested_tip(self) -> int:
        try:
            return int(await self._w3.eth.max_priority_fee)
        except Web3RPCError:  # nodes without eth_maxPriorityFeePerGas
            return self._default_tip

    # ------------------------------------------------------------------ receipts, reorgs and bumps

    async def _check_unconfirmed(self) -> None:
        rows = self._rows(TxState.UNCONFIRMED, order="nonce")
        if not rows:
            return
        head = await self._w3.eth.block_number  # anew: what was just sent may be mined already
        mined_count = await self._w3.eth.get_transaction_count(self.address, "latest")
        for row in rows:
            if row["block_number"] is not None:
                if await self._still_canonical(row):
                    self._finish_if_deep(row, head)
                    continue
                log.warning("txmgr: %s reorged out of block %d; sending again", row["key"], row["block_number"])
                self._update(row["id"], mined_hash=None, block_number=None, block_hash=None, receipt_status=None,
                             gas_used=None, effective_gas_price=None, error=None)
                # Its fees were good enough a moment ago: resend as is, bump only if it stalls from here.
                self._db.execute("UPDATE tx_attempt SET sent_block = ? WHERE id = ?",
                                 (head, self._latest_attempt(row)["id"]))
                row = self._row(row["id"])
            if mined_count > row["nonce"]:
                receipt = await self._find_receipt(row)
                if receipt is not None:
                    await self._record_receipt(row, receipt)
                    self._finish_if_deep(self._row(row["id"]), head)
                elif not await self._any_attempt_known(row):
                    self._requeue(row)
                continue
            await self._bump_or_rebroadcast(row, head)

    async def _still_canonical(self, row: sqlite3.Row) -> bool:
        try:
            block = await self._w3.eth.get_block(row["block_number"])
        except BlockNotFound:
            return False
        return "0x" + bytes(block["hash"]).hex() == row["block_hash"]

    def _finish_if_deep(self, row: sqlite3.Row, head: int) -> None:
        if head - row["block_number"] + 1 < self._confirmations:
            return
        state = TxState.CONFIRMED if row["receipt_status"] == 1 else TxState.FAILED
        self._finish(row["id"], state, confirmed_at=time.time())
        log.info("txmgr: %s %s in block %d (%s)", row["key"], state.value, row["block_number"], row["mined_hash"])

    async def _find_receipt(self, row: sqlite3.Row) -> Any | None:
        for attempt in reversed(self._attempts(row)):
            try:
                return await self._w3.eth.get_transaction_receipt(attempt["hash"])
            except TransactionNotFound:
                continue
        return None

    async def _any_attempt_known(self, row: sqlite3.Row) -> bool:
        """Whether the node knows any attempt (mined with its receipt not served yet, or pending)."""
        for attempt in self._attempts(row):
            if await self._known(attempt["hash"]):
                return True
        return False

    async def _known(self, tx_hash: str) -> bool:
        try:
            await self._w3.eth.get_transaction(tx_hash)
        except TransactionNotFound:
            return False
        return True

    async def _record_receipt(self, row: sqlite3.Row, receipt: Any) -> None:
        status = int(receipt["status"])
        error = None if status == 1 else await self._explain_onchain_revert(row, receipt)
        self._update(
            row["id"],
            mined_hash="0x" + bytes(receipt["transactionHash"]).hex(),
            block_number=int(receipt["blockNumber"]),
            block_hash="0x" + bytes(receipt["blockHash"]).hex(),
            receipt_status=status,
            gas_used=int(receipt["gasUsed"]),
            effective_gas_price=int(receipt.get("effectiveGasPrice", 0)),
            error=error,
        )

    async def _explain_onchain_revert(self, row: sqlite3.Row, receipt: Any) -> str:
        """Why a mined transaction reverted: out of gas, or the error of a replay on the state after its block.
        A transaction that passed its dry-run usually reverts because another one in the same block got there
        first, which the post-block state shows."""
        attempt = self._db.execute("SELECT gas_limit FROM tx_attempt WHERE hash = ?",
                                   ("0x" + bytes(receipt["transactionHash"]).hex(),)).fetchone()
        gas_limit = attempt["gas_limit"] if attempt else None
        block = int(receipt["blockNumber"])
        if gas_limit is not None and int(receipt["gasUsed"]) >= gas_limit:
            return f"reverted on chain in block {block}: out of gas (gas limit {gas_limit})"
        call = {"from": self.address, "to": row["to_address"], "data": bytes(row["data"])}
        try:
            await self._w3.eth.call(call, block)
        except ContractLogicError as exc:
            return f"reverted on chain in block {block}: {self._decoder.explain(exc)}"
        except Web3RPCError as exc:
            return f"reverted on chain in block {block} (replay failed: {_node_message(exc)})"
        return f"reverted on chain in block {block}"

    def _requeue(self, row: sqlite3.Row) -> None:
        """Another sender used this nonce and no attempt of ours was mined under it: the payload never landed,
        so it goes back to the queue for a fresh nonce (and a fresh dry-run)."""
        reason = f"nonce {row['nonce']} was used by another transaction; re-queued"
        self._update(row["id"], state=TxState.UNSTARTED, nonce=None, error=reason)
        self._next_nonce = None
        log.warning("txmgr: %s %s", row["key"], reason)

    async def _bump_or_rebroadcast(self, row: sqlite3.Row, head: int) -> None:
        latest = self._latest_attempt(row)
        if head - latest["sent_block"] >= self._bump_after_blocks:
            fees = bumped_fees(Fees(latest["max_fee"], latest["tip"]), await self._base_fee(),
                               await self._suggested_tip(), self._bump_percent, self._max_fee_cap)
            if fees is None:
                log.warning("txmgr: %s stuck at the fee cap %d; re-broadcasting", row["key"], self._max_fee_cap)
                self._db.execute("UPDATE tx_attempt SET sent_block = ? WHERE id = ?", (head, latest["id"]))
            else:
                latest = await self._sign_attempt(row, row["nonce"], latest["gas_limit"], fees, head)
                log.info("txmgr: %s not mined after %d blocks; bumped to max fee %d tip %d (%s)", row["key"],
                         self._bump_after_blocks, fees.max_fee, fees.tip, latest["hash"])
        elif await self._known(latest["hash"]):
            return
        outcome, message = await self._broadcast(latest["raw"])
        if outcome not in (_Outcome.ACCEPTED, _Outcome.ALREADY_KNOWN, _Outcome.NONCE_TOO_LOW):
            log.warning("txmgr: %s re-broadcast of %s not accepted: %s", row["key"], latest["hash"], message)

    # ------------------------------------------------------------------ storage

    def _rows(self, state: TxState, limit: int = -1, order: str = "id") -> list[sqlite3.Row]:
        return self._db.execute(
            f"SELECT * FROM tx WHERE chain_id = ? AND from_address = ? AND state = ? ORDER BY {order} LIMIT ?",
            (self._chain_id, self.address, state.value, limit),
        ).fetchall()

    def _one(self, state: TxState) -> sqlite3.Row | None:
        rows = self._rows(state, limit=1)
        return rows[0] if rows else None

    def _row(self, tx_id: int) -> sqlite3.Row:
        return self._db.execute("SELECT * FROM tx WHERE id = ?", (tx_id,)).fetchone()

    def _attempts(self, row: sqlite3.Row) -> list[sqlite3.Row]:
        """The attempts signed for the transaction's current nonce, oldest first."""
        return self._db.execute("SELECT * FROM tx_attempt WHERE tx_id = ? AND nonce = ? ORDER BY id",
                                (row["id"], row["nonce"])).fetchall()

    def _latest_attempt(self, row: sqlite3.Row) -> sqlite3.Row:
        return self._attempts(row)[-1]

    def _update(self, tx_id: int, **columns: Any) -> None:
        if "state" in columns:
            columns["state"] = columns["state"].value
        columns["updated_at"] = time.time()
        assignments = ", ".join(f"{name} = ?" for name in columns)
        with transaction(self._db) as db:
            db.execute(f"UPDATE tx SET {assignments} WHERE id = ?", (*columns.values(), tx_id))

    def _finish(self, tx_id: int, state: TxState, **columns: Any) -> None:
        """Moves a transaction to a final state and tells `on_final`."""
        self._update(tx_id, state=state, **columns)
        if self._on_final is not None:
            try:
                self._on_final(self._to_record(self._row(tx_id)))
            except Exception:
                log.exception("txmgr: on_final hook failed")

    def _to_record(self, row: sqlite3.Row) -> TxRecord:
        attempts = self._db.execute(
            "SELECT COUNT(*) AS n, (SELECT hash FROM tx_attempt WHERE tx_id = ? ORDER BY id DESC LIMIT 1) AS latest,"
            " (SELECT gas_limit FROM tx_attempt WHERE tx_id = ? ORDER BY id DESC LIMIT 1) AS gas_limit"
            " FROM tx_attempt WHERE tx_id = ?",
            (row["id"], row["id"], row["id"]),
        ).fetchone()
        return TxRecord(
            key=row["key"],
            state=TxState(row["state"]),
            chain_id=row["chain_id"],
            from_address=row["from_address"],
            to=row["to_address"],
            data=bytes(row["data"]),
            nonce=row["nonce"],
            hash=row["mined_hash"] or attempts["latest"],
            attempts=attempts["n"],
            gas_limit=attempts["gas_limit"] or row["requested_gas_limit"],
            block_number=row["block_number"],
            block_hash=row["block_hash"],
            gas_used=row["gas_used"],
            effective_gas_price=row["effective_gas_price"],
            error=row["error"],
            created_at=_datetime(row["created_at"]),
            updated_at=_datetime(row["updated_at"]),
            broadcast_at=_datetime(row["broadcast_at"]),
            confirmed_at=_datetime(row["confirmed_at"]),
        )
