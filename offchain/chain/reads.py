"""The one read layer over the gpuex contracts: every view the off-chain code calls, returned as a named, typed
record or a plain value.

A struct or a multi-value return is decoded by the field names of the contract's ABI (Brownie's build artifact),
never by position: each record lists its fields in snake case, with the ABI's name as alias where the two differ
by more than case. A record built from a return whose names do not match its fields exactly (a field renamed,
added or dropped in the contract) fails with `AbiMismatch` naming them, so a struct reordered or reshaped for gas
cannot be read wrongly without notice.

Every request goes through `rpc.reach`: a node that does not answer raises `ChainUnreachable`, a revert passes
through as web3's `ContractLogicError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from web3 import AsyncWeb3
from web3.contract import AsyncContract
from web3.types import BlockIdentifier

from offchain.chain.contracts import contract
from offchain.chain.rpc import connect, reach
from offchain.protocol.status import OfferStatus, RentalStatus

ZERO_ADDRESS = "0x" + "00" * 20

R = TypeVar("R", bound="ChainRecord")
T = TypeVar("T")


class AbiMismatch(TypeError):
    """A contract's return values do not have the names its record expects: the contract and the record disagree."""


class ChainRecord(BaseModel):
    """A typed record of what one contract view returned, built by the ABI's field names."""

    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)

    @classmethod
    def from_returned(cls: type[R], outputs: Sequence[dict[str, Any]], values: Any) -> R:
        """The record of `values` as a view with ABI `outputs` returned them: one struct (a tuple output with
        components) or several named values."""
        if len(outputs) == 1 and outputs[0]["type"] == "tuple":
            outputs, values = outputs[0]["components"], values
        elif len(outputs) == 1:
            values = (values,)
        names = [output["name"] for output in outputs]
        expected = {field.alias or name for name, field in cls.model_fields.items()}
        if set(names) != expected or len(names) != len(values):
            raise AbiMismatch(f"{cls.__name__} expects {sorted(expected)}, the contract returns {names}")
        return cls.model_validate(dict(zip(names, values)))


class Rental(ChainRecord):
    """`RentalEscrow.getRental`. A rental id never opened, or one a later rental of its offer replaced, reads
    status `NONE` and zeros."""

    status: RentalStatus
    renter: str
    price_per_second: int
    duration: int  # seconds; shortened by a termination
    since: int  # opening time while Open, start time once started
    util_floor_bps: int
    fee_bps: int
    last_seq: int
    covered_seconds: int  # seconds after `since` the applied totals cover, clamped to the rental's end
    delivered_seconds: int  # applied total
    util_seconds: int  # applied total: delivered seconds weighted by utilisation
    earned: int  # gross earnings of the applied totals, before the protocol fee
    claimed: int  # of `earned`, what the provider already claimed while the rental ran

    @property
    def is_live(self) -> bool:
        return self.status.is_live

    @property
    def covered_until(self) -> int:
        """Up to when the chain's applied totals cover the rental (clamped to its end)."""
        return self.since + self.covered_seconds

    @property
    def claimable(self) -> int:
        """Gross earnings a claim would credit now (provider payout plus fee)."""
        return self.earned - self.claimed

    @property
    def end(self) -> int:
        return self.since + self.duration


class Offer(ChainRecord):
    """`ProviderRegistry.getOffer`: an offer's terms and state. `gpu_model` and `region` are the padded bytes the
    registry stores; `offchain.market.offers.unpack_text` turns them into text."""

    provider: str
    gpu_count: int
    util_floor_bps: int
    status: OfferStatus
    min_duration: int
    egress: bool
    price_per_second: int  # token units, whole offer
    max_duration: int
    vram_mib: int = Field(alias="vramMiB")  # per GPU
    region: bytes
    gpu_model: bytes
    gpu_uuid_hashes: tuple[bytes, ...]


class Provider(ChainRecord):
    """`ProviderRegistry.getProvider`: a provider's stake and the reputation counters the registry keeps."""

    staked: int
    locked: int
    unbonding: int
    unbonding_ends_at: int
    rentals_completed: int
    slashes: int
    declines: int  # rentals the provider declined before the start (refunded in full, nothing slashed)
    seconds_delivered: int
    seconds_missed: int
    agent: str  # the zero address when none is set


class OracleSet(ChainRecord):
    """`RentalEscrow.oracleSet`: the signers of report batches under `version`, `threshold` of whom must sign."""

    version: int
    signers: tuple[str, ...]
    threshold: int


class UpcomingOracleSet(ChainRecord):
    """`RentalEscrow.upcomingOracleSet`: the oracle set the owner scheduled, which anyone can activate from
    `effective_at` on; `effective_at` is 0 when none is scheduled."""

    signers: tuple[str, ...]
    threshold: int
    effective_at: int


class FeeConfig(ChainRecord):
    """`RentalEscrow.feeConfig`: the fee of rentals opened now and the account fees are credited to."""

    fee_bps: int
    treasury: str


class SuiteParameters(BaseModel):
    """The protocol parameters a registry and escrow pair were deployed with (none changes later). Each is read
    from the view named as the field in camel case: of the registry for `REGISTRY_VIEWS`, else of the escrow."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    REGISTRY_VIEWS: ClassVar[frozenset[str]] = frozenset({"min_stake_per_gpu", "unbonding_period"})

    min_stake_per_gpu: int
    unbonding_period: int
    fee_cap_bps: int
    start_timeout: int
    report_grace: int
    sla_bps: int
    sla_slash_bps: int
    start_slash_bps: int
    governance_delay: int  # seconds an announced oracle set waits before it can take effect


class SuiteSettings(BaseModel):
    """How a registry and escrow pair are wired and governed, read at one block: what a deployment record must
    agree with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    registry_escrow: str  # the escrow the registry was bound to at construction
    escrow_registry: str  # the registry the escrow was built against
    payment_token: str
    stake_token: str
    owner: str  # the account that governs the escrow (oracle set, fee, treasury)
    parameters: SuiteParameters


class Balances(BaseModel):
    """What an account can withdraw: `escrow` (earnings, refunds and fees, payment token) and `compensation`
    (slashed stake credited to it as a renter, stake token)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    escrow: int
    compensation: int


class TokenMetadata(BaseModel):
    """An ERC-20 token's symbol and decimals."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str
    symbol: str
    decimals: int


class ChainReader:
    """The views of one registry and escrow (and the ERC-20 tokens around them) through `w3`. Every method takes
    an optional `block` to read at (default: the latest)."""

    RECORD_VIEWS: ClassVar[dict[type[ChainRecord], tuple[str, str]]] = {
        Rental: ("RentalEscrow", "getRental"),
        Offer: ("ProviderRegistry", "getOffer"),
        Provider: ("ProviderRegistry", "getProvider"),
        OracleSet: ("RentalEscrow", "oracleSet"),
        UpcomingOracleSet: ("RentalEscrow", "upcomingOracleSet"),
        FeeConfig: ("RentalEscrow", "feeConfig"),
    }

    def __init__(self, w3: AsyncWeb3[Any], registry: str, escrow: str) -> None:
        self.w3 = w3
        self.registry: AsyncContract = contract(w3, "ProviderRegistry", registry)
        self.escrow: AsyncContract = contract(w3, "RentalEscrow", escrow)

    # --------------------------------------------------------------------------------------------- records

    async def rental(self, rental_id: int, block: BlockIdentifier = "latest") -> Rental:
        return await self._record(Rental, self.escrow.functions.getRental(rental_id), block)

    async def offer(self, offer_id: int, block: BlockIdentifier = "latest") -> Offer:
        """Reverts with `Registry_UnknownOffer` for an id never listed."""
        return await self._record(Offer, self.registry.functions.getOffer(offer_id), block)

    async def provider(self, address: str, block: BlockIdentifier = "latest") -> Provider:
        return await self._record(Provider, self.registry.functions.getProvider(_address(address)), block)

    async def oracle_set(self, block: BlockIdentifier = "latest") -> OracleSet:
        return await self._record(OracleSet, self.escrow.functions.oracleSet(), block)

    async def upcoming_oracle_set(self, block: BlockIdentifier = "latest") -> UpcomingOracleSet:
        return await self._record(UpcomingOracleSet, self.escrow.functions.upcomingOracleSet(), block)

    async def fee_config(self, block: BlockIdentifier = "latest") -> FeeConfig:
        return await self._record(FeeConfig, self.escrow.functions.feeConfig(), block)

    async def suite_settings(self, block: BlockIdentifier = "latest") -> SuiteSettings:
        """How the registry and the escrow are wired and governed, read at `block`."""
        registry, escrow = self.registry.functions, self.escrow.functions
        names = list(SuiteParameters.model_fields)
        views = [
            registry.escrow(),
            escrow.registry(),
            escrow.paymentToken(),
            registry.stakeToken(),
            escrow.owner(),
            *(
                getattr(registry if name in SuiteParameters.REGISTRY_VIEWS else escrow, to_camel(name))()
                for name in names
            ),
        ]
        values = await asyncio.gather(*(self._value(view, block) for view in views))
        return SuiteSettings(
            registry_escrow=values[0],
            escrow_registry=values[1],
            payment_token=values[2],
            stake_token=values[3],
            owner=values[4],
            parameters=SuiteParameters.model_validate(dict(zip(names, values[5:]))),
        )

    async def balances(self, account: str, block: BlockIdentifier = "latest") -> Balances:
        """What `account` can withdraw from the escrow and from the registry."""
        escrow, compensation = await asyncio.gather(
            self._value(self.escrow.functions.balanceOf(_address(account)), block),
            self._value(self.registry.functions.compensationOf(_address(account)), block),
        )
        return Balances(escrow=escrow, compensation=compensation)

    # ------------------------------------------------------------------------------------------- values

    async def start_timeout(self, block: BlockIdentifier = "latest") -> int:
        """Seconds an opened rental may wait for its start before anyone may time it out (also in
        `suite_settings`)."""
        return int(await self._value(self.escrow.functions.startTimeout(), block))

    async def report_grace(self, block: BlockIdentifier = "latest") -> int:
        """Seconds after a rental's end that its last reports may still land (also in `suite_settings`)."""
        return int(await self._value(self.escrow.functions.reportGrace(), block))

    async def block_time(self, block: BlockIdentifier = "latest") -> int:
        """The timestamp of `block`: the chain's clock, which rentals, reports and delays run on."""
        header = await reach(self.w3.eth.get_block(block))
        return int(header["timestamp"])

    async def offer_count(self, block: BlockIdentifier = "latest") -> int:
        return int(await self._value(self.registry.functions.offerCount(), block))

    async def live_rental_of(self, offer_id: int, block: BlockIdentifier = "latest") -> int:
        """The rental holding the offer; 0 when it is free."""
        return int(await self._value(self.escrow.functions.liveRentalOf(offer_id), block))

    async def collateral_of(self, offer_id: int, block: BlockIdentifier = "latest") -> int:
        """Stake one rental of the offer locks (stake token units)."""
        return int(await self._value(self.registry.functions.collateralOf(offer_id), block))

    async def agent_of(self, provider: str, block: BlockIdentifier = "latest") -> str:
        """The provider's telemetry key; the zero address when none is set."""
        return str(await self._value(self.registry.functions.agentOf(_address(provider)), block))

    async def agent_url_of(self, provider: str, block: BlockIdentifier = "latest") -> str | None:
        """The agent URL the provider published, as it stands on chain; None when unset."""
        return str(await self._value(self.registry.functions.agentUrlOf(_address(provider)), block)) or None

    async def gpu_owner(self, uuid_hash: bytes, block: BlockIdentifier = "latest") -> str:
        """The provider that registered the GPU; the zero address for one nobody registered."""
        return str(await self._value(self.registry.functions.gpuOwner(uuid_hash), block))

    # -------------------------------------------------------------------------------------------- tokens

    async def token_metadata(self, token: str) -> TokenMetadata:
        erc20 = contract(self.w3, "IERC20Metadata", token)
        symbol, decimals = await asyncio.gather(
            self._value(erc20.functions.symbol(), "latest"), self._value(erc20.functions.decimals(), "latest")
        )
        return TokenMetadata(address=erc20.address, symbol=symbol, decimals=decimals)

    async def token_balance(self, token: str, account: str, block: BlockIdentifier = "latest") -> int:
        erc20 = contract(self.w3, "IERC20", token)
        return int(await self._value(erc20.functions.balanceOf(_address(account)), block))

    async def token_allowance(self, token: str, owner: str, spender: str, block: BlockIdentifier = "latest") -> int:
        erc20 = contract(self.w3, "IERC20", token)
        return int(await self._value(erc20.functions.allowance(_address(owner), _address(spender)), block))

    # ----------------------------------------------------------------------------------------- internals

    @staticmethod
    async def _value(function: Any, block: BlockIdentifier) -> Any:
        return await reach(function.call(block_identifier=block))

    async def _record(self, record: type[R], function: Any, block: BlockIdentifier) -> R:
        return record.from_returned(function.abi["outputs"], await self._value(function, block))


def read_once(rpc_url: str, registry: str, escrow: str, call: Callable[[ChainReader], Awaitable[T]]) -> T:
    """What `call` returns from a `ChainReader` over a connection of its own to `rpc_url`, closed afterwards: the
    read layer for synchronous code (Brownie scripts and tests). It runs an event loop, so not from inside one."""

    async def read() -> T:
        w3 = connect(rpc_url)
        try:
            return await call(ChainReader(w3, registry, escrow))
        finally:
            await w3.provider.disconnect()

    return asyncio.run(read())


def _address(address: str) -> str:
    return AsyncWeb3.to_checksum_address(address)
