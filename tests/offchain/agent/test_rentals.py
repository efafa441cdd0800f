"""The rental book keeps each rental's cumulative report totals exactly, and a reopened book continues them."""

from __future__ import annotations

from fractions import Fraction

from eth_utils import keccak

from offchain.agent.rentals import Phase, RentalBook
from offchain.chain.events import RentalOpened
from offchain.protocol.messages import ZERO_ROOT
from offchain.sqlite import open_db
from offchain.telemetry.window import UsageTotals

RENTAL = 2**40 + 3


def opened() -> RentalOpened:
    return RentalOpened(
        rental_id=RENTAL,
        offer_id=RENTAL >> 32,
        renter="0x" + "44" * 20,
        price_per_second=1,
        duration=3_600,
        deposit=3_600,
        job_spec_hash=keccak(text="spec"),
        block_number=1,
        log_index=0,
        tx_hash="0x" + "00" * 32,
    )


def test_totals_and_root_survive_reopening_the_book_exactly(tmp_path):
    path = tmp_path / "agent.sqlite"
    db = open_db(path)
    book = RentalBook(db)
    book.apply(opened())
    book.mark_started(
        RENTAL, since=100, ends_at=3_700, next_seq=1, period_start=100, totals=UsageTotals(), prev_root=ZERO_ROOT
    )
    started = book.get(RENTAL)
    assert (started.phase, started.totals, started.prev_root) == (Phase.RUNNING, UsageTotals(), ZERO_ROOT)
    totals = UsageTotals(delivered_seconds=59, util_seconds=Fraction(1, 3) + Fraction(5_831, 200))
    book.advance(RENTAL, next_seq=2, period_start=160, totals=totals, prev_root=keccak(text="root 1"))
    db.close()

    reopened = RentalBook(open_db(path)).get(RENTAL)
    assert (reopened.next_seq, reopened.period_start) == (2, 160)
    assert reopened.totals == totals and reopened.totals.util_seconds.denominator == 600
    assert reopened.prev_root == keccak(text="root 1")


def test_a_book_without_totals_starts_them_at_zero(tmp_path):
    book = RentalBook(open_db(tmp_path / "agent.sqlite"))
    book.apply(opened())
    record = book.get(RENTAL)
    assert (record.totals, record.prev_root) == (UsageTotals(), ZERO_ROOT)
