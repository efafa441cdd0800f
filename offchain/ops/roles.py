"""Who is who on a development chain: one table of roles for the devnet and for the tests' fixtures.

Every role is one of anvil's dev accounts, by its index on anvil's default mnemonic. Brownie's development
networks run anvil with that mnemonic too, so `accounts[ACCOUNTS["renter"]]` in a test is the devnet's renter,
and the oracles' and the agents' keys, which sign off chain (report batches, telemetry), belong to accounts that
hold ether for their own transactions. The keys are public knowledge: never fund them anywhere real.
"""

from __future__ import annotations

from eth_account import Account

ANVIL_MNEMONIC = "test test test test test test test test test test test junk"

#: Role -> index of its account on ANVIL_MNEMONIC (and in Brownie's `accounts` on a development network).
ACCOUNTS = {
    "deployer": 0,
    "treasury": 1,
    "provider": 2,
    "provider2": 3,
    "renter": 4,
    "renter2": 5,
    "agent": 6,
    "stranger": 7,
    "relayer": 8,  # sends the oracles' transactions in the off-chain tests
    "provider3": 9,
    "renter3": 10,
    "agent2": 11,
    "oracle": 12,
    "oracle2": 13,
    "oracle3": 14,
}
#: How many accounts a development chain must have for every role to exist.
ACCOUNT_COUNT = max(ACCOUNTS.values()) + 1
#: The three oracles of the tests' 2-of-3 oracle set; the devnet runs the first alone.
ORACLE_ROLES = ("oracle", "oracle2", "oracle3")


def _derive_keys() -> dict[str, bytes]:
    Account.enable_unaudited_hdwallet_features()
    return {
        role: bytes(Account.from_mnemonic(ANVIL_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}").key)
        for role, index in ACCOUNTS.items()
    }


#: Role -> private key.
KEYS = _derive_keys()
ORACLE_KEYS = [KEYS[role] for role in ORACLE_ROLES]
AGENT_KEY = KEYS["agent"]


def address(role: str) -> str:
    return Account.from_key(KEYS[role]).address
