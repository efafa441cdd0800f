"""Which oracle of the set lands a due report, and when: a turn order every oracle computes the same way from what
they share, so that no single oracle decides alone what lands, and two honest oracles seldom send the same thing.

Every report (and every keeper call) that comes due has a due time on the chain's clock (`due_at`: for a report,
`batcher.landing_due_at`; for `finalize`, the rental's end plus reportGrace). The time is cut into turns of
`handoff_seconds`; the turn of the due time picks the primary among the escrow's current oracle set (its signer
list, as the chain holds it): signer `turn mod n`. The signers after it, in the set's order and wrapping around,
are the fallbacks: the oracle at rank r takes the call once the chain's clock reaches `due_at + r × handoff`, if it
has not happened by then. So a primary that is down, partitioned from the agents, or censoring one provider
delays that provider's report by `handoff_seconds` per oracle that fails, and the last fallback starts
`(n − 1) × handoff` after the due time, which `check_handoff` keeps well within reportGrace.

Two oracles acting on the same report is harmless: the chain applies it once and skips the later one
(`SeqNotIncreasing`), and every oracle re-reads a due rental just before batching it, so it does not send what has
already landed. What is wasted is bounded by one batch per oracle per report.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Sequence

from offchain.config import SubmitPolicy


class Role(StrEnum):
    """In what capacity an oracle acts on a due call: in its own turn, or standing in for the ones before it."""

    PRIMARY = "primary"
    FALLBACK = "fallback"


class HandoffTooLong(ValueError):
    """The last fallback's turn would not come well within the escrow's reportGrace."""


def check_handoff(handoff_seconds: int, epoch_seconds: float, oracles: int, report_grace: int) -> None:
    """Raises HandoffTooLong unless the last of `oracles` fallbacks starts, one epoch later at worst, within half of
    `report_grace`: the other half is left for co-signing, the transaction and its confirmations."""
    last_turn = (oracles - 1) * handoff_seconds + epoch_seconds
    if oracles > 1 and 2 * last_turn > report_grace:
        raise HandoffTooLong(
            f"handoff_seconds {handoff_seconds} too long: with {oracles} oracles and {epoch_seconds:g} s epochs the"
            f" last fallback starts {last_turn:g} s after a report is due, past half the escrow's reportGrace"
            f" ({report_grace} s); at most {max(0, int((report_grace / 2 - epoch_seconds) // (oracles - 1)))}"
        )


@dataclass(frozen=True)
class Rotation:
    """This oracle's place in the turn order: its address and policy, and the set-wide `handoff_seconds`."""

    address: str
    policy: SubmitPolicy
    handoff_seconds: int

    def rank(self, signers: Sequence[str], due_at: int) -> int | None:
        """How many oracles come before this one for a call due at `due_at`, or None when it never acts (its policy
        is `never`, or it is not in the set: its signature would not count)."""
        if self.policy is SubmitPolicy.NEVER:
            return None
        if self.policy is SubmitPolicy.ALWAYS:
            return 0
        lowered = [s.lower() for s in signers]
        if self.address.lower() not in lowered:
            return None
        turn = due_at // self.handoff_seconds
        return (lowered.index(self.address.lower()) - turn) % len(lowered)

    def role(self, signers: Sequence[str], due_at: int, now: int) -> Role | None:
        """The role in which this oracle acts now on a call due at `due_at`, or None while it is not its turn."""
        rank = self.rank(signers, due_at)
        if rank is None or now < due_at + rank * self.handoff_seconds:
            return None
        return Role.PRIMARY if rank == 0 else Role.FALLBACK
