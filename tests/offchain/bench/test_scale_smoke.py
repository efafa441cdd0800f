"""The scale simulation (`bench.scale`) at a tiny size, end to end: agents in a second process, the verifier in
this one, Brownie's anvil; every report must be verified and each on-chain rental's latest report must be on chain
exactly once."""

from bench.scale import measure

CHAIN_CHECKS = {
    "reports verified",
    "rentals without all their reports verified",
    "latest reports landed on chain",
    "reports lost",
    "reports duplicated on chain",
    "rentals whose on-chain seq is the latest sent",
}


def test_every_report_is_verified_and_each_rentals_latest_lands_on_chain_exactly_once():
    result = measure(agents=300, minutes=2, minute_seconds=4.0, chain_rentals=120)  # batches of 100 and of 20

    figures = {f.name: f for f in result.figures}
    assert CHAIN_CHECKS <= set(figures)
    for name in CHAIN_CHECKS:
        assert figures[name].met, (figures[name], result.notes)
    assert figures["latest reports landed on chain"].value == 120
