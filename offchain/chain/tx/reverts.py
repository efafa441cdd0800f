"""Naming reverts after the contracts' custom errors."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from eth_abi import decode as abi_decode
from eth_utils import keccak
from eth_utils.abi import collapse_if_tuple
from web3.exceptions import ContractLogicError

from offchain.chain.contracts import abi

#: The contracts whose custom errors a revert is named after by default (the test token's, for the ERC-20 errors
#: a transfer inside the escrow bubbles up).
DECODED_CONTRACTS = ("ProviderRegistry", "RentalEscrow", "TestStablecoin")


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
        """A decoder for the errors of the named contracts' Brownie build artifacts (`DECODED_CONTRACTS` when
        none are named)."""
        return cls(abi(name) for name in contract_names or DECODED_CONTRACTS)

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
