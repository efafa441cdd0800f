"""Argument types in human units (`type=` of argparse): amounts of a token, prices per hour, GiB, durations,
percentages, ids, addresses and URLs. Each raises `ArgumentTypeError`, which `gpuex` reports as a usage error
(`ExitStatus.USAGE`).

Token amounts stay `Decimal` here: converting them to token units needs the token's decimals, which the command
reads from the chain (`offchain.cli.args.amount_units`, `price_units`).
"""

from __future__ import annotations

import re
from argparse import ArgumentTypeError
from decimal import Decimal, InvalidOperation

from web3 import Web3

from offchain.market.units import DURATION_UNITS
from offchain.protocol.agenturl import AgentUrlInvalid, check_agent_url

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def _decimal(text: str, what: str) -> Decimal:
    try:
        value = Decimal(text.strip().replace("_", ""))
    except InvalidOperation:
        raise ArgumentTypeError(f"not {what}: {text!r}") from None
    if not value.is_finite():
        raise ArgumentTypeError(f"not {what}: {text!r}")
    return value


def amount(text: str) -> Decimal:
    """A positive amount of a token in human units (`500`, `12.5`)."""
    value = _decimal(text, "an amount")
    if value <= 0:
        raise ArgumentTypeError(f"the amount must be positive: {text!r}")
    return value


def price(text: str) -> Decimal:
    """A positive price in token per hour (`7.20`); a leading `$` is allowed."""
    value = _decimal(text.strip().removeprefix("$"), "a price")
    if value <= 0:
        raise ArgumentTypeError(f"the price must be positive: {text!r}")
    return value


def gib(text: str) -> Decimal:
    """A non-negative size in GiB (`80`, `23.5`); `offchain.cli.output.format_gib` writes one for people."""
    value = _decimal(text.strip().removesuffix("GiB").removesuffix("G"), "a size in GiB")
    if value < 0:
        raise ArgumentTypeError(f"the size must not be negative: {text!r}")
    return value


def percent(text: str) -> float:
    """A percentage from 0 to 100 (`95`, `99.5%`)."""
    value = _decimal(text.strip().removesuffix("%"), "a percentage")
    if not 0 <= value <= 100:
        raise ArgumentTypeError(f"a percentage is from 0 to 100: {text!r}")
    return float(value)


def duration(text: str) -> int:
    """A positive duration in seconds: `3600`, `90m`, `2h`, `1h30m`, `1d`; or as it is shown, `1h 30m`."""
    cleaned = "".join(text.split()).lower()
    if cleaned.isdigit():
        seconds = int(cleaned)
    else:
        match = _DURATION.match(cleaned)
        if not cleaned or match is None:
            raise ArgumentTypeError(f"not a duration: {text!r} (write 3600, 90m, 2h or 1h30m)")
        seconds = sum(int(part or 0) * factor for part, factor in zip(match.groups(), DURATION_UNITS.values()))
    if seconds <= 0:
        raise ArgumentTypeError(f"the duration must be positive: {text!r}")
    return seconds


def positive_int(text: str) -> int:
    """A positive integer (an offer or rental id, a count)."""
    try:
        value = int(text.strip(), 0)
    except ValueError:
        raise ArgumentTypeError(f"not a positive integer: {text!r}") from None
    if value <= 0:
        raise ArgumentTypeError(f"not a positive integer: {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """A whole number, zero or more."""
    try:
        value = int(text)
    except ValueError:
        raise ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise ArgumentTypeError(f"must be zero or more: {value}")
    return value


def address(text: str) -> str:
    """An Ethereum address, returned checksummed."""
    if not Web3.is_address(text.strip()):
        raise ArgumentTypeError(f"not an address: {text!r}")
    return Web3.to_checksum_address(text.strip())


def agent_url(text: str) -> str:
    """The public base URL of an agent API (`offchain.protocol.agenturl.check_agent_url`), without its trailing
    slash; an empty string stays empty (it clears the published URL)."""
    if not text:
        return ""
    try:
        return check_agent_url(text)
    except AgentUrlInvalid as exc:
        raise ArgumentTypeError(str(exc)) from None
