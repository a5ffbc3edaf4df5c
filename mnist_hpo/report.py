"""Renders a search result as rich terminal tables (pure: builds, never prints)."""

from __future__ import annotations

import math
import os
import sys

from rich.console import Console, Group
from rich.table import Table

from mnist_hpo.evaluation import SearchResult

# Redirected output (a log file, CI, a Hydra joblib job) has no terminal width; rich would
# assume 80 columns and cut the scores in wide tables down to "0.90…".
REDIRECTED_WIDTH = 200


def output_console() -> Console:
    """The console for the run's tables: the terminal's width, or a wide page when redirected."""
    if sys.stdout.isatty() or "COLUMNS" in os.environ:
        return Console()
    return Console(width=REDIRECTED_WIDTH)


def short(value: object) -> str:
    """A compact text for a parameter value."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def candidate_table(result: SearchResult) -> Table:
    """Every candidate, best first: its values, CV mean ± std, per-fold scores, fit time."""
    table = Table(title="Candidates (ranked by mean CV score)", header_style="bold")
    table.add_column("rank", justify="right")
    for axis in result.axes:
        table.add_column(axis)
    if "iter" in result.candidates:
        table.add_column("iter", justify="right")
    table.add_column("CV score", justify="right")
    for split in range(result.n_splits):
        table.add_column(f"fold {split}", justify="right")
    table.add_column("fit s", justify="right")
    table.add_column("status")
    ordered = result.candidates.sort_values(["rank_test_score", "mean_test_score"], ascending=[True, False])
    for index, row in ordered.iterrows():
        mean, std = row["mean_test_score"], row["std_test_score"]
        score = "nan" if math.isnan(mean) else f"{mean:.4f} ± {std:.4f}"
        cells = [str(int(row["rank_test_score"])), *(short(row[axis]) for axis in result.axes)]
        if "iter" in result.candidates:
            cells.append(str(int(row["iter"])))
        cells.append(score)
        cells += [f"{row[f'split{k}_test_score']:.4f}" for k in range(result.n_splits)]
        cells.append(f"{row['mean_fit_time']:.1f}")
        cells.append(
            "[red]failed[/red]" if row["failed"] else ("[green]best[/green]" if index == result.best_index else "")
        )
        table.add_row(*cells)
    return table


def best_table(result: SearchResult) -> Table:
    """The best candidate's parameters and its test metrics."""
    table = Table(title="Best candidate", show_header=False)
    table.add_column("name", style="bold")
    table.add_column("value", justify="right")
    for name, value in sorted(result.best_params.items()):
        table.add_row(name, short(value))
    table.add_row("mean CV score", f"{result.best_score:.4f}")
    if result.test is not None:
        for name, value in result.test.metrics().items():
            table.add_row(name, f"{value:.4f}")
    return table


def result_view(result: SearchResult) -> Group:
    """The full terminal report of one search."""
    return Group(candidate_table(result), best_table(result))
