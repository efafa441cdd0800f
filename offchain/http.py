"""An aiohttp client session owned by an object that is used as an async context manager (the agent's outbox, a
renter's client of the renter API): opened on entry, closed on exit."""

from __future__ import annotations

from types import TracebackType
from typing import TypeVar

import aiohttp

S = TypeVar("S", bound="SessionOwner")


class SessionOwner:
    """Holds `_session` while entered; `_timeout` applies to every request made through it."""

    def __init__(self, timeout: aiohttp.ClientTimeout) -> None:
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self: S) -> S:
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
