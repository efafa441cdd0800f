"""The one set of numbers: how every figure the CLI and the web page show is written, in JSON and for people.

`gpuex ... --json` and the web API build their records of offers, rentals and accounts with
`offchain.market.figures`, which writes each figure with the functions here; so the same key carries the same value
in both, and each record's `display` carries the strings for people that both front ends show.

Each figure, in JSON and then for people:

- token amounts: a decimal string of whole tokens at the token's full precision (`"7.200000"`), exact; for people
  `7.20 tUSD` (two decimals at least, then as many as needed). Stake, slashes and compensation are in the stake
  token, everything a renter pays or is refunded in the payment token.
- prices: per hour, as amounts: `price_per_hour` for the whole offer or rental, `price_per_gpu_hour` (rounded down
  to a token unit); for people `7.20 tUSD/h`.
- VRAM: `vram_mib` (an integer, per GPU, as listed) and `vram_gib` (MiB / 1024 rounded half-up to a tenth); for
  people `79.6 GiB`.
- shares (utilisation, utilisation floor, reliability, decline rate): a fraction from 0 to 1, to 4 decimals (basis
  points); for people a percentage to one decimal, `81.2%`.
- durations: integer seconds; for people `2h 5m`, `45s`, `0s`.
- times: Unix seconds (the chain's clock); for people the reader's local time (`2026-12-05 03:10:00`), which each
  front end writes itself, in its reader's time zone.
- rental ids: decimal strings (they exceed what a JavaScript number holds exactly); offer ids: integers.
- statuses and reasons: lower-case names (`running`, `sla_breach`); for people with spaces for underscores.
- a figure with no value yet (no utilisation before the first delivered second, no reliability for a new
  provider): null; for people `—` (or `new` for reliability).

Utilisation is defined once: the utilisation-weighted delivered seconds over the delivered seconds of the rental's
applied reports so far (`RentalHistory.avg_util_bps`); None before any second was delivered. A report's utilisation
is the same over the seconds it added.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from offchain.market.offers import MIB_PER_GIB, SECONDS_PER_HOUR, TokenInfo
from offchain.market.rentals import BPS

#: Duration units, largest first.
DURATION_UNITS = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}
_TENTH = Decimal("0.1")


def amount(token: TokenInfo, units: int) -> Decimal:
    """Token units as whole tokens at the token's full precision (JSON writes it as a string: `"7.200000"`)."""
    return token.to_human(units)


def money(token: TokenInfo, units: int) -> str:
    """An amount for people: `1,000.00 tUSD`, `7.2108 tUSD` (at least two decimals, no trailing zeros beyond)."""
    text = f"{token.to_human(units):,.{token.decimals}f}"
    if "." in text:
        whole, fraction = text.split(".")
        fraction = fraction.rstrip("0").ljust(min(2, token.decimals), "0")
        text = f"{whole}.{fraction}" if fraction else whole
    return f"{text} {token.symbol}"


def hourly(token: TokenInfo, price_per_second: int, gpus: int = 1) -> Decimal:
    """A per-second price in token units as whole tokens per hour, shared by `gpus` GPUs (rounded down to a token
    unit)."""
    return amount(token, price_per_second * SECONDS_PER_HOUR // gpus)


def per_hour(token: TokenInfo, price_per_second: int, gpus: int = 1) -> str:
    """A per-second price in token units as a price per hour for people: `7.20 tUSD/h`."""
    return f"{money(token, price_per_second * SECONDS_PER_HOUR // gpus)}/h"


def vram_gib(mib: int) -> float:
    """MiB as GiB rounded half-up to a tenth: 81,559 MiB is 79.6 GiB."""
    return float((Decimal(mib) / MIB_PER_GIB).quantize(_TENTH, rounding=ROUND_HALF_UP))


def gib(mib: int) -> str:
    """A size in MiB in GiB for people: `79.6 GiB`."""
    return f"{vram_gib(mib):.1f} GiB"


def fraction_bps(bps: int | None) -> float | None:
    """Basis points as a fraction from 0 to 1 (4 decimals); None stays None."""
    return None if bps is None else bps / BPS


def share(value: float | None) -> float | None:
    """A fraction from 0 to 1 rounded to basis points, as JSON carries every share."""
    return None if value is None else round(value, 4)


def percent(value: float | None) -> str | None:
    """A fraction as a percentage for people, to one decimal: `0.8125` -> `81.3%`; None stays None."""
    if value is None:
        return None
    return f"{(Decimal(str(value)) * 100).quantize(_TENTH, rounding=ROUND_HALF_UP)}%"


def duration(seconds: int) -> str:
    """Seconds for people: `7500` -> `2h 5m`, `45` -> `45s`, `0` -> `0s`."""
    parts = []
    for unit, size in DURATION_UNITS.items():
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return " ".join(parts) or "0s"


def label(name: str) -> str:
    """A lower-case status or reason name for people: `sla_breach` -> `sla breach`."""
    return name.replace("_", " ")
