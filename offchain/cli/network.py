"""The network a command acts on: the RPC, the suite's deployment record and, with a key, the acting account.

Resolution, first match wins:

1. `--network` / `GPUEX_NETWORK`: `devnet` (the devnet in `--state-dir`), or a network name or chain id with a
   record in `deployments/`; a live network also needs `--rpc-url` / `GPUEX_RPC_URL`;
2. `--rpc-url` / `GPUEX_RPC_URL` alone: the record of the chain that RPC serves;
3. neither: the devnet, when `--state-dir` (`GPUEX_DEVNET_DIR`, default `./gpuex-devnet`) holds one.

Each of the three settings the selected profile holds (`offchain.cli.profiles`) stands in for its flag and variable
when neither is given. The RPC's chain id must be the record's.
"""

from __future__ import annotations

import argparse
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator

from web3 import AsyncWeb3
from web3.exceptions import Web3Exception

from offchain.chain import deployments
from offchain.chain.deployments import Deployment
from offchain.chain.rpc import ChainUnreachable, connect
from offchain.chain.tx.oneshot import Wallet
from offchain.cli import profiles
from offchain.cli.args import NETWORK_ENV, RPC_URL_ENV, UsageError
from offchain.cli.keys import load_account
from offchain.cli.profiles import Profile
from offchain.market.exchange import ExchangeClient
from offchain.ops.devnet import DevnetState, read_state

DEVNET = "devnet"


def devnet_dir(args: argparse.Namespace, profile: Profile | None = None) -> Path:
    """The devnet's state directory: `--state-dir`, `GPUEX_DEVNET_DIR`, the profile's `state_dir` or
    `./gpuex-devnet`."""
    return Path(profiles.resolve(args, "state_dir", profile).value).resolve()


@dataclass
class Context:
    """A command's resolved network: the RPC connection, the suite's record and, with a key, the acting account."""

    rpc_url: str
    deployment: Deployment
    w3: AsyncWeb3
    client: ExchangeClient
    devnet: DevnetState | None
    devnet_dir: Path
    profile: Profile

    @property
    def network(self) -> str:
        return DEVNET if self.devnet is not None else self.deployment.network


async def _chain_id(w3: AsyncWeb3, rpc_url: str, devnet: DevnetState | None) -> int:
    """The RPC's chain id; `ChainUnreachable` naming the RPC when it does not answer as a node."""
    try:
        return await w3.eth.chain_id
    except (ChainUnreachable, Web3Exception) as exc:
        hint = " (is the devnet up? see `gpuex devnet status`)" if devnet is not None else ""
        cause = exc.__cause__ if isinstance(exc, ChainUnreachable) and exc.__cause__ is not None else exc
        raise ChainUnreachable(f"cannot reach the RPC at {rpc_url}: {cause}{hint}") from None


@asynccontextmanager
async def open_context(args: argparse.Namespace, *, key: bool) -> AsyncIterator[Context]:
    """Resolves the network (see the module's docstring), checks the RPC serves the record's chain and, with
    `key`, loads the acting account; closes the connection on the way out."""
    profile = profiles.selected(args)
    network = profiles.resolve(args, "network", profile).value
    rpc_url = profiles.resolve(args, "rpc_url", profile).value
    state_dir = devnet_dir(args, profile)
    account = load_account(profile) if key else None
    devnet = None
    deployment: Deployment | None = None
    if network is None and rpc_url is None:
        if read_state(state_dir) is None:
            raise UsageError(
                f"no network: pass --network and --rpc-url (or set {NETWORK_ENV} and {RPC_URL_ENV}, or a profile's "
                f"network and rpc_url, see `gpuex config show`), or start a local one with `gpuex devnet up`"
            )
        network = DEVNET
    if network == DEVNET:
        devnet = read_state(state_dir)
        if devnet is None:
            raise UsageError(f"no devnet in {state_dir}: run `gpuex devnet up` (or pass --state-dir)")
        deployment = devnet.deployment
        rpc_url = rpc_url or devnet.rpc_url
    elif network is not None:
        try:
            deployment = deployments.find(network)
        except deployments.DeploymentNotFound as exc:
            raise UsageError(str(exc)) from None
        if rpc_url is None:
            raise UsageError(f"no RPC URL for network {network}: pass --rpc-url or set {RPC_URL_ENV}")
    assert rpc_url is not None
    w3 = connect(rpc_url)
    try:
        chain_id = await _chain_id(w3, rpc_url, devnet)
        if deployment is None:
            try:
                deployment = deployments.load(chain_id)
            except deployments.DeploymentNotFound as exc:
                raise UsageError(f"{exc}, the chain of {rpc_url}") from None
        elif chain_id != deployment.chain_id:
            raise UsageError(
                f"wrong network: the RPC at {rpc_url} serves chain {chain_id}, but the "
                f"{deployment.network} deployment is on chain {deployment.chain_id}"
            )
        wallet = Wallet(w3, account) if account is not None else None
        yield Context(
            rpc_url=rpc_url,
            deployment=deployment,
            w3=w3,
            client=ExchangeClient(w3, deployment, wallet),
            devnet=devnet,
            devnet_dir=state_dir,
            profile=profile,
        )
    finally:
        await w3.provider.disconnect()
