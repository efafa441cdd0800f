"""Plain helpers for the contract tests (fixtures live in conftest.py)."""

from __future__ import annotations

import itertools
from enum import IntEnum

from brownie import chain, web3
from eth_account import Account
from eth_utils import keccak

from offchain.ops.roles import ORACLE_KEYS
from offchain.protocol.reports import Report, ReportStatus
from offchain.protocol.status import (  # noqa: F401 (re-exported for the tests)
    DeclineReason,
    RentalStatus,
    SlashReason,
)

ORACLES = [Account.from_key(k) for k in ORACLE_KEYS]
PRICE = 1_000  # token units per second: 3.6 tUSD per hour
_gpu_counter = itertools.count(1)


def new_gpu_hashes(count):
    """Fresh GPU UUID hashes no other test has used."""
    return [keccak(text=f"GPU-{next(_gpu_counter):08d}") for _ in range(count)]




class SkipReason(IntEnum):
    """`ReportSkipped.reason`: DataTypes.sol's SkipReason, member for member."""

    UNKNOWN_RENTAL = 0
    RENTAL_CLOSED = 1
    START_TIMED_OUT = 2
    SEQ_NOT_INCREASING = 3
    UNKNOWN_STATUS = 4
    COVERAGE_IN_FUTURE = 5
    TOTALS_DECREASED = 6
    DELIVERED_ABOVE_COVERED = 7
    UTILISATION_ABOVE_DELIVERED = 8


def report(rental, seq, covered_until, delivered, util=None, status=ReportStatus.RUNNING, root=b"\x22" * 32):
    """A cumulative report: the rental's totals from its start to `covered_until`. `util` (utilisation-weighted
    seconds) defaults to `delivered`, every delivered second at full utilisation."""
    return Report(
        rental_id=rental,
        seq=seq,
        covered_until=covered_until,
        delivered_seconds=delivered,
        util_seconds=delivered if util is None else util,
        status=status,
        telemetry_root=root,
    )


def now():
    return chain.time()


def error(name, *args):
    """The revert string Brownie 1.22 decodes a custom error into: `Name: arg, arg`.

    Brownie writes addresses in lower case, bytes32 as a Python bytes literal and enums as integers,
    and leaves a trailing space after the colon of an error without arguments.
    """

    def fmt(arg):
        if hasattr(arg, "address"):
            arg = arg.address
        if isinstance(arg, str):
            return arg.lower()
        if isinstance(arg, bytes):
            return repr(bytes(arg))
        return str(int(arg))

    return f"{name}: {', '.join(fmt(a) for a in args)}"


def block_time():
    """Timestamp of the latest block; the next transaction's block is never earlier, so a report period
    ending here is never in the future."""
    return chain[-1].timestamp


def wait(seconds):
    """Moves chain time forward and mines a block so that `block_time()` reflects it."""
    chain.sleep(seconds)
    chain.mine()


def at_next_block(timestamp):
    """Mines the next transaction at exactly `timestamp`."""
    web3.provider.make_request("evm_setNextBlockTimestamp", [timestamp])
