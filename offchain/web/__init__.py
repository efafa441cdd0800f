"""The marketplace web page: offers, rentals and providers, served from the on-chain event index
(`offchain.market.index`) by the oracle's app or by `gpuex web`; with a browser wallet connected, renting,
terminating, withdrawing and a provider's offer actions, which the wallet signs (the server holds no key).

- `app`: the aiohttp sub-application, its JSON API and event stream, and `mount` (start here).
- `views`: the API's bodies in human units.
- `pages/`, `static/`: the HTML pages, the CSS and the plain scripts that draw what the API serves.
- `src/`: the wallet and chain side (viem) and charts (uPlot), bundled by `build.mjs` into `static/dist/`
  (committed: no CDN, no build step where the page is served).
"""
