from brownie import chain

from offchain.reports import ReportStatus

from tests.contracts.helpers import PRICE, report


def test_rental_runs_end_to_end(escrow, registry, token, provider, renter, treasury, list_offer, open_rental, submit):
    offer = list_offer(provider)
    rid = open_rental(renter, offer, duration=600)
    start = escrow.getRental(rid)[4]
    chain.sleep(300)
    chain.mine()
    submit([report(rid, 1, start + 300, 300, status=ReportStatus.COMPLETED)])
    assert escrow.getRental(rid)[0] == 4  # Completed
    assert escrow.balanceOf(provider) == 300 * PRICE * 9750 // 10000
    assert escrow.balanceOf(renter) == 300 * PRICE
