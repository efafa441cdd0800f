"""What providers and renters do on a gpuex suite, as async actions of one account: stake, list and price offers,
rent, terminate, claim earnings, withdraw; and the reads those actions need, such as a rental's history from the
escrow's events.

`gpuex` (and any other front end) parses and renders; the decisions live here. Every action sends through a
`Wallet`, so a call that would revert fails before anything is signed, named after its custom error
(`TxFailed("Registry_UnknownOffer: 7")`); checks that need no transaction fail with an `ExchangeError` that says
what to do. Actions return pydantic results: what was sent, then the state it led to.

Amounts are token units (`int`) throughout; `TokenInfo` converts human units at the front end's edge.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator
from web3 import AsyncWeb3

from offchain.chain.contracts import contract
from offchain.chain.deployments import Deployment
from offchain.chain.events import (
    RENTAL_EVENT_NAMES,
    AgentSet,
    ChainEvent,
    OfferCreated,
    RentalEvent,
    RentalFinalized,
    RentalOpened,
    decode_log,
)
from offchain.chain.follower import EventFollower, LogBatch, Rewind
from offchain.chain.reads import Balances, ChainReader
from offchain.chain.tx.oneshot import Sent, TxFailed, Wallet
from offchain.market.index import EventIndex
from offchain.market.offers import (
    SECONDS_PER_HOUR,
    OfferRecord,
    ProviderRecord,
    TokenInfo,
    pack_text,
    read_offer,
    read_provider,
    read_token,
)
from offchain.market.rentals import CLAIMABLE_STATUSES, RentalHistory
from offchain.protocol.agenturl import AgentUrlInvalid, check_agent_url
from offchain.protocol.status import OfferStatus

E = TypeVar("E", bound=ChainEvent)


class ExchangeError(RuntimeError):
    """The action cannot be done as asked; the message says why."""


class NotFound(ExchangeError):
    """No offer, rental or provider with that id."""


class NothingToClaim(ExchangeError):
    """The rental has no earnings that a claim would credit now."""


class NothingToWithdraw(ExchangeError):
    """The account has neither an escrow balance nor slash compensation to withdraw."""


class NotYourRental(ExchangeError):
    """The rental is another account's: only its renter may do this."""

    def __init__(self, rental_id: int, renter: str, action: str):
        super().__init__(f"rental {rental_id} belongs to {renter}; only its renter can {action} it")


class InsufficientFunds(ExchangeError):
    """The account holds less of a token than the action needs."""


class InsufficientAllowance(ExchangeError):
    """The account has not allowed a contract to take what the action needs; `approve=True` approves exactly it."""

    def __init__(self, token: TokenInfo, spender: str, allowance: int, needed: int):
        super().__init__(
            f"insufficient allowance: {spender} may take {token.format(allowance)} of yours, "
            f"{token.format(needed)} needed"
        )
        self.token = token
        self.spender = spender
        self.allowance = allowance
        self.needed = needed


_FROZEN = ConfigDict(extra="forbid", frozen=True)


class SentTx(BaseModel):
    """A mined, successful transaction of an action."""

    model_config = _FROZEN

    action: str  # the contract function, e.g. "approve", "openRental"
    tx_hash: str
    block_number: int
    gas_used: int


class ActionResult(BaseModel):
    """The transactions an action sent, in order (none when there was nothing to do)."""

    model_config = _FROZEN

    account: str
    transactions: list[SentTx] = []


class ProviderResult(ActionResult):
    provider: ProviderRecord


class GpuRegistration(ActionResult):
    registered: list[str]  # UUID hashes this call registered
    already_registered: list[str]  # UUID hashes the account owned already


class OfferResult(ActionResult):
    offer: OfferRecord


class Withdrawal(ActionResult):
    escrow_amount: int  # earnings, refunds and fees the escrow credited
    compensation: int  # slashed stake the registry credited to the account as a renter


class FaucetClaim(ActionResult):
    amount: int  # what the faucet minted to the account
    balance: int  # the account's payment token balance after the claim


class AgentEndpoint(BaseModel):
    """Where a renter reaches the agent of an offer's provider, and the key the agent there must prove it holds
    (the chain does not vouch for the URL, only for the key)."""

    model_config = _FROZEN

    offer_id: int
    provider: str
    agent: str  # the provider's registered agent key (`agentOf`)
    url: str  # the agent API's base URL (`agentUrlOf`), passed by `check_agent_url`

    @classmethod
    def of(cls, offer: OfferRecord) -> AgentEndpoint:
        """The agent API of the offer's provider: its URL, checked as `check_agent_url` checks it, and the agent key
        the agent answering there must hold. `ExchangeError` when the provider has no agent key or no URL, or
        published one that fails the check."""
        provider = offer.reputation
        whose = f"the provider {provider.address} of offer {offer.offer_id}"
        if not int(provider.agent, 16):
            raise ExchangeError(f"{whose} has set no agent key")
        if provider.agent_url is None:
            raise ExchangeError(f"{whose} has published no agent URL")
        try:
            url = check_agent_url(provider.agent_url)
        except AgentUrlInvalid as exc:
            raise ExchangeError(f"{whose} published an agent URL that cannot be used: {exc}") from None
        return cls(offer_id=offer.offer_id, provider=provider.address, agent=provider.agent, url=url)


class OfferTerms(BaseModel):
    """What `createOffer` takes; the GPU count is the number of hashes."""

    model_config = _FROZEN

    gpu_model: str = Field(min_length=1)
    vram_mib: int = Field(ge=1, lt=2**32)  # per GPU
    price_per_second: int = Field(ge=1, lt=2**64)  # token units, whole offer
    min_duration: int = Field(ge=1, lt=2**32)
    max_duration: int = Field(ge=1, lt=2**32)
    region: str
    util_floor_bps: int = Field(ge=0, le=10_000)
    egress: bool = False  # jobs may open outbound network connections when their spec asks; fixed for the offer
    gpu_uuid_hashes: list[bytes] = Field(min_length=1)

    @field_validator("gpu_model", "region")
    @classmethod
    def _fits(cls, value: str, info) -> str:
        pack_text(value, 32 if info.field_name == "gpu_model" else 16)
        return value

    @field_validator("gpu_uuid_hashes")
    @classmethod
    def _bytes32(cls, value: list[bytes]) -> list[bytes]:
        if any(len(h) != 32 for h in value):
            raise ValueError("a GPU UUID hash is 32 bytes")
        return value

    def as_tuple(self) -> tuple:
        """The `OfferTerms` struct as the ABI encodes it."""
        return (
            pack_text(self.gpu_model, 32),
            self.vram_mib,
            self.price_per_second,
            self.min_duration,
            self.max_duration,
            pack_text(self.region, 16),
            self.util_floor_bps,
            self.egress,
            self.gpu_uuid_hashes,
        )


class RentalResult(ActionResult):
    rental: RentalHistory


# ---------------------------------------------------------------------------------------------- the client


class ExchangeClient:
    """One gpuex suite (`deployment`) through `w3`, acting as `wallet`'s account when one is given."""

    def __init__(self, w3: AsyncWeb3, deployment: Deployment, wallet: Wallet | None = None):
        self.w3 = w3
        self.deployment = deployment
        self.wallet = wallet
        self.reader = ChainReader(w3, deployment.registry, deployment.escrow)
        self.registry = self.reader.registry
        self.escrow = self.reader.escrow
        self._tokens: dict[str, TokenInfo] = {}
        self._index: EventIndex | None = None
        self._rental_event_topics = [getattr(self.escrow.events, name).topic for name in RENTAL_EVENT_NAMES]

    @property
    def address(self) -> str:
        if self.wallet is None:
            raise ExchangeError("this action needs an account (a key)")
        return self.wallet.address

    async def token(self, address: str) -> TokenInfo:
        if address not in self._tokens:
            self._tokens[address] = await read_token(self.reader, address)
        return self._tokens[address]

    async def payment_token(self) -> TokenInfo:
        return await self.token(self.deployment.payment_token)

    async def stake_token(self) -> TokenInfo:
        return await self.token(self.deployment.stake_token)

    # ----------------------------------------------------------------------------------------------- reads

    async def market(self) -> EventIndex:
        """The deployment's event index, brought up to the head: the one source of reputations and of a provider's
        rentals. It is kept between calls, so each call reads only the blocks since the last."""
        if self._index is None:
            self._index = EventIndex.for_deployment(self.w3, self.deployment)
        await self._index.sync()
        return self._index

    async def provider(self, address: str | None = None) -> ProviderRecord:
        """The provider's account with its reputation; a provider with no registry event reads the registry's
        zeros and an empty track record."""
        address = AsyncWeb3.to_checksum_address(address or self.address)
        indexed = (await self.market()).provider(address)
        if indexed is None or indexed.record is None:
            return await read_provider(self.reader, address)
        return indexed.record

    async def claimable_rentals(self, address: str | None = None) -> list[RentalHistory]:
        """The provider's live rentals with earnings a claim would credit now, by id."""
        index = await self.market()
        indexed = index.provider(address or self.address)
        rentals = [] if indexed is None else [index.rental(i) for i in indexed.rental_ids]
        return sorted((r for r in rentals if r is not None and r.claimable), key=lambda r: r.rental_id)

    async def offer(self, offer_id: int) -> OfferRecord:
        count = await self.reader.offer_count()
        if not 1 <= offer_id <= count:
            raise NotFound(f"no offer {offer_id} (offers run from 1 to {count})")
        return await read_offer(self.reader, offer_id)

    async def offers(self) -> list[OfferRecord]:
        """Every offer with its provider's reputation, by id (from the event index)."""
        return (await self.market()).offers()

    async def balances(self, address: str | None = None) -> Balances:
        """What `address` (default: the account) can withdraw from the escrow and the registry."""
        return await self.reader.balances(address or self.address)

    async def agent_url(self, address: str | None = None) -> str | None:
        """The agent URL the provider published (`agentUrlOf`) as it stands on chain; None when unset."""
        return await self.reader.agent_url_of(address or self.address)

    async def agent_endpoint_of_offer(self, offer_id: int) -> AgentEndpoint:
        """`AgentEndpoint.of` the offer as the chain has it now; `NotFound` without the offer."""
        return AgentEndpoint.of(await self.offer(offer_id))

    async def agent_missing(self, provider: str, agent: str | None = None) -> str | None:
        """Why nothing would run a rental's job for `provider`: no agent key set on chain; None when it has one
        (whether the agent runs, the chain cannot say). `agent` is its key as already read (else `agentOf`)."""
        if int(agent if agent is not None else await self.reader.agent_of(provider), 16):
            return None
        return (
            f"provider {provider} has set no agent key (`gpuex provider set-agent`): no agent will start its "
            "rentals, which time out unstarted"
        )

    async def agents(self) -> dict[str, str]:
        """Every provider whose agent key is set now, with that key (from `AgentSet` events, checked against
        `agentOf`)."""
        logs = await self._logs(self.registry.address, [self.registry.events.AgentSet.topic])
        providers = sorted(
            {event.provider for entry in logs if isinstance(event := decode_log("ProviderRegistry", entry), AgentSet)}
        )
        keys = await asyncio.gather(*(self.reader.agent_of(provider) for provider in providers))
        return {provider: key for provider, key in zip(providers, keys) if int(key, 16)}

    async def provider_of_agent(self, agent: str) -> str | None:
        """The provider whose telemetry key `agent` is now (from `AgentSet` events, checked against `agentOf`)."""
        agent = AsyncWeb3.to_checksum_address(agent)
        topics = [self.registry.events.AgentSet.topic, None, "0x" + bytes(12).hex() + agent[2:].lower()]
        logs = await self._logs(self.registry.address, topics)
        for entry in reversed(logs):
            event = decode_log("ProviderRegistry", entry)
            if isinstance(event, AgentSet) and await self.reader.agent_of(event.provider) == agent:
                return event.provider
        return None

    async def rental_events(self, rental_id: int) -> list[RentalEvent]:
        """The escrow's events of one rental, in chain order."""
        logs = await self._logs(self.escrow.address, self._rental_topics(rental_id))
        return [event for entry in logs if isinstance(event := decode_log("RentalEscrow", entry), RentalEvent)]

    async def rental(self, rental_id: int) -> RentalHistory:
        """The rental's state and history, from its events and its offer's utilisation floor, with the times of its
        opening and settlement blocks; `NotFound` if it was never opened."""
        if not 0 < rental_id < 2**256:
            raise NotFound(f"no rental {rental_id}")
        events = await self.rental_events(rental_id)
        opened = next((event for event in events if isinstance(event, RentalOpened)), None)
        if opened is None:
            raise NotFound(f"no rental {rental_id}")
        rental = RentalHistory.fold(events, (await self.reader.offer(opened.offer_id)).util_floor_bps)
        assert rental is not None  # its opening is among the events
        settled = rental.settlement
        opened_at, settled_at = await asyncio.gather(
            self.reader.block_time(opened.block_number),
            self.reader.block_time(settled.block_number) if settled is not None else asyncio.sleep(0),
        )
        return rental.model_copy(update={"opened_at": opened_at, "settled_at": settled_at})

    async def watch_rental(self, rental_id: int, poll_seconds: float = 2.0) -> AsyncIterator[RentalEvent]:
        """Every event of the rental, past ones first, then new ones as they are mined, until it is settled. After a
        reorg, the events from the block where the chains part come again as the new chain has them."""
        follower = EventFollower(
            self.w3, [self.escrow.address], self._rental_topics(rental_id), self.deployment.start_block
        )
        while True:
            step = await follower.poll()
            if step is None:
                await asyncio.sleep(poll_seconds)
                continue
            if isinstance(step, LogBatch):
                for entry in step.logs:
                    event = decode_log("RentalEscrow", entry)
                    if not isinstance(event, RentalEvent):
                        continue
                    yield event
                    if isinstance(event, RentalFinalized):
                        return
            follower.commit(step)

    # ------------------------------------------------------------------------------------- provider actions

    async def stake(self, amount: int, approve: bool = False) -> ProviderResult:
        """Adds `amount` of the stake token to the account's stake."""
        sent: list[SentTx] = []
        await self._allowance(sent, await self.stake_token(), self.registry.address, "the registry", amount, approve)
        await self._send(sent, "stake", self.registry.functions.stake(amount))
        return ProviderResult(account=self.address, transactions=sent, provider=await self.provider())

    async def request_unstake(self, amount: int) -> ProviderResult:
        """Starts unbonding `amount` of free stake (which restarts the period for all that is unbonding)."""
        sent: list[SentTx] = []
        await self._send(sent, "requestUnstake", self.registry.functions.requestUnstake(amount))
        return ProviderResult(account=self.address, transactions=sent, provider=await self.provider())

    async def withdraw_unstaked(self) -> ProviderResult:
        sent: list[SentTx] = []
        await self._send(sent, "withdrawUnstaked", self.registry.functions.withdrawUnstaked())
        return ProviderResult(account=self.address, transactions=sent, provider=await self.provider())

    async def set_agent(self, agent: str) -> ProviderResult:
        agent = AsyncWeb3.to_checksum_address(agent)
        sent: list[SentTx] = []
        await self._send(sent, "setAgent", self.registry.functions.setAgent(agent))
        return ProviderResult(account=self.address, transactions=sent, provider=await self.provider())

    async def set_agent_url(self, url: str) -> ProviderResult:
        """Publishes `url` as the base URL of the account's agent API, in the form `check_agent_url` gives it (no
        trailing slash); an empty `url` clears the one published."""
        if url:
            try:
                url = check_agent_url(url)
            except AgentUrlInvalid as exc:
                raise ExchangeError(str(exc)) from None
        sent: list[SentTx] = []
        await self._send(sent, "setAgentUrl", self.registry.functions.setAgentUrl(url))
        return ProviderResult(account=self.address, transactions=sent, provider=await self.provider())

    async def register_gpus(self, uuid_hashes: list[bytes]) -> GpuRegistration:
        """Claims the GPUs the account does not own yet; one it owns already is left alone."""
        owners = await asyncio.gather(*(self.reader.gpu_owner(h) for h in uuid_hashes))
        mine = [h for h, owner in zip(uuid_hashes, owners) if owner == self.address]
        new = [h for h in uuid_hashes if h not in mine]
        sent: list[SentTx] = []
        if new:
            await self._send(sent, "registerGpus", self.registry.functions.registerGpus(new))
        return GpuRegistration(
            account=self.address,
            transactions=sent,
            registered=["0x" + h.hex() for h in new],
            already_registered=["0x" + h.hex() for h in mine],
        )

    async def create_offer(self, terms: OfferTerms) -> OfferResult:
        sent: list[SentTx] = []
        receipt = await self._send(sent, "createOffer", self.registry.functions.createOffer(terms.as_tuple()))
        (created,) = self._emitted(receipt, OfferCreated)
        return OfferResult(account=self.address, transactions=sent, offer=await self.offer(created.offer_id))

    async def update_offer_price(self, offer_id: int, price_per_second: int) -> OfferResult:
        return await self._offer_action(offer_id, "updateOfferPrice", price_per_second)

    async def pause_offer(self, offer_id: int) -> OfferResult:
        return await self._offer_action(offer_id, "pauseOffer")

    async def resume_offer(self, offer_id: int) -> OfferResult:
        return await self._offer_action(offer_id, "resumeOffer")

    async def close_offer(self, offer_id: int) -> OfferResult:
        return await self._offer_action(offer_id, "closeOffer")

    async def _offer_action(self, offer_id: int, function: str, *args: Any) -> OfferResult:
        await self.offer(offer_id)
        sent: list[SentTx] = []
        await self._send(sent, function, getattr(self.registry.functions, function)(offer_id, *args))
        return OfferResult(account=self.address, transactions=sent, offer=await self.offer(offer_id))

    # --------------------------------------------------------------------------------------- renter actions

    async def open_rental(
        self,
        offer_id: int,
        duration: int,
        job_spec_hash: bytes,
        max_price_per_second: int | None = None,
        approve: bool = False,
    ) -> RentalResult:
        """Rents `offer_id` for `duration` seconds at no more than `max_price_per_second` (default: its price now),
        approving exactly the deposit first when `approve` and the allowance falls short."""
        offer = await self.offer(offer_id)
        if offer.status is not OfferStatus.ACTIVE:
            raise ExchangeError(f"offer {offer_id} is {offer.status.name.lower()}")
        if offer.live_rental_id:
            raise ExchangeError(f"offer {offer_id} is rented (rental {offer.live_rental_id})")
        if not offer.min_duration <= duration <= offer.max_duration:
            raise ExchangeError(
                f"offer {offer_id} rents for {offer.min_duration} to {offer.max_duration} s, not {duration} s"
            )
        token = await self.payment_token()
        max_price = offer.price_per_second if max_price_per_second is None else max_price_per_second
        if offer.price_per_second > max_price:
            raise ExchangeError(
                f"offer {offer_id} costs {token.format(offer.price_per_hour)}/h, above the maximum of "
                f"{token.format(max_price * SECONDS_PER_HOUR)}/h"
            )
        deposit = offer.price_per_second * duration
        sent: list[SentTx] = []
        await self._allowance(sent, token, self.escrow.address, "the escrow", deposit, approve)
        receipt = await self._send(
            sent, "openRental", self.escrow.functions.openRental(offer_id, duration, max_price, job_spec_hash)
        )
        (opened,) = self._emitted(receipt, RentalOpened)
        return RentalResult(account=self.address, transactions=sent, rental=await self.rental(opened.rental_id))

    async def terminate(self, rental_id: int) -> RentalResult:
        """Ends the account's rental now: cancels it before the start, else refunds the unused time. `NotYourRental`
        when another account rented it: read from the chain before sending, and named after the escrow's
        `Escrow_NotRenter` should the check and the chain disagree."""
        renter = (await self.rental(rental_id)).renter
        if renter != self.address:
            raise NotYourRental(rental_id, renter, "terminate")
        sent: list[SentTx] = []
        try:
            await self._send(sent, "terminate", self.escrow.functions.terminate(rental_id))
        except TxFailed as exc:
            if str(exc).startswith("Escrow_NotRenter"):
                raise NotYourRental(rental_id, renter, "terminate") from exc
            raise
        return RentalResult(account=self.address, transactions=sent, rental=await self.rental(rental_id))

    async def claim(self, rental_id: int) -> RentalResult:
        """Credits the provider of a running or terminated rental its earnings so far, less the fee (anyone may send
        it); `NothingToClaim` when the reports applied since the last claim earned nothing."""
        rental = await self.rental(rental_id)
        if rental.status not in CLAIMABLE_STATUSES:
            raise NothingToClaim(f"rental {rental_id} is {rental.status.name.lower()}: nothing to claim")
        if not rental.claimable:
            raise NothingToClaim(f"rental {rental_id} has earned nothing since its last claim: nothing to claim")
        sent: list[SentTx] = []
        await self._send(sent, "claim", self.escrow.functions.claimPayout(rental_id))
        return RentalResult(account=self.address, transactions=sent, rental=await self.rental(rental_id))

    async def withdraw(self) -> Withdrawal:
        """Withdraws the account's escrow balance and its slash compensation; `NothingToWithdraw`, with nothing
        sent, when there is neither."""
        balances = await self.balances()
        if not balances.escrow and not balances.compensation:
            raise NothingToWithdraw(f"nothing to withdraw: {self.address} has no escrow balance and no compensation")
        sent: list[SentTx] = []
        if balances.escrow:
            await self._send(sent, "withdraw", self.escrow.functions.withdraw())
        if balances.compensation:
            await self._send(sent, "withdrawCompensation", self.registry.functions.withdrawCompensation())
        return Withdrawal(
            account=self.address,
            transactions=sent,
            escrow_amount=balances.escrow,
            compensation=balances.compensation,
        )

    async def claim_faucet(self) -> FaucetClaim:
        """Claims the test payment token's faucet; refused for a deployment whose payment token is a real one."""
        if not self.deployment.test_token:
            raise ExchangeError(
                f"the payment token {self.deployment.payment_token} is not the test token: it has no faucet"
            )
        token = contract(self.w3, "TestStablecoin", self.deployment.payment_token)
        before = await self.reader.token_balance(token.address, self.address)
        sent: list[SentTx] = []
        await self._send(sent, "faucet", token.functions.faucet())
        after = await self.reader.token_balance(token.address, self.address)
        return FaucetClaim(account=self.address, transactions=sent, amount=after - before, balance=after)

    # ------------------------------------------------------------------------------------------- internals

    async def _send(self, sent: list[SentTx], action: str, call: Any) -> Sent:
        """Sends `call` (the contract function `action`) and records it in `sent`; returns the receipt."""
        if self.wallet is None:
            raise ExchangeError("this action needs an account (a key)")
        receipt = await self.wallet.transact(call)
        sent.append(
            SentTx(action=action, tx_hash=receipt.tx_hash, block_number=receipt.block_number, gas_used=receipt.gas_used)
        )
        return receipt

    async def _allowance(
        self, sent: list[SentTx], token: TokenInfo, spender: str, spender_name: str, needed: int, approve: bool
    ) -> None:
        """Checks that the account holds `needed` and allows `spender` to take it; with `approve`, approves exactly
        `needed` when the allowance falls short."""
        balance, allowance = await asyncio.gather(
            self.reader.token_balance(token.address, self.address),
            self.reader.token_allowance(token.address, self.address, spender),
        )
        if balance < needed:
            raise InsufficientFunds(
                f"insufficient balance: {token.format(balance)} held, {token.format(needed)} needed"
            )
        if allowance >= needed:
            return
        if not approve:
            raise InsufficientAllowance(token, spender_name, allowance, needed)
        erc20 = contract(self.w3, "IERC20", token.address)
        await self._send(sent, "approve", erc20.functions.approve(spender, needed))

    def _rental_topics(self, rental_id: int) -> list:
        return [self._rental_event_topics, "0x" + rental_id.to_bytes(32, "big").hex()]

    async def _logs(self, address: str, topics: list) -> list:
        """The logs of `address` matching `topics` from the deployment's start block to the head, in chain order."""
        logs: list = []

        async def on_logs(batch: LogBatch) -> None:
            logs.extend(batch.logs)

        async def on_rewind(rewind: Rewind) -> None:
            logs[:] = [entry for entry in logs if entry["blockNumber"] < rewind.next_block]

        await EventFollower(self.w3, [address], topics, self.deployment.start_block).sync(on_logs, on_rewind)
        return logs

    def _emitted(self, receipt: Sent, record: type[E]) -> list[E]:
        """The `record` events that the registry and the escrow emitted in the transaction."""
        contract_names = {self.registry.address: "ProviderRegistry", self.escrow.address: "RentalEscrow"}
        events = []
        for entry in receipt.logs:
            name = contract_names.get(AsyncWeb3.to_checksum_address(entry["address"]))
            event = None if name is None else decode_log(name, entry)
            if isinstance(event, record):
                events.append(event)
        return events
