"""Deploying a gpuex suite to any chain, idempotently: the routine behind `scripts/deploy.py` (Brownie live
networks such as sepolia) and `gpuex devnet up`.

A run reads `deployments/<chainId>.json`. Without a record it deploys the payment token (unless one is given or
recorded), the registry, bound to the escrow address predicted from the deployer's nonce, and the escrow with its
first oracle set, and writes the record. With a record it checks that the recorded contracts are there, bound to
each other and built with the recorded immutable parameters, then brings what governance may change (oracle set,
fee, treasury) to what was asked, sending only the calls that change something. An oracle set change is scheduled
by one run and activated by a run after the escrow's governance delay. A dry run prints the same plan and its gas
estimates and sends nothing.

If a run stops between the registry and the escrow, the record is not written; the next run deploys a new pair
(the orphaned registry is bound to an address nobody can deploy to any more, so it can never take stake).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable, Sequence

from pydantic import BaseModel, ConfigDict, Field, model_validator
from web3 import AsyncWeb3

from offchain.chain import deployments
from offchain.chain.deployments import Deployment, SuiteConfig, create_address
from offchain.chain.reads import ChainReader
from offchain.chain.tx.oneshot import Sent, Wallet

USDC = 10**6


@dataclass(frozen=True)
class SuiteParams:
    """Protocol parameters fixed at deployment (fee is the only one governance may change later)."""

    min_stake_per_gpu: int = 100 * USDC
    unbonding_period: int = 7 * 24 * 3600
    fee_bps: int = 250
    fee_cap_bps: int = 1_000
    start_timeout: int = 600
    report_grace: int = 300
    sla_bps: int = 9_500
    sla_slash_bps: int = 2_000
    start_slash_bps: int = 1_000
    governance_delay: int = 2 * 24 * 3600  # an oracle set change waits this long after its announcement


def registry_args(params: SuiteParams, stake_token: str, escrow: str) -> tuple:
    """`ProviderRegistry`'s constructor arguments."""
    return (stake_token, escrow, params.min_stake_per_gpu, params.unbonding_period)


def escrow_args(
    params: SuiteParams,
    payment_token: str,
    registry: str,
    owner: str,
    treasury: str,
    oracles: Sequence[str],
    threshold: int,
) -> tuple:
    """`RentalEscrow`'s constructor argument (one `Params` struct), with the oracle set it starts with."""
    return (
        (
            payment_token,
            registry,
            owner,
            treasury,
            params.fee_bps,
            params.fee_cap_bps,
            params.start_timeout,
            params.report_grace,
            params.sla_bps,
            params.sla_slash_bps,
            params.start_slash_bps,
            params.governance_delay,
            list(oracles),
            threshold,
        ),
    )


class DeployError(RuntimeError):
    """The chain holds something other than the record says, or the request cannot be carried out."""


class DeployRequest(BaseModel):
    """What a deployment should look like once the run is over."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    network: str
    treasury: str
    oracles: list[str] = Field(min_length=1)
    threshold: int = Field(ge=1)
    payment_token: str | None = None  # None: reuse the recorded one, else deploy a TestStablecoin
    stake_token: str | None = None  # None: the payment token
    params: SuiteParams = SuiteParams()

    @model_validator(mode="after")
    def _reachable_threshold(self) -> "DeployRequest":
        if self.threshold > len(self.oracles):
            raise ValueError(f"threshold {self.threshold} exceeds the {len(self.oracles)} oracles")
        return self


async def deploy(
    w3: AsyncWeb3, wallet: Wallet, request: DeployRequest, dry_run: bool = False, say: Callable[[str], None] = print
) -> Deployment | None:
    """Deploys or reconciles the suite of `request` on `w3`'s chain; returns the record (None on a dry run)."""
    chain_id = await w3.eth.chain_id
    try:
        recorded = deployments.load(chain_id)
    except deployments.DeploymentNotFound:
        recorded = None
    balance = await w3.eth.get_balance(wallet.address)
    say(f"chain {chain_id} ({request.network}), deployer {wallet.address}, balance {balance / 10**18:.6f} ETH")
    if recorded is None:
        return await _deploy_fresh(w3, wallet, request, chain_id, dry_run, say)
    say(f"found {deployments.record_path(chain_id)}: checking it against the chain")
    await verify(w3, recorded, request)
    return await _reconcile(w3, wallet, recorded, request, dry_run, say)


async def _deploy_fresh(
    w3: AsyncWeb3, wallet: Wallet, request: DeployRequest, chain_id: int, dry_run: bool, say: Callable[[str], None]
) -> Deployment | None:
    params = request.params
    payment_token = request.payment_token
    test_token = payment_token is None
    if dry_run:
        await _plan_fresh(w3, wallet, request, chain_id, say)
        return None
    if payment_token is None:
        payment_token = _deployed_address(await wallet.deploy("TestStablecoin", wallet.address), "TestStablecoin")
        say(f"deployed TestStablecoin at {payment_token}")
    stake_token = request.stake_token or payment_token
    nonce = await w3.eth.get_transaction_count(wallet.address, "pending")
    escrow_address = create_address(wallet.address, nonce + 1)
    registry = await wallet.deploy("ProviderRegistry", *registry_args(params, stake_token, escrow_address))
    registry_address = _deployed_address(registry, "ProviderRegistry")
    say(f"deployed ProviderRegistry at {registry_address} (block {registry.block_number})")
    escrow = await wallet.deploy(
        "RentalEscrow",
        *escrow_args(
            params,
            payment_token,
            registry_address,
            wallet.address,
            request.treasury,
            request.oracles,
            request.threshold,
        ),
    )
    if escrow.contract_address != escrow_address:
        raise DeployError(
            f"escrow landed at {escrow.contract_address}, not the predicted {escrow_address}: "
            "another transaction from the deployer got in between; run again"
        )
    say(f"deployed RentalEscrow at {escrow.contract_address}, oracle set {request.threshold} of {len(request.oracles)}")
    record = Deployment(
        chain_id=chain_id,
        network=request.network,
        deployer=wallet.address,
        registry=registry_address,
        escrow=escrow.contract_address,
        payment_token=payment_token,
        stake_token=stake_token,
        test_token=test_token,
        start_block=registry.block_number,
        config=_config(params, request),
    )
    say(f"wrote {deployments.save(record)}")
    return record


async def _plan_fresh(
    w3: AsyncWeb3, wallet: Wallet, request: DeployRequest, chain_id: int, say: Callable[[str], None]
) -> None:
    """Prints what a fresh deployment would send, with the gas of what can be estimated before it exists."""
    nonce: int = await w3.eth.get_transaction_count(wallet.address)
    placeholder = wallet.address  # stands in for addresses that do not exist yet; gas barely depends on them
    total = 0
    if request.payment_token is None:
        gas = await wallet.estimate(wallet.constructor("TestStablecoin", wallet.address))
        total += gas
        say(f"[dry run] would deploy TestStablecoin, the payment token with a faucet (gas {gas:,})")
        nonce += 1
    escrow_address = create_address(wallet.address, nonce + 1)
    gas = await wallet.estimate(
        wallet.constructor(
            "ProviderRegistry", *registry_args(request.params, request.stake_token or placeholder, escrow_address)
        )
    )
    total += gas
    say(f"[dry run] would deploy ProviderRegistry bound to the escrow predicted at {escrow_address} (gas {gas:,})")
    say(
        f"[dry run] would deploy RentalEscrow with the oracle set {request.oracles}, {request.threshold} of "
        f"{len(request.oracles)} (its constructor checks the registry, so it is estimated only then)"
    )
    say(f"[dry run] would write {deployments.record_path(chain_id)}")
    gas_price = await w3.eth.gas_price
    say(f"[dry run] estimated so far: {total:,} gas, {total * gas_price / 10**18:.6f} ETH at the current gas price")


def _deployed_address(sent: Sent, name: str) -> str:
    """The address of the contract `name` whose deployment `sent` is; `DeployError` if its receipt names none."""
    if sent.contract_address is None:
        raise DeployError(f"the receipt of the {name} deployment {sent.tx_hash} names no contract address")
    return sent.contract_address


def _config(params: SuiteParams, request: DeployRequest) -> SuiteConfig:
    values = {f.name: getattr(params, f.name) for f in fields(params)}
    return SuiteConfig(
        **values,
        treasury=AsyncWeb3.to_checksum_address(request.treasury),
        oracles=[AsyncWeb3.to_checksum_address(o) for o in request.oracles],
        threshold=request.threshold,
    )


async def verify(w3: AsyncWeb3, record: Deployment, request: DeployRequest | None = None) -> None:
    """Raises `DeployError` unless the recorded contracts exist, point at each other and at the recorded tokens,
    and carry the recorded immutable parameters (and, if given, the ones `request` asks for)."""
    for name, address in (
        ("registry", record.registry),
        ("escrow", record.escrow),
        ("payment token", record.payment_token),
    ):
        if not await w3.eth.get_code(AsyncWeb3.to_checksum_address(address)):
            raise DeployError(
                f"the recorded {name} {address} has no code on chain {record.chain_id}: "
                f"the chain was reset; delete {deployments.record_path(record.chain_id)} to redeploy"
            )
    reader = ChainReader(w3, record.registry, record.escrow)
    settings = await reader.suite_settings()
    on_chain = {
        "registry.escrow": (settings.registry_escrow, record.escrow),
        "escrow.registry": (settings.escrow_registry, record.registry),
        "escrow.paymentToken": (settings.payment_token, record.payment_token),
        "registry.stakeToken": (settings.stake_token, record.stake_token),
        **{name: (value, getattr(record.config, name)) for name, value in settings.parameters},
    }
    for what, (actual, expected) in on_chain.items():
        if actual != expected:
            raise DeployError(f"{what} is {actual} on chain but {expected} in the record")
    if request is None:
        return
    if request.payment_token and AsyncWeb3.to_checksum_address(request.payment_token) != record.payment_token:
        raise DeployError(
            f"payment token {request.payment_token} asked, {record.payment_token} deployed; "
            "a suite's token cannot change: deploy a new suite on a fresh record"
        )
    for f in fields(request.params):
        if f.name == "fee_bps":
            continue
        asked, recorded = getattr(request.params, f.name), getattr(record.config, f.name)
        if asked != recorded:
            raise DeployError(
                f"{f.name} {asked} asked but the suite was deployed with {recorded}; "
                "it is immutable: deploy a new suite on a fresh record"
            )


async def _oracle_set_call(
    reader: ChainReader, oracles: Sequence[str], threshold: int, say: Callable[[str], None]
) -> tuple[str, Any]:
    """The call that moves the escrow toward the oracle set asked for: its schedule, or the activation of that
    schedule once its governance delay has passed (None while the delay runs)."""
    upcoming = await reader.upcoming_oracle_set()
    escrow = reader.escrow
    if upcoming.effective_at and list(upcoming.signers) == oracles and upcoming.threshold == threshold:
        now = await reader.block_time()
        if now < upcoming.effective_at:
            say(
                f"the oracle set {oracles}, {threshold} of {len(oracles)}, is announced and takes effect at "
                f"{upcoming.effective_at} (in {upcoming.effective_at - now} s): run again then to activate it"
            )
            return ("activateOracleSet()", None)
        return ("activateOracleSet()", escrow.functions.activateOracleSet())
    return (f"scheduleOracleSet({oracles}, {threshold})", escrow.functions.scheduleOracleSet(oracles, threshold))


async def _reconcile(
    w3: AsyncWeb3, wallet: Wallet, record: Deployment, request: DeployRequest, dry_run: bool, say: Callable[[str], None]
) -> Deployment | None:
    """Sends the governance calls that bring the oracle set, fee and treasury to what `request` asks."""
    reader = ChainReader(w3, record.registry, record.escrow)
    escrow = reader.escrow
    oracle_set, fee = await reader.oracle_set(), await reader.fee_config()
    oracles = [AsyncWeb3.to_checksum_address(o) for o in request.oracles]
    wanted_treasury = AsyncWeb3.to_checksum_address(request.treasury)
    calls: list[tuple[str, Any]] = []
    if list(oracle_set.signers) != oracles or oracle_set.threshold != request.threshold:
        calls.append(await _oracle_set_call(reader, oracles, request.threshold, say))
    if fee.fee_bps != request.params.fee_bps:
        calls.append((f"setFee({request.params.fee_bps})", escrow.functions.setFee(request.params.fee_bps)))
    if fee.treasury != wanted_treasury:
        calls.append((f"setTreasury({wanted_treasury})", escrow.functions.setTreasury(wanted_treasury)))
    if not calls:
        say("the deployed suite already matches: nothing to send")
    elif any(call is not None for _, call in calls):
        owner = (await reader.suite_settings()).owner
        if owner != wallet.address:
            raise DeployError(
                f"the escrow's owner is {owner}, not the deployer {wallet.address}: "
                f"cannot send {', '.join(what for what, _ in calls)}"
            )
    for what, call in calls:
        if call is None:
            continue
        if dry_run:
            say(f"[dry run] would send {what} (gas {await wallet.estimate(call):,})")
        else:
            await wallet.transact(call)
            say(f"sent {what}")
    if dry_run:
        return None
    # The record says what the chain holds: a scheduled oracle set is recorded once it is active.
    oracle_set = await reader.oracle_set()
    config = _config(request.params, request).model_copy(
        update={"oracles": list(oracle_set.signers), "threshold": oracle_set.threshold}
    )
    updated = record.model_copy(update={"config": config})
    if updated != record:
        say(f"wrote {deployments.save(updated)}")
    return updated
