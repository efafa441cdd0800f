"""Thousands of running rentals on a local anvil in seconds, for the ingest benchmark and the scale simulation.

A suite is deployed through Brownie (`scripts.deploy.deploy_suite`) with a k=1 oracle set; everything after
that goes over raw JSON-RPC in batches: providers are made-up addresses that anvil impersonates, so no
transaction is signed in Python, calldata is encoded with eth_abi from the build artifacts' ABIs, and with
automatic mining off each phase's transactions are sent with explicit nonces and gas limits, a block's worth at a
time, and mined. Brownie needs tens of milliseconds a transaction; this takes a few (10,000 rentals: about a
minute on two cores).

Rentals are started `backdate_seconds` in the past (the chain's clock is set back for the openings and starts,
then returned to the wall clock), so each has that many seconds of past periods to report while the oracle,
which checks reports against its own wall clock, sees nothing from the future. The chain must therefore be
one of the benchmark's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

import requests
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_utils import event_abi_to_log_topic, function_abi_to_4byte_selector, keccak
from eth_utils.abi import collapse_if_tuple

from offchain.chain.contracts import abi
from offchain.chain.reads import ChainReader, read_once
from offchain.config import ChainSettings
from offchain.protocol.messages import gpu_uuid_hash

ORACLE_KEY = keccak(text="gpuex bench oracle")
PRICE = 1_000  # token units a second
RPC_BATCH = 500
#: Concurrent requests of one read through `ChainReader` (each is a connection of its own).
READ_CONCURRENCY = 32
ETHER = 10**18


def _abi_item(contract: str, kind: str, name: str) -> dict[str, Any]:
    return next(item for item in abi(contract) if item["type"] == kind and item["name"] == name)


def _topic(contract: str, event: str) -> bytes:
    return event_abi_to_log_topic(_abi_item(contract, "event", event))


OFFER_CREATED = _topic("ProviderRegistry", "OfferCreated")
RENTAL_STARTED = _topic("RentalEscrow", "RentalStarted")
REPORT_APPLIED = _topic("RentalEscrow", "ReportApplied")


class RpcError(RuntimeError):
    pass


class JsonRpc:
    """Plain JSON-RPC over HTTP, one call or many in one request."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._session = requests.Session()

    def call(self, method: str, *params: Any) -> Any:
        return self.batch([(method, list(params))])[0]

    def batch(self, calls: Sequence[tuple[str, list]]) -> list[Any]:
        results: list[Any] = []
        for first in range(0, len(calls), RPC_BATCH):
            chunk = calls[first : first + RPC_BATCH]
            body = [{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(chunk)]
            answers = sorted(self._session.post(self.url, json=body, timeout=120).json(), key=lambda a: a["id"])
            for (method, _), answer in zip(chunk, answers):
                if "error" in answer:
                    raise RpcError(f"{method}: {answer['error']}")
            results += [a["result"] for a in answers]
        return results

    def logs(self, address: str, topic: bytes, from_block: int, to_block: int | str = "latest") -> list[dict]:
        return self.call(
            "eth_getLogs",
            {
                "address": address,
                "topics": ["0x" + topic.hex()],
                "fromBlock": hex(from_block),
                "toBlock": to_block if isinstance(to_block, str) else hex(to_block),
            },
        )

    def block_number(self) -> int:
        return int(self.call("eth_blockNumber"), 16)

    def close(self) -> None:
        self._session.close()


class Call:
    """Calldata of one contract function, encoded with eth_abi from the build artifact's ABI (web3's contract
    encoder costs about a millisecond a call)."""

    def __init__(self, contract: str, function: str) -> None:
        item = _abi_item(contract, "function", function)
        self._selector = function_abi_to_4byte_selector(item)
        self._types = [collapse_if_tuple(i) for i in item["inputs"]]

    def __call__(self, *args: Any) -> str:
        return "0x" + (self._selector + abi_encode(self._types, list(args))).hex()


MINT = Call("TestStablecoin", "mint")
APPROVE = Call("TestStablecoin", "approve")
STAKE = Call("ProviderRegistry", "stake")
SET_AGENT = Call("ProviderRegistry", "setAgent")
REGISTER_GPUS = Call("ProviderRegistry", "registerGpus")
CREATE_OFFER = Call("ProviderRegistry", "createOffer")
OPEN_RENTAL = Call("RentalEscrow", "openRental")
START = Call("RentalEscrow", "start")


@dataclass(frozen=True)
class FleetRental:
    """A running rental: its id, start time, GPUs, and the index of the agent key that reports it."""

    rental_id: int
    since: int
    gpu_uuids: tuple[str, ...]
    agent: int


@dataclass(frozen=True)
class Fleet:
    chain: ChainSettings
    oracle_key: bytes
    agent_keys: tuple[bytes, ...]
    rentals: tuple[FleetRental, ...]
    ready_block: int  # the first block after the setup


class _Sender:
    """Queues eth_sendTransaction calls with locally counted nonces while mining is off, then mines them in
    blocks they fill up to the gas limit (anvil drops from its pool what does not fit the block it builds)."""

    def __init__(self, rpc: JsonRpc) -> None:
        self._rpc = rpc
        self._nonces: dict[str, int] = {}
        self._queued: deque[tuple[tuple[str, list], int]] = deque()
        self._block_gas = int(rpc.call("eth_getBlockByNumber", "latest", False)["gasLimit"], 16)

    def send(self, sender: str, to: str, data: str, gas: int) -> None:
        if sender not in self._nonces:
            self._nonces[sender] = int(self._rpc.call("eth_getTransactionCount", sender, "pending"), 16)
        nonce = self._nonces[sender]
        self._nonces[sender] = nonce + 1
        call = {"from": sender, "to": to, "data": data, "gas": hex(gas), "nonce": hex(nonce)}
        self._queued.append((("eth_sendTransaction", [call]), gas))

    def mine(self) -> None:
        """Mines everything queued, a block at a time, in the order it was queued."""
        queued, self._queued = self._queued, deque()
        while queued:
            block, gas = [], 0
            while queued and gas + queued[0][1] <= self._block_gas:
                call, limit = queued.popleft()
                block.append(call)
                gas += limit
            self._rpc.batch(block)
            self._rpc.call("evm_mine")
            status = self._rpc.call("txpool_status")
            if int(status["pending"], 16) or int(status["queued"], 16):
                raise RuntimeError(f"setup failed: a block left transactions in the pool ({status})")


def deploy_fleet(rentals: int, providers: int, gpus_per_offer: int, backdate_seconds: int) -> Fleet:
    """Deploys a suite and `rentals` running rentals, one per offer, spread over `providers` providers (each with
    its own agent key), started about `backdate_seconds` ago. Needs a connected Brownie network on anvil."""
    from brownie import TestStablecoin, accounts, web3

    from scripts.deploy import SuiteParams, deploy_suite

    providers = max(1, min(providers, rentals))
    stake_per_offer = gpus_per_offer * SuiteParams().min_stake_per_gpu
    deployer, treasury, renter = accounts[0], accounts[1], accounts[4]
    oracle = Account.from_key(ORACLE_KEY).address
    with contextlib.redirect_stdout(io.StringIO()):
        token = TestStablecoin.deploy(deployer, {"from": deployer})
        suite = deploy_suite(deployer, token, token, treasury, [oracle], 1)
    registry, escrow = suite.registry.address, suite.escrow.address
    rpc = JsonRpc(web3.provider.endpoint_uri)
    sender = _Sender(rpc)
    duration = backdate_seconds + 86_400
    provider_addresses = [Account.from_key(keccak(text=f"gpuex bench provider {i}")).address for i in range(providers)]
    agent_keys = tuple(keccak(text=f"gpuex bench agent {i}") for i in range(providers))
    # Offer k belongs to provider k % providers.
    offers_of = [list(range(p, rentals, providers)) for p in range(providers)]
    uuids = [tuple(f"GPU-bench-{k:05d}-{g}" for g in range(gpus_per_offer)) for k in range(rentals)]

    try:
        rpc.call("evm_setAutomine", False)
        rpc.batch(
            [("anvil_setBalance", [a, hex(1_000 * ETHER)]) for a in [oracle, *provider_addresses]]
            + [("anvil_impersonateAccount", [a]) for a in provider_addresses]
        )
        for provider, offers in zip(provider_addresses, offers_of):
            sender.send(deployer.address, token.address, MINT(provider, len(offers) * stake_per_offer), 100_000)
            sender.send(provider, token.address, APPROVE(registry, 2**256 - 1), 60_000)
        sender.send(deployer.address, token.address, MINT(renter.address, rentals * PRICE * duration), 100_000)
        sender.send(renter.address, token.address, APPROVE(escrow, 2**256 - 1), 60_000)
        sender.mine()
        for provider, agent_key, offers in zip(provider_addresses, agent_keys, offers_of):
            sender.send(provider, registry, STAKE(len(offers) * stake_per_offer), 150_000)
            sender.send(provider, registry, SET_AGENT(Account.from_key(agent_key).address), 80_000)
            hashes = [gpu_uuid_hash(u) for k in offers for u in uuids[k]]
            for first in range(0, len(hashes), 200):
                chunk = hashes[first : first + 200]
                sender.send(provider, registry, REGISTER_GPUS(chunk), 40_000 + 30_000 * len(chunk))
        sender.mine()
        first_offer_block = rpc.block_number() + 1
        for provider, offers in zip(provider_addresses, offers_of):
            for k in offers:
                terms = (
                    b"H100".ljust(32, b"\0"),
                    81_559,
                    PRICE,
                    60,
                    30 * 86_400,
                    b"bench".ljust(16, b"\0"),
                    10_000,
                    False,
                    [gpu_uuid_hash(u) for u in uuids[k]],
                )
                sender.send(provider, registry, CREATE_OFFER(terms), 200_000 + 60_000 * gpus_per_offer)
        sender.mine()
        offer_ids = _offer_ids(rpc, registry, first_offer_block, provider_addresses, offers_of, rentals)

        rpc.call("evm_setTime", int(time.time()) - backdate_seconds)
        first_start_block = rpc.block_number() + 1
        for k in range(rentals):
            sender.send(
                renter.address, escrow, OPEN_RENTAL(offer_ids[k], duration, PRICE, keccak(text="bench")), 250_000
            )
        sender.mine()
        for k in range(rentals):
            sender.send(provider_addresses[k % providers], escrow, START((offer_ids[k] << 32) | 1), 100_000)
        sender.mine()
        starts = {
            int(log["topics"][1], 16): int(log["data"][2:66], 16)
            for log in rpc.logs(escrow, RENTAL_STARTED, first_start_block)
        }
    finally:
        rpc.call("evm_setTime", int(time.time()))
        rpc.call("evm_setAutomine", True)
        rpc.call("evm_mine")
        rpc.close()
    fleet_rentals = []
    for k in range(rentals):
        rental_id = (offer_ids[k] << 32) | 1
        if rental_id not in starts:
            raise RuntimeError(f"setup failed: rental {rental_id} (offer {offer_ids[k]}) was not started")
        fleet_rentals.append(FleetRental(rental_id, starts[rental_id], uuids[k], k % providers))
    chain = ChainSettings(
        rpc_url=web3.provider.endpoint_uri, chain_id=web3.eth.chain_id, registry=registry, escrow=escrow
    )
    return Fleet(chain, ORACLE_KEY, agent_keys, tuple(fleet_rentals), web3.eth.block_number + 1)


def _offer_ids(
    rpc: JsonRpc, registry: str, from_block: int, providers: list[str], offers_of: list[list[int]], count: int
) -> list[int]:
    """The offer id of each planned offer k. A provider's transactions are mined in nonce order, so its offers'
    ids, in increasing order, are its planned offers in the order they were sent."""
    ids_by_provider: dict[str, list[int]] = defaultdict(list)
    for log in rpc.logs(registry, OFFER_CREATED, from_block):
        ids_by_provider[_address_topic(log["topics"][2])].append(int(log["topics"][1], 16))
    offer_ids = [0] * count
    for provider, offers in zip(providers, offers_of):
        created = sorted(ids_by_provider[provider.lower()])
        if len(created) != len(offers):
            raise RuntimeError(f"setup failed: provider {provider} created {len(created)} of {len(offers)} offers")
        for k, offer_id in zip(offers, created):
            offer_ids[k] = offer_id
    return offer_ids


def _address_topic(topic: str) -> str:
    return "0x" + topic[-40:].lower()


def last_seqs(chain: ChainSettings, rental_ids: Sequence[int]) -> dict[int, int]:
    """Each rental's last applied seq, read from the escrow now, `READ_CONCURRENCY` rentals at a time."""

    async def read(reader: ChainReader) -> list[int]:
        limit = asyncio.Semaphore(READ_CONCURRENCY)

        async def one(rental_id: int) -> int:
            async with limit:
                return (await reader.rental(rental_id)).last_seq

        return await asyncio.gather(*(one(r) for r in rental_ids))

    return dict(zip(rental_ids, read_once(chain.rpc_url, chain.registry, chain.escrow, read)))


class AppliedReport(NamedTuple):
    rental_id: int
    seq: int
    tx_hash: str


class BatchTransaction(NamedTuple):
    tx_hash: str
    timestamp: int  # of its block
    gas_used: int


def applied_reports(rpc_url: str, escrow: str, from_block: int) -> list[AppliedReport]:
    """Every ReportApplied event of the escrow from `from_block` on."""
    rpc = JsonRpc(rpc_url)
    try:
        head, found, first = rpc.block_number(), [], from_block
        while first <= head:
            last = min(head, first + 1_999)
            found += [
                # ReportApplied(uint256 indexed rentalId, uint256 seq, ...): seq is the first word of the data.
                AppliedReport(int(log["topics"][1], 16), int(log["data"][2:66], 16), log["transactionHash"])
                for log in rpc.logs(escrow, REPORT_APPLIED, first, last)
            ]
            first = last + 1
        return found
    finally:
        rpc.close()


def batch_transactions(rpc_url: str, tx_hashes: Sequence[str]) -> list[BatchTransaction]:
    """The gas used by each transaction and the time of its block."""
    rpc = JsonRpc(rpc_url)
    try:
        receipts = rpc.batch([("eth_getTransactionReceipt", [h]) for h in tx_hashes])
        numbers = sorted({r["blockNumber"] for r in receipts})
        blocks = dict(zip(numbers, rpc.batch([("eth_getBlockByNumber", [n, False]) for n in numbers])))
    finally:
        rpc.close()
    return [
        BatchTransaction(h, int(blocks[r["blockNumber"]]["timestamp"], 16), int(r["gasUsed"], 16))
        for h, r in zip(tx_hashes, receipts)
    ]
