"""`offchain.protocol.eip712`: a struct's field list comes from its type encoding, and malformed ones are refused."""

import pytest

from offchain.protocol.eip712 import EIP712_DOMAIN_FIELDS, struct_fields


def test_the_field_list_follows_the_type_encoding_in_order():
    assert struct_fields("ReportBatch(uint64 oracleSetVersion,Report[] reports)") == [
        {"name": "oracleSetVersion", "type": "uint64"},
        {"name": "reports", "type": "Report[]"},
    ]
    assert [f["name"] for f in EIP712_DOMAIN_FIELDS] == ["name", "version", "chainId", "verifyingContract"]


@pytest.mark.parametrize(
    "encoded",
    ["Report", "Report()", "Report(uint256 id", "(uint256 id)", "R(uint256)", "R(uint256 a b)", "R(uint256 a,)"],
)
def test_a_malformed_type_encoding_is_refused(encoded):
    with pytest.raises(ValueError):
        struct_fields(encoded)
