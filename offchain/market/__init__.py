"""What renters and providers see and do on a suite.

- `offers`: offers and providers, token amounts in human units, the one offer search.
- `reputation`: a provider's reputation from its settled rentals, the one rule of reliability.
- `rentals`: `RentalHistory`, the one read model of a rental, folded from its events.
- `exchange`: `ExchangeClient`, the actions of one account and the reads they need (the CLI's library).
- `index`: `EventIndex`, every provider, offer and rental in memory (the web page's and the CLI's reputations).
- `renterclient`: a renter's client of a provider agent's renter API.
"""
