"""A provider's reputation from its settled rentals: the one rule behind every reliability figure the CLI and the
web page show, and behind the `min_reliability` filter of the offer search.

The registry's counters (seconds delivered and missed) weigh every second the same, so a provider renting its own
offer at 1 token unit a second buys a perfect record for a fraction of a cent. Here a rental counts for the value
it settled, and only when someone other than the provider rented it:

- value delivered: the gross earnings of the rental (what its renter paid, the protocol fee included);
- value missed: its missed seconds at its price;
- reliability: value delivered / (value delivered + value missed);
- distinct renters: the accounts other than the provider and its agent keys whose rentals settled any value.

Faking a record then costs the protocol fee on all the value faked, and a provider with less than
`NEW_PROVIDER_VALUE` settled counts as new (no reliability shown, passing a `min_reliability` filter only when the
search also asks for new providers: `include_new`). The registry's declines counter stays as it is: declining costs a
provider nothing to fake in its favour.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from pydantic import BaseModel, ConfigDict

from offchain.market.rentals import RentalHistory

#: Value settled by other renters, in whole payment tokens (e.g. 10 USDC), below which a provider counts as new.
NEW_PROVIDER_VALUE = Decimal(10)


class Reputation(BaseModel):
    """What a provider's settled rentals by other renters add up to; amounts in payment token units."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    value_delivered: int = 0
    value_missed: int = 0
    rentals_settled: int = 0  # rentals by other renters that settled any value
    distinct_renters: int = 0

    @property
    def value_settled(self) -> int:
        return self.value_delivered + self.value_missed

    @property
    def reliability(self) -> float | None:
        """Share of the value settled that was delivered; None before any was settled."""
        return self.value_delivered / self.value_settled if self.value_settled else None

    def established(self, decimals: int) -> bool:
        """At least `NEW_PROVIDER_VALUE` settled, for a payment token of `decimals`."""
        return Decimal(self.value_settled).scaleb(-decimals) >= NEW_PROVIDER_VALUE


def reputation(provider: str, agents: Iterable[str], rentals: Iterable[RentalHistory]) -> Reputation:
    """The reputation that the settled `rentals` of `provider`'s offers give it; rentals whose renter is the
    provider or one of `agents` (every agent key it ever set) do not count."""
    own = {provider.lower(), *(agent.lower() for agent in agents)}
    delivered = missed = settled = 0
    renters: set[str] = set()
    for rental in rentals:
        settlement = rental.settlement
        if settlement is None or rental.renter.lower() in own:
            continue
        value_delivered = settlement.provider_payout + settlement.fee
        value_missed = settlement.missed_seconds * rental.price_per_second
        if not value_delivered + value_missed:
            continue
        delivered += value_delivered
        missed += value_missed
        settled += 1
        renters.add(rental.renter.lower())
    return Reputation(
        value_delivered=delivered, value_missed=missed, rentals_settled=settled, distinct_renters=len(renters)
    )
