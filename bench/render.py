"""The one renderer of benchmark results: the console table (rich), `docs/PERFORMANCE.md` and the chart."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from rich.console import Console
from rich.table import Table

from bench.records import BenchReport, Figure, SectionResult, Series

TARGET_LINESTYLES = ["--", ":", "-."]
OP_SIGNS = {"<": "<", "<=": "≤", ">=": "≥", "==": "="}
PANELS = {
    "gas": ("Gas per report against batch size", "reports in the submitReports batch", "gas per report"),
    "ingest": ("Oracle ingest latency against load", "concurrent agents", "latency (ms)"),
}


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit in ("gas", "reports", "reports/s", "batches", "transactions", "agents"):
        return f"{value:,.0f} {unit}"
    if unit == "µs":
        return f"{value:,.0f} µs"
    if unit == "% of one core":
        return f"{value:.2g}% of one core"
    if unit in ("ms", "s") and float(value).is_integer():
        return f"{value:,.0f} {unit}"
    if unit == "ms":
        return f"{value:.2f} ms" if value < 100 else f"{value:,.0f} ms"
    if unit == "s":
        return f"{value:.2f} s" if value < 10 else f"{value:,.1f} s"
    return f"{value:,.2f} {unit}".strip()


def format_target(figure: Figure) -> str:
    target = figure.target
    if target is None:
        return "—"
    threshold = format_value(target.threshold, figure.unit)
    return f"{OP_SIGNS[target.op]} {threshold} ({target.source})"


def format_met(figure: Figure) -> str:
    return {True: "yes", False: "NO", None: "n/a"}[figure.met]


def tally(figures: Iterable[Figure]) -> tuple[int, int, int]:
    """(met, missed, not measured) over the figures that have a target."""
    verdicts = [f.met for f in figures if f.target is not None]
    return verdicts.count(True), verdicts.count(False), verdicts.count(None)


# ---------------------------------------------------------------------------------------------- console


def _console() -> Console:
    """The terminal's width on a terminal; wide enough for the table when piped (CI logs, `make bench | tee`)."""
    console = Console()
    return console if console.is_terminal else Console(width=160)


def print_section(section: SectionResult, console: Console | None = None) -> None:
    console = console or _console()
    table = Table(title=f"{section.title} ({section.wall_seconds:.0f} s)", title_justify="left")
    for column, justify in (
        ("figure", "left"),
        ("measured", "right"),
        ("target", "right"),
        ("met", "center"),
        ("why this target / note", "left"),
    ):
        table.add_column(column, justify=justify)
    for figure in section.figures:
        style = {True: "green", False: "bold red", None: "yellow"}[figure.met]
        table.add_row(
            figure.name,
            format_value(figure.value, figure.unit),
            format_target(figure),
            f"[{style}]{format_met(figure)}[/]",
            figure.note,
        )
    console.print(table)
    for note in section.notes:
        console.print(f"  {note}", highlight=False)
    console.print()


# ---------------------------------------------------------------------------------------------- markdown


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(report: BenchReport, chart_name: str) -> str:
    machine = report.machine
    figures = [f for s in report.sections for f in s.figures]
    met, missed, unmeasured = tally(figures)
    lines = [
        "# Performance",
        "",
        f"Written by `make bench` (`python -m bench --network {report.network}`) on "
        f"{report.started_at:%Y-%m-%d %H:%M} UTC in {report.wall_seconds:,.0f} s; regenerate it rather than edit it.",
        "Every figure stands beside its target: the target's source is the issue that set it, or *ours* where no",
        "issue did (the note says how we chose it). Gas is deterministic to a few gas; every timing was taken on",
        "the machine below, whose cores the benchmark shares with the local chain and its own load generator, so",
        "timings are noisy from run to run and say little about a machine with more cores.",
        "",
        f"**{met} of {met + missed + unmeasured} targets met**"
        + (f", {missed} missed" if missed else "")
        + (f", {unmeasured} without a measurement (the notes say why)" if unmeasured else "")
        + ".",
        "",
        "## Machine",
        "",
        "| | |",
        "| --- | --- |",
        f"| CPU | {machine.cpu}, {machine.cores} cores |",
        f"| memory | {machine.memory_gib:.1f} GiB |",
        f"| OS | {machine.os} |",
        f"| Python | {machine.python} |",
        f"| anvil | {machine.anvil} |",
        f"| GPU | {machine.gpu} |",
        f"| commit | {machine.commit} |",
        "",
        f"![gas per report against batch size; ingest latency against concurrent agents]({chart_name})",
        "",
    ]
    for section in report.sections:
        lines += [
            f"## {section.title}",
            "",
            "| figure | measured | target | met | why this target / note |",
            "| --- | ---: | ---: | :---: | --- |",
        ]
        for f in section.figures:
            met_cell = format_met(f) if f.met is not False else "**NO**"
            lines.append(
                f"| {_md_cell(f.name)} | {format_value(f.value, f.unit)} | {format_target(f)} | {met_cell} "
                f"| {_md_cell(f.note)} |"
            )
        lines.append("")
        lines += [f"- {note}" for note in section.notes]
        lines += [f"- Took {section.wall_seconds:,.0f} s.", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- chart


def chart(series: Iterable[Series], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    series = list(series)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    for ax, (panel, (title, xlabel, ylabel)) in zip(axes, PANELS.items()):
        lines = [s for s in series if s.panel == panel]
        target_styles = iter(TARGET_LINESTYLES * len(lines))
        for s in lines:
            xs, ys = [p.x for p in s.points], [p.y for p in s.points]
            if s.style == "target":
                ax.plot(xs, ys, linestyle=next(target_styles), color="0.3", linewidth=1.2, label=s.label)
            else:
                ax.plot(xs, ys, marker="o", linewidth=1.8, label=s.label)
        ax.set_xscale("log")
        if panel == "ingest":
            ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:,.0f}" if y >= 1 else f"{y:g}"))
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        if not lines:
            ax.text(0.5, 0.5, "not measured in this run", ha="center", va="center", transform=ax.transAxes)
        else:
            ticks = sorted({p.x for s in lines for p in s.points})
            ax.set_xticks(ticks)
            ax.set_xticklabels([f"{t:g}" for t in ticks])
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(report: BenchReport, doc_path: Path, chart_path: Path) -> None:
    chart([s for section in report.sections for s in section.series], chart_path)
    doc_path.write_text(markdown(report, chart_path.name) + "\n")
