"""Gas table of a fixed scenario, one row per call, against the budgets of the contracts and protocol v2 issues:
`make gas`.

The scenario, its budgets and the `submitReports` batch curve live in `bench.gas`, which `make bench` also runs;
this prints its table on the active network.
"""

from __future__ import annotations

from bench.gas import measure
from bench.render import print_section


def main():
    print_section(measure())
