"""The oracles' skip predictor (`offchain.chain.skips.predict_skip`) against the escrow itself: generated reports
for rentals in every state are predicted from the rental as `getRental` reads it and the block's timestamp, then
submitted in that block; the prediction must be the `ReportSkipped` reason, or None when the report applied."""

import random

from brownie import chain

from offchain.chain.reads import Rental
from offchain.chain.skips import predict_skip
from offchain.protocol.reports import rental_id
from offchain.protocol.status import RentalStatus, SkipReason
from tests.contracts.helpers import at_next_block, block_time, wait
from tests.contracts.unit.RentalEscrow.escrow_helpers import unchecked_report

REPORTS = 200


def on_chain(escrow, rid):
    return Rental.model_validate(escrow.getRental(rid).dict())


def generated_report(rng, rid, rental, when):
    """A report of `rid` near its applied state: every field a little below, at or above where it would apply."""
    since = rental.since
    seq = max(0, rental.last_seq + rng.choice((-1, 0, 1, 1, 1, 2)))
    covered_until = max(0, rng.choice((since + rental.covered_seconds, when, when - 5, when + 3, since - 1)))
    room = max(0, covered_until - since)
    delivered = max(0, rng.choice((room, room, room + 1, rental.delivered_seconds - 1, room // 2)))
    util = max(0, rng.choice((delivered, delivered, delivered + 1, rental.util_seconds - 1, delivered // 2)))
    status = rng.choice((0,) * 10 + (1, 2, 3, 3))
    return unchecked_report(rid, seq, covered_until, delivered, util, status=status)


def test_the_predicted_skip_reason_is_the_escrows(
    escrow, params, submit, list_offer, open_rental, provider, provider2, renter
):
    rng = random.Random(14)
    offers = [list_offer(provider), list_offer(provider2), list_offer(provider), list_offer(provider2)]
    rentals = [open_rental(renter, offer) for offer in offers]
    escrow.start(rentals[0], {"from": provider})
    wait(120)
    seen: set[SkipReason | None] = set()

    for index in range(REPORTS):
        if index == REPORTS // 2:
            # The running rentals are terminated and the Open ones time out.
            for rid in rentals:
                if on_chain(escrow, rid).status is RentalStatus.RUNNING:
                    escrow.terminate(rid, {"from": renter})
            wait(params.start_timeout + 1)
        # The last rental gets no report before the start timeout passed.
        reporting = rentals if index >= REPORTS // 2 else rentals[:-1]
        choice = rng.randrange(len(reporting) + 2)
        if choice < len(reporting):
            rid = reporting[choice]
        elif choice == len(reporting):
            rid = rental_id(offers[0], 0)
        else:
            rid = rentals[1] + 1  # the offer's next rental, not opened
        rental = on_chain(escrow, rid)
        when = block_time() + rng.randrange(1, 4)
        bad = generated_report(rng, rid, rental, when)
        expected = predict_skip(bad, rental, when, params.start_timeout)

        at_next_block(when)
        tx = submit([bad])

        skipped = [e["reason"] for e in tx.events["ReportSkipped"]] if "ReportSkipped" in tx.events else []
        assert skipped == ([] if expected is None else [expected]), (index, bad, rental, when)
        if expected is None:
            assert tx.events["ReportApplied"][0]["seq"] == bad.seq
        seen.add(expected)

    assert seen == set(SkipReason) | {None}, f"branches not reached: {(set(SkipReason) | {None}) - seen}"


def predicted_and_skipped(escrow, submit, params, bad, when):
    """The predicted reason for `bad` in a block at `when`, and the escrow's, after submitting it there."""
    expected = predict_skip(bad, on_chain(escrow, bad.rental_id), when, params.start_timeout)
    at_next_block(when)
    tx = submit([bad])
    return expected, (tx.events["ReportSkipped"][0]["reason"] if "ReportSkipped" in tx.events else None)


def test_an_open_rental_takes_a_report_up_to_its_start_timeout_and_not_a_second_later(escrow, submit, params, rid):
    opened = on_chain(escrow, rid).since
    late = unchecked_report(rid, 1, opened + 10, 10)
    deadline = opened + params.start_timeout

    chain.snapshot()
    assert predicted_and_skipped(escrow, submit, params, late, deadline + 1) == (SkipReason.START_TIMED_OUT,) * 2
    chain.revert()
    assert predicted_and_skipped(escrow, submit, params, late, deadline) == (None, None)


def test_coverage_up_to_the_block_time_applies_and_a_second_more_is_in_the_future(escrow, submit, params, rid, started):
    when = block_time() + 60

    ahead = unchecked_report(rid, 1, when + 1, 10)
    assert predicted_and_skipped(escrow, submit, params, ahead, when) == (SkipReason.COVERAGE_IN_FUTURE,) * 2
    exact = unchecked_report(rid, 1, when + 5, 10)
    assert predicted_and_skipped(escrow, submit, params, exact, when + 5) == (None, None)
