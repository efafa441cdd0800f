"""Transaction manager in the spirit of Chainlink's txmgr (`core/chains/evm/txmgr/`).

Every transaction is written to SQLite before anything is sent, under an idempotency key chosen by the caller
(the oracle's `reports:<rentalId>-<seq>+...` and `finalize:<rentalId>`, the agent's `start-<rentalId>`);
submitting a key again returns the stored record. A transaction moves

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
- A reorg deeper than `confirmations` takes back a transaction already final: the account's mined nonce count
  (`eth_getTransactionCount(latest)`, read once per new head) falls to or below the nonce of a transaction
  stored as mined. Such a transaction goes back to `unconfirmed` with its receipt dropped, and is broadcast
  again as it was signed (same nonce, same payload): it lands again, and the transactions with later nonces,
  which the node would otherwise hold back behind the gap forever, follow it.
- Nonces are owned locally: synced at start with `eth_getTransactionCount(pending)` and with the nonces already
  stored, then handed out one by one. If another sender took a nonce that none of our attempts got mined
  under, the transaction goes back to `unstarted` and gets a fresh nonce (its payload never landed).

The account must be used by this manager only; another sender on the same account only costs re-queues.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable

from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress, HexStr
from eth_utils import is_address, keccak, to_checksum_address
from hexbytes import HexBytes
from pydantic import SecretStr
from web3 import AsyncWeb3
from web3.exceptions import BlockNotFound, TransactionNotFound, Web3RPCError
from web3.types import BlockIdentifier, TxParams

from offchain.chain.tx.backoff import Backoff, wait_any
from offchain.chain.tx.dryrun import DryRunFailed, dry_run, explain_onchain_revert
from offchain.chain.tx.fees import (
    DEFAULT_MAX_FEE_CAP,
    DEFAULT_TIP,
    Fees,
    base_fee,
    bumped_fees,
    initial_fees,
    suggested_tip,
)
from offchain.chain.tx.reverts import RevertDecoder
from offchain.chain.tx.senderrors import SENT, TRANSIENT_RPC_ERRORS, SendOutcome, classify_send_error, node_message
from offchain.chain.tx.signers import make_signer
from offchain.chain.tx.store import FINAL_STATES, RECEIPT_COLUMNS, TxAttempt, TxRecord, TxState, TxStore

log = logging.getLogger(__name__)


class TxManager:
    """Persists, sends, bumps and confirms the transactions of one account on one chain.

    `account_or_address`: an eth-account `LocalAccount`, or a `SecretStr` private key (as settings hold it), to
    sign here; or the address of an account unlocked on the node (dev chains), which signs with
    `eth_signTransaction`.

    `confirmations`: blocks deep a receipt must be before the transaction is final; reorgs are watched for until
    then. `bump_after_blocks`, `bump_percent`, `max_fee_cap` (wei): the gas bump policy. `dry_run_block`: the
    block tag of the dry-run and gas estimate; "pending" lets a transaction that depends on an earlier one of
    ours, still in the mempool, pass (use "latest" for nodes without a pending state). `revert_decoder` names
    reverts; by default it knows the errors of the contracts of `reverts.DECODED_CONTRACTS`.
    `on_final` is called (in the ticking process) with the record of each transaction that becomes confirmed,
    failed or fatal: the place for metrics such as latency (`confirmed_at - created_at`) and gas used.
    `on_reorg` is called with the record of each transaction a reorg took out of the chain, and whether it had
    been final (the reorg was deeper than `confirmations`); the transaction is being sent again.
    """

    def __init__(
        self,
        w3: AsyncWeb3[Any],
        db_path: str | Path,
        account_or_address: LocalAccount | SecretStr | str,
        chain_id: int,
        *,
        confirmations: int = 1,
        bump_after_blocks: int = 3,
        bump_percent: float = 12.5,
        max_fee_cap: int = DEFAULT_MAX_FEE_CAP,
        default_tip: int = DEFAULT_TIP,
        gas_limit_multiplier: float = 1.25,
        max_sends_per_tick: int = 50,
        max_backoff: float = 30.0,
        dry_run_block: BlockIdentifier = "pending",
        revert_decoder: RevertDecoder | None = None,
        on_final: Callable[[TxRecord], None] | None = None,
        on_reorg: Callable[[TxRecord, bool], None] | None = None,
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
        self._on_reorg = on_reorg
        self._reorg_checked_head: int | None = None
        self._decoder = revert_decoder or RevertDecoder.from_artifacts()
        self._signer = make_signer(w3, account_or_address)
        self._store = TxStore(db_path, chain_id, self._signer.address)
        self._next_nonce: int | None = None
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._backoff = Backoff(1.0, max_backoff)

    @property
    def address(self) -> ChecksumAddress:
        return self._signer.address

    @property
    def confirmations(self) -> int:
        """Blocks deep a receipt must be before its transaction is final."""
        return self._confirmations

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
        record = self._store.record(
            self._store.insert(key, to_checksum_address(to), payload, gas_limit, TxState.UNSTARTED)
        )
        if record.to != to_checksum_address(to) or record.data != payload:
            log.warning("txmgr: key %s resubmitted with another payload; the stored transaction stands", key)
        self._wake.set()
        return record

    def record(self, key: str) -> TxRecord | None:
        row = self._store.by_key(key)
        return None if row is None else self._store.record(row)

    def records(self, state: TxState | None = None) -> list[TxRecord]:
        """This account's transactions on this chain in submission order, optionally of one state."""
        return [self._store.record(row) for row in self._store.rows(state)]

    def attempts(self, key: str) -> list[TxAttempt]:
        """Every signed attempt of a transaction, oldest first (all nonces it ever held)."""
        return self._store.attempt_history(key)

    async def tick(self) -> None:
        """One pass: resume the in-progress transaction, dry-run and send unstarted ones, then look for receipts,
        reorgs and stuck transactions. RPC outages raise one of TRANSIENT_RPC_ERRORS; nothing is lost."""
        async with self._lock:
            if self._next_nonce is None:
                await self._sync_nonce()
            head = await self._w3.eth.block_number
            await self._reopen_reorged_final(head)
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
                log.warning(
                    "txmgr %s: RPC unavailable (%s: %s); retrying in %.2fs",
                    self.address,
                    type(exc).__name__,
                    exc,
                    backoff.delay,
                )
            except Exception:
                backoff.failed()
                log.exception("txmgr %s: tick failed; retrying in %.2fs", self.address, backoff.delay)
            else:
                backoff.succeeded()
            waiters = [stop_event.wait()] + ([self._wake.wait()] if backoff.failures == 0 else [])
            await wait_any(waiters, backoff.delay)

    async def recheck_final(self) -> None:
        """Looks now, rather than at the next head, for final transactions that a reorg deeper than
        `confirmations` took out of the chain, and puts them back to be sent again (`on_reorg` tells of each)."""
        async with self._lock:
            await self._reopen_reorged_final(await self._w3.eth.block_number, force=True)

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

    async def wait_mined(self, key: str, timeout: float, poll_interval: float = 0.05) -> TxRecord:
        """Like `wait_confirmed`, but returns as soon as the transaction is mined (its record has a block), at any
        depth: for a caller that acts on the receipt at once, such as an agent starting a job, and leaves a reorg
        to the manager, which sends the transaction again. A mined transaction that reverted shows only once
        final (`failed`); before then, read the state it was meant to change."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            record = self.record(key)
            if record is None:
                raise KeyError(key)
            if record.state in FINAL_STATES or record.block_number is not None:
                return record
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"transaction {key} still {record.state.value} after {timeout}s")
            await asyncio.sleep(min(poll_interval, remaining))

    def close(self) -> None:
        self._store.close()

    # ------------------------------------------------------------------ nonces

    async def _sync_nonce(self) -> None:
        on_chain = await self._w3.eth.get_transaction_count(self.address, "pending")
        stored = self._store.max_nonce()
        local = 0 if stored is None else stored + 1
        if on_chain > local:
            log.info(
                "txmgr %s: chain nonce %d ahead of stored %d (sent elsewhere); using the chain's",
                self.address,
                on_chain,
                local,
            )
        self._next_nonce = max(on_chain, local)

    # ------------------------------------------------------------------ sending

    async def _resume_in_progress(self, head: int) -> bool:
        """Re-broadcasts the transaction whose send was not acknowledged (crash, outage, refusal). True when
        none is left in progress, so new nonces may be handed out."""
        row = self._store.first(TxState.IN_PROGRESS)
        if row is None:
            return True
        return await self._broadcast_first(row, self._store.latest_attempt(row), head)

    async def _send_unstarted(self, head: int) -> None:
        for row in self._store.rows(TxState.UNSTARTED, limit=self._max_sends_per_tick):
            try:
                gas_limit = await self._preflight(row)
            except DryRunFailed as failure:
                self._finish(row["id"], TxState.FAILED, error=failure.summary)
                log.warning("txmgr: %s not sent, %s", row["key"], failure.summary)
                continue
            fees = initial_fees(await base_fee(self._w3), await self._tip(), self._max_fee_cap)
            nonce = self._next_nonce
            assert nonce is not None  # synced by `tick` before it sends
            attempt = await self._sign_attempt(row, nonce, gas_limit, fees, head, state=TxState.IN_PROGRESS)
            self._next_nonce = nonce + 1
            if not await self._broadcast_first(self._store.row(row["id"]), attempt, head):
                return

    async def _broadcast_first(self, row: sqlite3.Row, attempt: sqlite3.Row, head: int) -> bool:
        """Broadcasts an in-progress transaction until the node takes it. True when it left `in_progress`
        (accepted, or refused for good); False to retry on a later tick."""
        for _ in range(3):
            outcome, message = await self._broadcast(attempt["raw"])
            if outcome in SENT:
                # NONCE_TOO_LOW: an earlier broadcast of ours was mined, or another sender took the nonce;
                # the receipt check tells which.
                self._store.update(
                    row["id"], state=TxState.UNCONFIRMED, broadcast_at=row["broadcast_at"] or time.time()
                )
                log.info(
                    "txmgr: %s sent, nonce %d hash %s (%s)",
                    row["key"],
                    row["nonce"],
                    attempt["hash"],
                    outcome.name.lower(),
                )
                return True
            if outcome is SendOutcome.UNDERPRICED:
                fees = await self._bumped(attempt)
                if fees is None:
                    log.warning("txmgr: %s underpriced at the fee cap: %s", row["key"], message)
                    return False
                attempt = await self._sign_attempt(row, row["nonce"], attempt["gas_limit"], fees, head)
                continue
            if outcome is SendOutcome.RETRY_LATER:
                log.warning("txmgr: %s not accepted yet: %s", row["key"], message)
                return False
            self._finish(row["id"], TxState.FATAL, nonce=None, error=f"refused by the node: {message}")
            self._next_nonce = row["nonce"]
            log.error("txmgr: %s refused by the node, nonce %d released: %s", row["key"], row["nonce"], message)
            return True
        return False

    async def _broadcast(self, raw: bytes) -> tuple[SendOutcome, str]:
        try:
            await self._w3.eth.send_raw_transaction(raw)
        except Web3RPCError as exc:
            message = node_message(exc)
            return classify_send_error(message), message
        return SendOutcome.ACCEPTED, ""

    async def _sign_attempt(
        self, row: sqlite3.Row, nonce: int, gas_limit: int, fees: Fees, head: int, state: TxState | None = None
    ) -> sqlite3.Row:
        """Signs an attempt and stores it (and the new state and nonce) before anything is broadcast."""
        raw = await self._signer.sign(
            {
                "type": 2,
                "chainId": self._chain_id,
                "nonce": nonce,
                "to": row["to_address"],
                "value": 0,
                "data": "0x" + bytes(row["data"]).hex(),
                "gas": gas_limit,
                "maxFeePerGas": fees.max_fee,
                "maxPriorityFeePerGas": fees.tip,
            }
        )
        return self._store.add_attempt(row, nonce, raw, "0x" + keccak(raw).hex(), gas_limit, fees, head, state)

    async def _preflight(self, row: sqlite3.Row) -> int:
        """The dry-run (`offchain.chain.tx.dryrun`) of a stored transaction: its gas limit (the one requested, or
        the estimate with headroom); raises `DryRunFailed`."""
        call: TxParams = {"from": self.address, "to": row["to_address"], "data": bytes(row["data"])}
        requested = row["requested_gas_limit"]
        if requested is not None:
            call["gas"] = requested
        gas = await dry_run(self._w3, call, self._decoder, self._dry_run_block)
        return gas if requested is not None else int(gas * self._gas_limit_multiplier)

    async def _tip(self) -> int:
        return await suggested_tip(self._w3, self._default_tip)

    # ------------------------------------------------------------------ receipts, reorgs and bumps

    async def _check_unconfirmed(self) -> None:
        rows = self._store.rows(TxState.UNCONFIRMED, order="nonce")
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
                self._store.update(row["id"], **dict.fromkeys(RECEIPT_COLUMNS))
                # Its fees were good enough a moment ago: resend as is, bump only if it stalls from here.
                self._store.restart_bump_clock(self._store.latest_attempt(row), head)
                self._tell_reorg(row["id"], was_final=False)
                row = self._store.row(row["id"])
            if mined_count > row["nonce"]:
                receipt = await self._find_receipt(row)
                if receipt is not None:
                    await self._record_receipt(row, receipt)
                    self._finish_if_deep(self._store.row(row["id"]), head)
                elif not await self._any_attempt_known(row):
                    self._requeue(row)
                continue
            await self._bump_or_rebroadcast(row, head)

    async def _reopen_reorged_final(self, head: int, *, force: bool = False) -> None:
        """Puts back to `unconfirmed` every final transaction that a reorg deeper than `confirmations` took out of
        the chain: mined under a nonce the chain's mined count no longer covers. `_check_unconfirmed` then
        broadcasts it again. Read once per new head (a reorg to a chain of the same height shows at the next
        block), or now when `force`d."""
        if head == self._reorg_checked_head and not force:
            return
        mined_count = await self._w3.eth.get_transaction_count(self.address, "latest")
        for row in self._store.mined_final_from(mined_count):
            log.warning(
                "txmgr: %s, final in block %d, reorged out (nonce %d, chain's mined count %d); sending again",
                row["key"],
                row["block_number"],
                row["nonce"],
                mined_count,
            )
            self._store.update(
                row["id"], state=TxState.UNCONFIRMED, confirmed_at=None, **dict.fromkeys(RECEIPT_COLUMNS)
            )
            self._store.restart_bump_clock(self._store.latest_attempt(row), head)
            self._tell_reorg(row["id"], was_final=True)
        self._reorg_checked_head = head

    def _tell_reorg(self, tx_id: int, *, was_final: bool) -> None:
        if self._on_reorg is None:
            return
        try:
            self._on_reorg(self._store.record(self._store.row(tx_id)), was_final)
        except Exception:
            log.exception("txmgr: on_reorg hook failed")

    async def _still_canonical(self, row: sqlite3.Row) -> bool:
        try:
            block = await self._w3.eth.get_block(row["block_number"])
        except BlockNotFound:
            return False
        stored_hash: str = row["block_hash"]
        return "0x" + bytes(block["hash"]).hex() == stored_hash

    def _finish_if_deep(self, row: sqlite3.Row, head: int) -> None:
        if head - row["block_number"] + 1 < self._confirmations:
            return
        state = TxState.CONFIRMED if row["receipt_status"] == 1 else TxState.FAILED
        self._finish(row["id"], state, confirmed_at=time.time())
        log.info("txmgr: %s %s in block %d (%s)", row["key"], state.value, row["block_number"], row["mined_hash"])

    async def _find_receipt(self, row: sqlite3.Row) -> Any | None:
        for attempt in reversed(self._store.attempts(row)):
            try:
                return await self._w3.eth.get_transaction_receipt(attempt["hash"])
            except TransactionNotFound:
                continue
        return None

    async def _any_attempt_known(self, row: sqlite3.Row) -> bool:
        """Whether the node knows any attempt (mined with its receipt not served yet, or pending)."""
        for attempt in self._store.attempts(row):
            if await self._known(attempt["hash"]):
                return True
        return False

    async def _known(self, tx_hash: HexStr) -> bool:
        try:
            await self._w3.eth.get_transaction(tx_hash)
        except TransactionNotFound:
            return False
        return True

    async def _record_receipt(self, row: sqlite3.Row, receipt: Any) -> None:
        status = int(receipt["status"])
        error = None if status == 1 else await self._explain_onchain_revert(row, receipt)
        self._store.update(
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
        attempt = self._store.attempt("0x" + bytes(receipt["transactionHash"]).hex())
        call: TxParams = {"from": self.address, "to": row["to_address"], "data": bytes(row["data"])}
        return await explain_onchain_revert(
            self._w3, call, receipt, attempt["gas_limit"] if attempt else None, self._decoder
        )

    def _requeue(self, row: sqlite3.Row) -> None:
        """Another sender used this nonce and no attempt of ours was mined under it: the payload never landed,
        so it goes back to the queue for a fresh nonce (and a fresh dry-run)."""
        reason = f"nonce {row['nonce']} was used by another transaction; re-queued"
        self._store.update(row["id"], state=TxState.UNSTARTED, nonce=None, error=reason)
        self._next_nonce = None
        log.warning("txmgr: %s %s", row["key"], reason)

    async def _bumped(self, attempt: sqlite3.Row) -> Fees | None:
        """The fees of `attempt` bumped past what the node now asks; None at the fee cap."""
        return bumped_fees(
            Fees(attempt["max_fee"], attempt["tip"]),
            await base_fee(self._w3),
            await self._tip(),
            self._bump_percent,
            self._max_fee_cap,
        )

    async def _bump_or_rebroadcast(self, row: sqlite3.Row, head: int) -> None:
        latest = self._store.latest_attempt(row)
        if head - latest["sent_block"] >= self._bump_after_blocks:
            fees = await self._bumped(latest)
            if fees is None:
                log.warning("txmgr: %s stuck at the fee cap %d; re-broadcasting", row["key"], self._max_fee_cap)
                self._store.restart_bump_clock(latest, head)
            else:
                latest = await self._sign_attempt(row, row["nonce"], latest["gas_limit"], fees, head)
                log.info(
                    "txmgr: %s not mined after %d blocks; bumped to max fee %d tip %d (%s)",
                    row["key"],
                    self._bump_after_blocks,
                    fees.max_fee,
                    fees.tip,
                    latest["hash"],
                )
        elif await self._known(latest["hash"]):
            return
        outcome, message = await self._broadcast(latest["raw"])
        if outcome not in SENT:
            log.warning("txmgr: %s re-broadcast of %s not accepted: %s", row["key"], latest["hash"], message)

    def _finish(self, tx_id: int, state: TxState, **columns: Any) -> None:
        """Moves a transaction to a final state and tells `on_final`."""
        self._store.update(tx_id, state=state, **columns)
        if self._on_final is not None:
            try:
                self._on_final(self._store.record(self._store.row(tx_id)))
            except Exception:
                log.exception("txmgr: on_final hook failed")
