"""The read-only marketplace web page: offers, rentals and providers, served from the on-chain event index
(`offchain.market.index`) by the oracle's app or by `gpuex web`.

- `app`: the aiohttp sub-application, its JSON API and event stream, and `mount` (start here).
- `views`: the API's bodies in human units.
- `pages/`, `static/`: the HTML pages and the CSS and JavaScript they load (no CDN, no build step).
"""
