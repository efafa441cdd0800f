"""Who signs a transaction: a key held here, or an account unlocked on the node. Either way the raw signed
transaction comes back, so it can be stored before it is broadcast."""

from __future__ import annotations

from typing import Any, Protocol

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from eth_utils import is_address, to_checksum_address
from hexbytes import HexBytes
from pydantic import SecretStr
from web3 import AsyncWeb3
from web3.exceptions import Web3RPCError


class Signer(Protocol):
    @property
    def address(self) -> ChecksumAddress: ...

    async def sign(self, tx: dict[str, Any]) -> bytes: ...


class LocalSigner:
    """Signs with a private key held in this process."""

    def __init__(self, account: LocalAccount):
        self.address = account.address
        self._account = account

    async def sign(self, tx: dict[str, Any]) -> bytes:
        return bytes(self._account.sign_transaction(tx).raw_transaction)


class NodeSigner:
    """An account unlocked on the node (dev chains only), which signs with `eth_signTransaction`."""

    def __init__(self, w3: AsyncWeb3[Any], address: ChecksumAddress):
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


def make_signer(w3: AsyncWeb3[Any], account_or_address: LocalAccount | SecretStr | str) -> Signer:
    """A `LocalSigner` for an account or a `SecretStr` private key; a `NodeSigner` for an address."""
    if isinstance(account_or_address, SecretStr):
        return LocalSigner(Account.from_key(account_or_address.get_secret_value()))
    if isinstance(account_or_address, str):
        if not is_address(account_or_address):
            raise ValueError("expected an unlocked node account's address; pass private keys as SecretStr")
        return NodeSigner(w3, to_checksum_address(account_or_address))
    return LocalSigner(account_or_address)
