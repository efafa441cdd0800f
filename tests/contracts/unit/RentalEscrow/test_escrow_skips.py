"""RentalEscrow.submitReports skips a report that cannot apply, one test per SkipReason: the batch goes through,
ReportSkipped carries the reason, the skipped rental's state is unchanged and the batch's other report applies."""

import pytest

from offchain.protocol.reports import ReportStatus, rental_id
from tests.contracts.helpers import RentalStatus, SkipReason, block_time, report, wait
from tests.contracts.unit.RentalEscrow.escrow_helpers import unchecked_report


@pytest.fixture
def live(escrow, list_offer, open_rental, provider2, renter2):
    """A second running rental, on provider2's offer; returns (rental id, start time)."""
    rid = open_rental(renter2, list_offer(provider2))
    return rid, escrow.start(rid, {"from": provider2}).timestamp


@pytest.fixture
def skipped(escrow, live, submit):
    """Submits `bad` between two reports of the `live` rental and checks that only `bad` was skipped, for `reason`,
    leaving its rental as it was; returns the transaction."""

    def _skipped(bad, reason):
        live_id, live_started = live
        before = escrow.getRental(bad.rental_id).dict()
        covered = block_time() - live_started
        batch = [report(live_id, 1, live_started + covered // 2, covered // 2), bad]
        batch.append(report(live_id, 2, live_started + covered, covered))

        tx = submit(batch)

        assert [dict(e) for e in tx.events["ReportSkipped"]] == [
            {"rentalId": bad.rental_id, "seq": bad.seq, "reason": reason}
        ]
        assert escrow.getRental(bad.rental_id).dict() == before
        assert [(e["rentalId"], e["seq"]) for e in tx.events["ReportApplied"]] == [(live_id, 1), (live_id, 2)]
        assert escrow.getRental(live_id)["deliveredSeconds"] == covered
        return tx

    return _skipped


def test_report_of_unknown_rental_is_skipped(offer, rid, started, skipped):
    wait(600)

    skipped(report(rental_id(offer, 2), 1, block_time(), 0), SkipReason.UNKNOWN_RENTAL)


def test_report_of_nonce_zero_id_is_skipped(offer, rid, started, skipped):
    wait(600)

    skipped(report(rental_id(offer, 0), 1, block_time(), 0), SkipReason.UNKNOWN_RENTAL)


def test_report_of_superseded_rental_is_skipped(escrow, offer, rid, renter, renter2, open_rental, skipped):
    escrow.terminate(rid, {"from": renter})
    open_rental(renter2, offer)
    wait(600)

    skipped(report(rid, 1, block_time(), 0), SkipReason.UNKNOWN_RENTAL)


def test_report_of_final_rental_is_skipped(escrow, rid, started, submit, skipped):
    wait(600)
    submit([report(rid, 1, started + 300, 300, status=ReportStatus.COMPLETED)])

    skipped(report(rid, 2, started + 600, 600), SkipReason.RENTAL_CLOSED)

    assert escrow.getRental(rid)["status"] == RentalStatus.COMPLETED


def test_report_of_rental_past_its_start_timeout_is_skipped(escrow, rid, skipped, params):
    opened = escrow.getRental(rid)["since"]
    wait(params.start_timeout + 1)

    skipped(report(rid, 1, opened + 300, 300), SkipReason.START_TIMED_OUT)

    assert escrow.getRental(rid)["status"] == RentalStatus.OPEN


def test_replayed_report_is_skipped(rid, started, submit, skipped):
    wait(600)
    submit([report(rid, 1, started + 300, 300)])

    skipped(report(rid, 1, started + 600, 600), SkipReason.SEQ_NOT_INCREASING)


def test_report_older_than_the_applied_one_is_skipped(rid, started, submit, skipped):
    wait(600)
    submit([report(rid, 5, started + 300, 300)])

    skipped(report(rid, 4, started + 600, 600), SkipReason.SEQ_NOT_INCREASING)


def test_first_report_with_seq_zero_is_skipped(rid, started, skipped):
    wait(600)

    skipped(unchecked_report(rid, 0, started + 600, 600), SkipReason.SEQ_NOT_INCREASING)


def test_report_with_unknown_status_is_skipped(rid, started, skipped):
    wait(600)

    skipped(unchecked_report(rid, 1, started + 600, 600, status=3), SkipReason.UNKNOWN_STATUS)


def test_report_covering_time_after_the_block_is_skipped(rid, started, skipped):
    wait(600)

    skipped(report(rid, 1, block_time() + 3_600, 600), SkipReason.COVERAGE_IN_FUTURE)


TOTALS_GOING_BACK = {
    "coverage": (299, 250, 200),
    "delivered": (400, 249, 200),
    "utilisation": (400, 250, 199),
}


@pytest.mark.parametrize("covered,delivered,util", TOTALS_GOING_BACK.values(), ids=TOTALS_GOING_BACK.keys())
def test_report_with_a_total_below_the_applied_one_is_skipped(
    rid, started, submit, skipped, covered, delivered, util
):
    wait(600)
    submit([report(rid, 1, started + 300, 250, util=200)])

    skipped(report(rid, 2, started + covered, delivered, util=util), SkipReason.TOTALS_DECREASED)


def test_report_covering_less_than_the_start_is_skipped(rid, started, skipped):
    wait(600)

    skipped(report(rid, 1, started - 1, 0), SkipReason.TOTALS_DECREASED)


def test_report_delivering_more_than_its_coverage_is_skipped(rid, started, skipped):
    wait(600)

    skipped(report(rid, 1, started + 300, 301), SkipReason.DELIVERED_ABOVE_COVERED)


def test_report_with_utilisation_above_delivery_is_skipped(rid, started, skipped):
    wait(600)

    skipped(report(rid, 1, started + 300, 300, util=301), SkipReason.UTILISATION_ABOVE_DELIVERED)


def test_batch_of_only_skipped_reports_goes_through_and_changes_nothing(escrow, offer, rid, started, submit):
    wait(600)
    submit([report(rid, 1, started + 300, 300, status=ReportStatus.COMPLETED)])
    before = escrow.getRental(rid).dict()

    tx = submit([report(rid, 2, started + 600, 300), report(rental_id(offer, 9), 1, started + 600, 0)])

    assert [e["reason"] for e in tx.events["ReportSkipped"]] == [SkipReason.RENTAL_CLOSED, SkipReason.UNKNOWN_RENTAL]
    assert "ReportApplied" not in tx.events
    assert escrow.getRental(rid).dict() == before


def test_skipped_report_does_not_start_an_open_rental(escrow, rid, skipped):
    opened = escrow.getRental(rid)["since"]
    wait(300)

    tx = skipped(report(rid, 1, opened + 300, 301), SkipReason.DELIVERED_ABOVE_COVERED)

    assert "RentalStarted" not in tx.events
    assert escrow.getRental(rid)["status"] == RentalStatus.OPEN
