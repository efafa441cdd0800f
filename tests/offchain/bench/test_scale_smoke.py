"""The scale simulation (`bench.scale`) at a tiny size, end to end: agents in a second process, one real oracle,
Brownie's anvil; the chain must show every accepted report exactly once."""

from bench.scale import measure


def test_every_accepted_report_lands_on_chain_exactly_once():
    result = measure(agents=120, minutes=2, minute_seconds=4.0, drain_seconds=30.0)  # batches of 100 and more

    chain_checks = [f for f in result.figures if f.target.source == "issue #5"]
    assert {f.name for f in chain_checks} >= {
        "reports lost",
        "reports duplicated on chain",
        "rentals whose on-chain seq equals the reports sent",
    }
    figures = {f.name: f for f in result.figures}
    for figure in [
        *chain_checks,
        figures["reports accepted by the oracle"],
        figures["accepted reports on chain by the end"],
    ]:
        assert figure.met, (figure, result.notes)
