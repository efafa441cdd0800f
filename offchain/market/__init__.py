"""What renters and providers see and do on a suite.

- `offers`: offers and providers' reputation, token amounts in human units, the one offer search.
- `rentals`: `RentalHistory`, the one read model of a rental, folded from its events.
- `exchange`: `ExchangeClient`, the actions of one account and the reads they need (the CLI's library).
- `index`: `EventIndex`, every provider, offer and rental in memory (the web page's library).
- `renterclient`: a renter's client of a provider agent's renter API.
"""
