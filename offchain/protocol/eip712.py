"""The EIP-712 struct types of gpuex's signatures, each written once as its type encoding (what `encodeType` gives
and the contracts hash, e.g. `Report(uint256 rentalId,uint32 seq,...)`), and the field lists typed-data documents
take, derived from it."""

from __future__ import annotations

#: The domain every gpuex signature uses: name, version, chain id and verifying contract.
DOMAIN_TYPE = "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"


def struct_fields(encoded_type: str) -> list[dict[str, str]]:
    """The typed-data field list (`[{"name": ..., "type": ...}, ...]`) of one struct from its type encoding."""
    name, _, members = encoded_type.partition("(")
    if not name or not members.endswith(")") or not members[:-1]:
        raise ValueError(f"not a struct's type encoding: {encoded_type!r}")
    fields = []
    for member in members[:-1].split(","):
        kind, _, field = member.partition(" ")
        if not kind or not field or " " in field:
            raise ValueError(f"not a struct member: {member!r} in {encoded_type!r}")
        fields.append({"name": field, "type": kind})
    return fields


EIP712_DOMAIN_FIELDS = struct_fields(DOMAIN_TYPE)
