"""Renders a search result as rich terminal tables (pure: builds, never prints)."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from mnist_hpo.search.evaluation import SearchResult

if TYPE_CHECKING:
    from mnist_hpo.tracking.links import RunLinks

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
    """Every candidate, best first: its values, CV mean ± std, per-fold scores, training time (as trained)."""
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
    table.add_column("best − this [95% CI]", justify="right")
    table.add_column("p", justify="right")
    table.add_column("tied", justify="center")
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
        cells.append(f"{row['mean_training_time']:.1f}")
        cells += comparison_cells(row, index == result.best_index)
        cells.append(status(result, index, row["failed"]))
        table.add_row(*cells)
    return table


def comparison_cells(row: pd.Series, is_best: bool) -> list[str]:
    """The best minus this candidate with its interval, the one-sided p-value, and the tie verdict."""
    if is_best:
        return ["—", "", "[green]=[/green]"]
    if math.isnan(row["diff_vs_best"]):
        return ["", "", ""]
    interval = f"{row['diff_vs_best']:+.4f} [{row['diff_low']:+.4f}, {row['diff_high']:+.4f}]"
    return [interval, f"{row['p_value']:.3f}", "yes" if row["tied_with_best"] else "no"]


def status(result: SearchResult, index: int, failed: bool) -> str:
    """failed, best, or refitted (a refit rule's choice other than the best)."""
    if failed:
        return "[red]failed[/red]"
    marks = ["[green]best[/green]"] if index == result.best_index else []
    if result.refit_index == index and index != result.best_index:
        marks.append(f"[cyan]refitted ({result.refit_rule})[/cyan]")
    return " ".join(marks)


def verdict(result: SearchResult) -> str:
    """Whether the best is distinguishable from the rest, in words."""
    if result.tied == 0:
        return "better than every other candidate (corrected paired t-test)"
    return f"NOT distinguishable from {result.tied} other candidate(s): tied at p >= alpha"


def best_table(result: SearchResult) -> Table:
    """The best candidate's parameters, whether it is really better, what was refitted, and its test metrics."""
    table = Table(title="Best candidate", show_header=False)
    table.add_column("name", style="bold")
    table.add_column("value", justify="right")
    for name, value in sorted(result.best_params.items()):
        table.add_row(name, short(value))
    table.add_row("mean CV score", f"{result.best_score:.4f}")
    table.add_row("is it really better?", verdict(result))
    if result.refit_rule is not None:
        refitted = result.candidates.iloc[result.refit_index]
        chosen = ", ".join(f"{axis}={short(refitted[axis])}" for axis in result.axes)
        table.add_row(f"refitted (search.refit={result.refit_rule})", chosen)
    if result.test is not None:
        for name, value in result.test.metrics().items():
            table.add_row(name, f"{value:.4f}")
    return table


def result_view(result: SearchResult) -> Group:
    """The full terminal report of one search."""
    return Group(candidate_table(result), best_table(result))


def places_view(output_dir: Path, csv_path: Path, links: RunLinks | None) -> Text:
    """Where a finished search left everything, one ``name  place`` line each.

    Print it with ``soft_wrap=True``: a path or link that rich wraps in two cannot be copied or clicked.
    """
    places = {"output folder": str(output_dir), "cv_results.csv": str(csv_path)}
    if links is not None:
        places |= {"MLflow search run": links.run, "MLflow experiment": links.experiment}
        places["best model"] = links.model_uri or "not logged (tracking.log_model=false or no refit)"
        if links.ui_command:
            places["MLflow UI"] = f"{links.ui_command}  (serves the links above)"
    width = max(map(len, places))
    view = Text()
    view.append("Where everything is\n", style="bold")
    view.append("\n".join(f"  {name:<{width}}  {place}" for name, place in places.items()))
    return view


def influence_table(ranking: pd.DataFrame) -> Table:
    """The influence ranking as a rich table, with each spread's interval and whether it is detectable."""
    table = Table(title="Hyperparameters by influence (stage-1 spread of mean CV score, best minus worst)")
    for column in ("rank", "hyperparameter", "influence [95% CI]", "detectable", "best value", "best", "worst"):
        table.add_column(column, justify="left" if column in ("hyperparameter", "best value") else "right")
    for rank, row in enumerate(ranking.itertuples(), start=1):
        table.add_row(
            str(rank),
            row.hyperparameter,
            f"{row.influence:.4f} [{row.influence_low:+.4f}, {row.influence_high:+.4f}]",
            "yes" if row.detectable else "no detectable influence",
            json.dumps(row.best_value),
            f"{row.best_score:.4f}",
            f"{row.worst_score:.4f}",
        )
    return table
