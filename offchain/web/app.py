"""The marketplace web page: an aiohttp sub-application over an `EventIndex` of one deployment.

It is mounted under `/web/` in the oracle's app when `OracleSettings.web` is on (the devnet's oracle does so),
or served alone by `gpuex web`. The server is read-only: it holds no key and signs nothing. Everything it shows comes
from the index, which follows the chain in a background task; until the index has caught up once, the API
answers 503.

    GET /web/                          offers (filters and sort of `gpuex offers search`) and recent rentals
    GET /web/rental?id=<rental id>     a rental: amounts, settlement, usage and live telemetry charts, the job
    GET /web/provider?address=<0x...>  a provider: stake, reputation, offers, rentals and history
    GET /web/account                   the connected wallet's balances and rentals (read through the wallet)
    GET /web/api/market                chain, contracts, tokens and how far the index is
    GET /web/api/offers?<OfferQuery>   the offers that pass the query; 400 with the reason for a bad query
    GET /web/api/rentals?limit=<n>     the most recently opened rentals
    GET /web/api/rentals/<id>          one rental with its reports
    GET /web/api/providers/<address>   one provider
    GET /web/api/rentals/<id>/telemetry?since=<seq>
                                       per-GPU figures of the rental's report periods after `since` (`.telemetry`)
    GET /web/api/contracts             the deployment's addresses with the ABIs the page calls them with
    GET /web/api/accounts/<address>    an account's rentals (as renter and as provider) and balances; 400 for a bad
                                       address
    GET /web/api/events                server-sent events: `index` (`IndexStatus`) whenever the index moved

The pages are static HTML, CSS and JavaScript shipped in this package (no CDN; the wallet and chart side is the
committed bundle `static/dist/gpuex.js`, see `build.mjs`); they refetch what they show on every `index` event.
Refusals are JSON `WebError` {"error", "detail"}.

The server never signs anything. With a browser wallet connected, the page asks the wallet to send the renter's
and the provider's transactions and to sign the renter API's requests; the ABIs it encodes them with are Brownie's
build artifacts, served by `/web/api/contracts`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import AsyncIterator

from aiohttp import web
from multidict import MultiMapping
from pydantic import BaseModel, ValidationError
from web3 import AsyncWeb3

from offchain.chain import deployments
from offchain.chain.contracts import abi
from offchain.chain.deployments import Deployment, DeploymentNotFound
from offchain.chain.reads import ChainReader
from offchain.chain.rpc import connect
from offchain.config import ChainSettings
from offchain.market.accounts import account_summary
from offchain.market.agentprobe import AgentProbe
from offchain.market.figures import RentalFigures, offer_figures, rental_rows
from offchain.market.index import CHAIN_ERRORS, DEFAULT_POLL_INTERVAL_SECONDS, EventIndex
from offchain.market.offers import OfferQuery, TokenInfo, read_token, search_offers
from offchain.web.telemetry import GPU_PERIODS, MAX_POINTS, GpuPeriodReader, TelemetryPage
from offchain.web.views import (
    ContractsInfo,
    DeployedContract,
    IndexStatus,
    MarketInfo,
    OffersPage,
    RentalsPage,
    WebError,
    provider_view,
)

log = logging.getLogger(__name__)

WEB_PREFIX = "/web"
PAGES_DIR = Path(__file__).resolve().parent / "pages"
STATIC_DIR = Path(__file__).resolve().parent / "static"
HEARTBEAT_SECONDS = 15.0
STOP_TIMEOUT_SECONDS = 15.0
RECONNECT_MILLISECONDS = 2_000
DEFAULT_RENTALS = 20
MAX_RENTALS = 500


@dataclass
class WebState:
    """What the handlers read: the index, the chain (for an account's balances), the tokens' display metadata (None
    until read from the chain) and the probe of providers' agents. `stopping` ends the index and the event
    streams."""

    deployment: Deployment
    index: EventIndex
    reader: ChainReader
    probe: AgentProbe = field(default_factory=AgentProbe)
    token: TokenInfo | None = None
    stake_token: TokenInfo | None = None
    stopping: asyncio.Event = field(default_factory=asyncio.Event)


MARKET = web.AppKey("market", WebState)


def create_web_app(
    rpc_url: str,
    deployment: Deployment,
    *,
    confirmations: int = 0,
    poll_interval: float = DEFAULT_POLL_INTERVAL_SECONDS,
    gpu_periods: GpuPeriodReader | None = None,
) -> web.Application:
    """The web sub-application of `deployment`, reading the chain through `rpc_url`; mount it with `mount`.
    `gpu_periods` reads the per-GPU figures an oracle holds; without it (`gpuex web`) the telemetry endpoint
    answers 404 `telemetry_not_served`."""
    app = web.Application()
    if gpu_periods is not None:
        app[GPU_PERIODS] = gpu_periods
    w3 = connect(rpc_url)
    app[MARKET] = WebState(
        deployment,
        EventIndex.for_deployment(w3, deployment, confirmations=confirmations),
        ChainReader(w3, deployment.registry, deployment.escrow),
    )

    async def follower(app: web.Application) -> AsyncIterator[None]:
        market = app[MARKET]
        task = asyncio.create_task(_follow(w3, market, poll_interval), name="web event index")
        try:
            yield
        finally:
            market.stopping.set()
            # The index stops between two requests (see `EventIndex.run`); cancelled only if the node hangs.
            done, _ = await asyncio.wait({task}, timeout=STOP_TIMEOUT_SECONDS)
            if not done:
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await w3.provider.disconnect()

    async def stop(app: web.Application) -> None:
        """Stops the index and ends the event streams before the server waits for its requests to finish."""
        app[MARKET].stopping.set()
        await app[MARKET].index.wake()

    app.cleanup_ctx.append(follower)
    app.on_shutdown.append(stop)
    for path, (name, scripts) in PAGES.items():
        app.router.add_get(path, _page(render_page(name, scripts)))
    app.router.add_static("/static", STATIC_DIR)
    app.router.add_get("/api/market", get_market)
    app.router.add_get("/api/offers", get_offers)
    app.router.add_get("/api/rentals", get_rentals)
    app.router.add_get("/api/rentals/{rental_id}", get_rental)
    app.router.add_get("/api/rentals/{rental_id}/telemetry", get_rental_telemetry)
    app.router.add_get("/api/providers/{address}", get_provider)
    app.router.add_get("/api/contracts", get_contracts)
    app.router.add_get("/api/accounts/{address}", get_account)
    app.router.add_get("/api/events", get_events)
    return app


def mount(app: web.Application, web_app: web.Application) -> None:
    """Serves `web_app` under `/web/` in `app`; `/` and `/web` redirect there."""

    async def to_web(_: web.Request) -> web.Response:
        raise web.HTTPFound(WEB_PREFIX + "/")

    # Before the sub-application, which would otherwise answer `/web` itself (with a 404).
    app.router.add_get("/", to_web)
    app.router.add_get(WEB_PREFIX, to_web)
    app.add_subapp(WEB_PREFIX, web_app)


def create_standalone_app(rpc_url: str, deployment: Deployment, **options) -> web.Application:
    """An application that serves only the web page (`gpuex web`)."""
    app = web.Application()
    mount(app, create_web_app(rpc_url, deployment, **options))
    return app


def deployment_of(chain: ChainSettings) -> Deployment:
    """The deployment record of the contracts in `chain` (for its start block and tokens)."""
    record = deployments.load(chain.chain_id)
    if (record.registry, record.escrow) != (chain.registry, chain.escrow):
        raise DeploymentNotFound(
            f"the deployment record of chain {chain.chain_id} is of registry {record.registry}, "
            f"not {chain.registry}; point {deployments.DIR_ENV} at the right records"
        )
    return record


async def _follow(w3: AsyncWeb3, market: WebState, poll_interval: float) -> None:
    """Reads the tokens' symbols and decimals, then keeps the index up to date until `market.stopping` is set;
    retries while the node is down."""
    deployment, reader = market.deployment, market.reader
    while market.token is None and not market.stopping.is_set():
        try:
            token = await read_token(reader, deployment.payment_token)
            market.stake_token = await read_token(reader, deployment.stake_token)
            market.token = token
        except CHAIN_ERRORS as exc:
            log.warning("web: cannot read the tokens: %s: %s", type(exc).__name__, exc)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(market.stopping.wait(), poll_interval)
    await market.index.run(market.stopping, poll_interval)


#: Each page by path: its name (title, and its body in `pages/<name>.html`) and the scripts it loads after
#: `common.js` and the bundle. Every page shares `pages/layout.html`: the head, the header bar and the footer.
PAGES = {
    "/": ("offers", ("offers.js",)),
    "/rental": ("rental", ("rental.js",)),
    "/provider": ("provider", ("provider.js",)),
    "/account": ("account", ()),
}
#: What every page loads first, in this order: the shared helpers, then the bundle (`build.mjs`: the wallet and
#: chain side, and charts), which the pages' own scripts find as `window.gpuexLib`.
SHARED_SCRIPTS = ("common.js", "dist/gpuex.js")


def render_page(name: str, scripts: tuple[str, ...]) -> str:
    """The HTML of page `name`: its body in the shared layout."""
    layout = Template((PAGES_DIR / "layout.html").read_text())
    tags = "\n".join(f'  <script src="static/{script}" defer></script>' for script in (*SHARED_SCRIPTS, *scripts))
    return layout.substitute(title=name, scripts=tags, main=(PAGES_DIR / f"{name}.html").read_text())


def _page(html: str):
    async def handler(_: web.Request) -> web.Response:
        return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-cache"})

    return handler


# ---------------------------------------------------------------------------------------------------- the API


async def get_market(request: web.Request) -> web.Response:
    market = request.app[MARKET]
    if market.token is None or market.stake_token is None:
        raise _refusal(web.HTTPServiceUnavailable, "indexing", "the page has not reached the chain yet")
    d = market.deployment
    return _json(
        MarketInfo(
            chain_id=d.chain_id,
            registry=d.registry,
            escrow=d.escrow,
            payment_token=market.token,
            stake_token=market.stake_token,
            index=_status(market.index),
        )
    )


async def get_offers(request: web.Request) -> web.Response:
    market, token, _ = _ready(request)
    try:
        query = parse_offer_query(request.query)
    except ValueError as exc:  # pydantic's ValidationError included
        raise _refusal(web.HTTPBadRequest, "bad_query", _reason(exc)) from None
    offers = await offer_figures(search_offers(market.index.offers(), query, token), token, market.probe)
    return _json(OffersPage(block=market.index.block, token=token, query=query, offers=offers))


async def get_rentals(request: web.Request) -> web.Response:
    market, token, _ = _ready(request)
    limit = _int_param(request.query.get("limit", str(DEFAULT_RENTALS)), "limit", 1, MAX_RENTALS)
    index = market.index
    return _json(RentalsPage(block=index.block, rentals=rental_rows(index.rentals(limit), index.offer, token)))


#: The ABIs the page encodes its calls with, by what the deployment calls the contract. The tokens are called
#: through the ERC-20 interface (with OpenZeppelin's errors, to name a token's revert), whatever token it is.
PAGE_ABIS = {
    "registry": ("ProviderRegistry",),
    "escrow": ("RentalEscrow",),
    "payment_token": ("IERC20Metadata", "IERC20Errors"),
    "stake_token": ("IERC20Metadata", "IERC20Errors"),
}


async def get_contracts(request: web.Request) -> web.Response:
    """The deployment's contracts with their ABIs from Brownie's build artifacts (no ABI is copied into the page)."""
    d = request.app[MARKET].deployment
    deployed = {
        role: DeployedContract(address=getattr(d, role), abi=[entry for name in names for entry in abi(name)])
        for role, names in PAGE_ABIS.items()
    }
    return _json(ContractsInfo(chain_id=d.chain_id, **deployed))


async def get_rental(request: web.Request) -> web.Response:
    market, token, stake_token = _ready(request)
    rental_id = _int_param(request.match_info["rental_id"], "rental id", 1, 2**256 - 1)
    rental = market.index.rental(rental_id)
    offer = market.index.offer(rental.offer_id) if rental is not None else None
    if rental is None or offer is None:
        raise _refusal(web.HTTPNotFound, "unknown_rental", f"no rental {rental_id} (as of block {market.index.block})")
    return _json(RentalFigures.of_rental(rental, offer, token, stake_token))


async def get_rental_telemetry(request: web.Request) -> web.Response:
    """The per-GPU figures of the rental's report periods above seq `since` (default 0) that this oracle holds,
    oldest first, at most MAX_POINTS."""
    rental_id = _int_param(request.match_info["rental_id"], "rental id", 1, 2**256 - 1)
    since = _int_param(request.query.get("since", "0"), "since", 0, 2**32 - 1)
    read = request.app.get(GPU_PERIODS)
    if read is None:
        raise _refusal(
            web.HTTPNotFound,
            "telemetry_not_served",
            "this page is served without an oracle: per-GPU telemetry is served by an oracle's page (GPUEX_ORACLE_WEB)",
        )
    market, _, _ = _ready(request)
    if market.index.rental(rental_id) is None:
        raise _refusal(web.HTTPNotFound, "unknown_rental", f"no rental {rental_id} (as of block {market.index.block})")
    latest_seq, periods = read(rental_id, since, MAX_POINTS)
    return _json(TelemetryPage.of(rental_id, latest_seq, periods))


async def get_provider(request: web.Request) -> web.Response:
    market, token, stake_token = _ready(request)
    address = request.match_info["address"]
    if not AsyncWeb3.is_address(address):
        raise _refusal(web.HTTPBadRequest, "bad_address", f"not an address: {address!r}")
    index = market.index
    provider = index.provider(address)
    if provider is None or provider.record is None:
        raise _refusal(web.HTTPNotFound, "unknown_provider", f"{address} has no registry events")
    offers = search_offers(
        index.offers(), OfferQuery(provider=provider.address, include_unavailable=True, sort="offer"), token
    )
    rentals = [rental for i in reversed(provider.rental_ids) if (rental := index.rental(i)) is not None]
    return _json(
        provider_view(
            provider,
            await offer_figures(offers, token, market.probe),
            rentals,
            rental_rows(rentals, index.offer, token),
            token,
            stake_token,
        )
    )


async def get_account(request: web.Request) -> web.Response:
    market, token, stake_token = _ready(request)
    address = request.match_info["address"]
    if not AsyncWeb3.is_address(address):
        raise _refusal(web.HTTPBadRequest, "bad_address", f"not an address: {address[:64]!r}")
    try:
        summary = await account_summary(market.index, market.reader, address, token, stake_token)
    except CHAIN_ERRORS as exc:
        raise _refusal(web.HTTPServiceUnavailable, "chain_unreachable", f"cannot read the chain: {exc}") from None
    return _json(summary)


async def get_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the index status now and whenever it moves, a comment every HEARTBEAT_SECONDS."""
    market = request.app[MARKET]
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    sent = -1  # below every version: the first pass sends the status
    try:
        await response.write(f"retry: {RECONNECT_MILLISECONDS}\n\n".encode())
        while not market.stopping.is_set():
            version = market.index.version
            if version != sent:
                data = _status(market.index).model_dump_json()
                await response.write(f"event: index\ndata: {data}\n\n".encode())
                sent = version
            else:
                await response.write(b": idle\n\n")
            await market.index.wait_for_change(sent, HEARTBEAT_SECONDS)
    except ConnectionResetError:  # the page went away
        pass
    return response


def parse_offer_query(params: MultiMapping[str]) -> OfferQuery:
    """Query parameters as an `OfferQuery`; an empty parameter (a blank form field) counts as not given."""
    values = {}
    for key in set(params.keys()):
        given = params.getall(key)
        if len(given) > 1:
            raise ValueError(f"{key} is given {len(given)} times")
        if given[0].strip():
            values[key] = given[0].strip()
    return OfferQuery.model_validate(values)


def _ready(request: web.Request) -> tuple[WebState, TokenInfo, TokenInfo]:
    market = request.app[MARKET]
    if not market.index.ready or market.token is None or market.stake_token is None:
        raise _refusal(
            web.HTTPServiceUnavailable,
            "indexing",
            f"the index is catching up with the chain (at block {market.index.block})",
        )
    return market, market.token, market.stake_token


def _status(index: EventIndex) -> IndexStatus:
    return IndexStatus(ready=index.ready, block=index.block, version=index.version)


def _int_param(text: str, what: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise _refusal(web.HTTPBadRequest, "bad_query", f"{what} is not a whole number: {text!r}") from None
    if not low <= value <= high:
        raise _refusal(web.HTTPBadRequest, "bad_query", f"{what} must be between {low} and {high}")
    return value


def _reason(exc: ValueError) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )
    return str(exc)


def _refusal(kind: type[web.HTTPError], error: str, detail: str) -> web.HTTPError:
    return kind(text=WebError(error=error, detail=detail).model_dump_json(), content_type="application/json")


def _json(model: BaseModel) -> web.Response:
    return web.Response(
        body=model.model_dump_json().encode(), content_type="application/json", headers={"Cache-Control": "no-store"}
    )
