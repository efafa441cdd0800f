"""The public base URL of a provider's agent API (`ProviderRegistry.setAgentUrl`): the one check of its form,
shared by the provider who publishes it and the renters who read it.

The registry stores whatever bytes a provider sends, up to `MAX_AGENT_URL_BYTES`, and parses none of them. So a
reader checks a URL it reads from the chain as the publisher did, and only then connects; that the agent answering
there holds the provider's registered agent key is a separate check, made over the connection.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

#: `ProviderRegistry.MAX_AGENT_URL_BYTES`.
MAX_AGENT_URL_BYTES = 256
SCHEMES = ("http", "https")
#: RFC 3986's unreserved, reserved and percent characters: printable ASCII without spaces, quotes, `<>\^`{|}`.
_URL_CHARACTERS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")


class AgentUrlInvalid(ValueError):
    """The text is not an agent URL; the message says why in one sentence."""


def check_agent_url(url: str) -> str:
    """`url` in the form it is published in: an http or https URL with a host, no user name or password, no query
    or fragment, at most `MAX_AGENT_URL_BYTES` bytes once the trailing slashes are stripped (and the scheme
    lower-cased). International host names go in their `xn--` form. Raises `AgentUrlInvalid`."""
    if not url:
        raise AgentUrlInvalid("the agent URL is empty")
    if not _URL_CHARACTERS.fullmatch(url):
        raise AgentUrlInvalid(
            f"{url!r} holds a character a URL may not (a space, a quote, a control character, "
            "non-ASCII text or one of <>\\^`{|})"
        )
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # an unclosed IPv6 bracket
        raise AgentUrlInvalid(f"{url!r}: {exc}") from None
    if parts.scheme not in SCHEMES:
        found = f", not {parts.scheme}" if parts.scheme else ""
        raise AgentUrlInvalid(f"{url!r}: the scheme must be http or https{found}")
    if "?" in url or "#" in url:
        raise AgentUrlInvalid(f"{url!r}: a base URL takes no query or fragment (? or #)")
    if "@" in parts.netloc:
        raise AgentUrlInvalid(f"{url!r}: a public URL holds no user name or password (user@host)")
    if not parts.hostname:
        raise AgentUrlInvalid(f"{url!r} has no host")
    try:
        _ = parts.port  # urllib checks the port only when it is read
    except ValueError:
        raise AgentUrlInvalid(f"{url!r} has a bad port") from None
    published = parts.scheme + url[len(parts.scheme) :].rstrip("/")
    if len(published) > MAX_AGENT_URL_BYTES:
        raise AgentUrlInvalid(
            f"the agent URL is {len(published)} bytes long; the registry takes at most {MAX_AGENT_URL_BYTES}"
        )
    return published
