"""Retry pacing."""

from __future__ import annotations

from offchain.chain.tx.backoff import Backoff


def test_backoff_doubles_up_to_its_cap_and_resets():
    backoff = Backoff(0.5, 3.0)
    delays = []
    for _ in range(5):
        backoff.failed()
        delays.append(backoff.delay)
    assert delays == [1.0, 2.0, 3.0, 3.0, 3.0]
    backoff.succeeded()
    assert backoff.delay == 0.5
