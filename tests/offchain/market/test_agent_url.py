"""The agent URL a provider publishes: the form every client checks (`check_agent_url`), the provider record that
reads it from the registry, and the exchange client that sets it and finds the agent of an offer."""

from __future__ import annotations

import asyncio

import pytest
from eth_account import Account

from offchain.chain.rpc import connect
from offchain.chain.tx.oneshot import Wallet
from offchain.market.exchange import AgentEndpoint, ExchangeClient, ExchangeError, NotFound
from offchain.market.offers import read_provider
from offchain.protocol.agenturl import MAX_AGENT_URL_BYTES, AgentUrlInvalid, check_agent_url
from tests.offchain.conftest import AGENT

AGENT_URL = "https://agent.example.net:8443"


@pytest.fixture(autouse=True)
def isolation(fn_isolation):
    pass


def run(coroutine):
    return asyncio.run(coroutine)


@pytest.fixture
def client(rpc_url, deployment):
    """`client(account)`: an `ExchangeClient` of the suite acting as `account` (none: read-only), on a connection
    of its own that is closed after the call."""

    def _client(account=None):
        async def call(action):
            w3 = connect(rpc_url)
            try:
                wallet = Wallet(w3, account) if account is not None else None
                return await action(ExchangeClient(w3, deployment, wallet))
            finally:
                await w3.provider.disconnect()

        return lambda action: run(call(action))

    return _client


@pytest.fixture
def local_provider(accounts):
    """A fresh key with gas money, to act through `Wallet` (Brownie's accounts hold no local key)."""
    account = Account.create()
    accounts[0].transfer(account.address, "1 ether")
    return account


# ---------------------------------------------------------------------------------------------------------
# check_agent_url


@pytest.mark.parametrize(
    "url, published",
    [
        (AGENT_URL, AGENT_URL),
        (AGENT_URL + "/", AGENT_URL),
        ("http://10.0.0.7:8080/gpuex/agent//", "http://10.0.0.7:8080/gpuex/agent"),
        ("HTTPS://Agent.Example.net", "https://Agent.Example.net"),
        ("http://[2001:db8::7]:8443", "http://[2001:db8::7]:8443"),
        ("https://xn--bcher-kva.example", "https://xn--bcher-kva.example"),
    ],
)
def test_a_valid_url_is_published_without_its_trailing_slash(url, published):
    assert check_agent_url(url) == published


@pytest.mark.parametrize(
    "url, reason",
    [
        ("", "the agent URL is empty"),
        ("ftp://agent.example.net", "the scheme must be http or https, not ftp"),
        ("javascript:alert(1)", "the scheme must be http or https, not javascript"),
        ("agent.example.net:8443", "the scheme must be http or https, not agent.example.net"),
        ("//agent.example.net", "the scheme must be http or https"),
        ("https://", "has no host"),
        ("https:///agent", "has no host"),
        ("https://operator:secret@agent.example.net", "no user name or password"),
        ("https://agent.example.net/?token=1", "no query or fragment"),
        ("https://agent.example.net/#top", "no query or fragment"),
        ("https://agent.example.net:99999", "has a bad port"),
        ("https://[2001:db8::7", "Invalid IPv6 URL"),
        ("https://agent example.net", "holds a character a URL may not"),
        ("https://bücher.example", "holds a character a URL may not"),
        ("https://agent.example.net/\n", "holds a character a URL may not"),
    ],
)
def test_an_invalid_url_is_refused_with_its_reason(url, reason):
    with pytest.raises(AgentUrlInvalid, match=reason.replace("?", r"\?")):
        check_agent_url(url)


def test_the_length_is_counted_after_the_trailing_slash_is_stripped():
    longest = "https://" + "a" * (MAX_AGENT_URL_BYTES - len("https://"))

    assert check_agent_url(longest + "/") == longest
    with pytest.raises(AgentUrlInvalid, match="is 257 bytes long; the registry takes at most 256"):
        check_agent_url(longest + "a")


# ---------------------------------------------------------------------------------------------------------
# the provider record


def test_the_provider_record_reads_the_agent_url_and_none_when_unset(suite, provider):
    def read():
        return suite.read(lambda r: read_provider(r, provider.address))

    assert read().agent_url is None
    suite.registry.setAgentUrl(AGENT_URL, {"from": provider})
    assert read().agent_url == AGENT_URL
    suite.registry.setAgentUrl("", {"from": provider})
    assert read().agent_url is None


def test_the_provider_record_reads_the_agent_url_at_the_block_asked(suite, provider):
    before = suite.registry.setAgentUrl(AGENT_URL, {"from": provider}).block_number
    suite.registry.setAgentUrl("https://moved.example.net", {"from": provider})

    assert suite.read(lambda r: read_provider(r, provider.address, before)).agent_url == AGENT_URL


# ---------------------------------------------------------------------------------------------------------
# the exchange client


def test_set_agent_url_publishes_the_checked_form(client, suite, local_provider):
    result = client(local_provider)(lambda c: c.set_agent_url(AGENT_URL + "/"))

    assert [tx.action for tx in result.transactions] == ["setAgentUrl"]
    assert result.provider.agent_url == AGENT_URL
    assert suite.read(lambda r: r.agent_url_of(local_provider.address)) == AGENT_URL
    assert client()(lambda c: c.agent_url(local_provider.address)) == AGENT_URL


def test_set_agent_url_to_empty_clears_it(client, suite, local_provider):
    act = client(local_provider)
    act(lambda c: c.set_agent_url(AGENT_URL))

    result = act(lambda c: c.set_agent_url(""))

    assert result.provider.agent_url is None
    assert act(lambda c: c.agent_url()) is None


def test_set_agent_url_refuses_an_invalid_url_before_sending(client, suite, local_provider):
    with pytest.raises(ExchangeError, match="no query or fragment"):
        client(local_provider)(lambda c: c.set_agent_url(AGENT_URL + "?x=1"))

    assert suite.read(lambda r: r.agent_url_of(local_provider.address)) is None


def test_the_agent_endpoint_of_an_offer(client, suite, offer, provider):
    suite.registry.setAgentUrl(AGENT_URL + "/", {"from": provider})

    endpoint = client()(lambda c: c.agent_endpoint_of_offer(offer))

    assert endpoint == AgentEndpoint(offer_id=offer, provider=provider.address, agent=AGENT.address, url=AGENT_URL)


def test_the_agent_endpoint_of_an_offer_whose_provider_published_no_url(client, offer, provider):
    with pytest.raises(
        ExchangeError, match=f"the provider {provider.address} of offer {offer} has published no agent URL"
    ):
        client()(lambda c: c.agent_endpoint_of_offer(offer))


def test_the_agent_endpoint_of_an_offer_whose_provider_set_no_agent_key(client, suite, offer, provider):
    suite.registry.setAgentUrl(AGENT_URL, {"from": provider})
    suite.registry.setAgent("0x" + "00" * 20, {"from": provider})

    with pytest.raises(ExchangeError, match=f"of offer {offer} has set no agent key"):
        client()(lambda c: c.agent_endpoint_of_offer(offer))


def test_the_agent_endpoint_refuses_a_url_the_chain_holds_but_no_client_takes(client, suite, offer, provider):
    suite.registry.setAgentUrl("javascript:alert(1)", {"from": provider})

    with pytest.raises(ExchangeError, match="published an agent URL that cannot be used: .*not javascript"):
        client()(lambda c: c.agent_endpoint_of_offer(offer))


def test_the_agent_endpoint_of_an_unknown_offer(client, offer):
    with pytest.raises(NotFound, match="no offer 99"):
        client()(lambda c: c.agent_endpoint_of_offer(99))
