"""Figures a person would rather look at than read (pure: each returns a Figure)."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mnist_hpo.search.evaluation import SearchResult


def new_figure(size: tuple[float, float], rows: int = 1, columns: int = 1, **options: Any) -> tuple[Figure, Any]:
    """A figure and its axes, made without pyplot: nothing keeps it alive once its caller drops it.

    pyplot registers every figure until closed, so a long study's plots piled up in memory.
    """
    figure = Figure(figsize=size)
    return figure, figure.subplots(rows, columns, **options)


def as_label(value: object) -> str:
    """Axis labels for parameter values (lists included)."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def scores_by_value(frame: pd.DataFrame, axis: str) -> pd.Series:
    """Mean CV score per value of one axis, averaged over every other axis."""
    return frame.groupby(frame[axis].map(as_label), sort=False)["mean_test_score"].mean()


def axis_scores_figure(result: SearchResult) -> Figure:
    """Mean CV score per value of each grid axis."""
    axes_names = [axis for axis in result.axes if result.candidates[axis].map(as_label).nunique() > 1]
    axes_names = axes_names or result.axes
    figure, panels = new_figure((4 * len(axes_names), 3.2), 1, len(axes_names), squeeze=False)
    for panel, axis in zip(panels[0], axes_names, strict=True):
        series = scores_by_value(result.candidates, axis)
        # Bars at positions, labels as ticks: matplotlib's category axis logs noise for "8", "32".
        panel.bar(range(len(series)), series.values, tick_label=list(series.index), color="tab:blue")
        panel.set_title(axis, fontsize=9)
        panel.set_ylabel("mean CV score")
        panel.tick_params(axis="x", labelrotation=30, labelsize=8)
        finite = series.dropna()
        if len(finite):
            panel.set_ylim(max(0.0, finite.min() - 0.05), min(1.0, finite.max() + 0.02))
    figure.tight_layout()
    return figure


def heatmap_figures(result: SearchResult) -> dict[str, Figure]:
    """One heatmap of mean CV score for each pair of crossed axes."""
    frame = result.candidates
    varying = [axis for axis in result.axes if frame[axis].map(as_label).nunique() > 1]
    figures = {}
    for row_axis, col_axis in combinations(varying, 2):
        table = frame.assign(
            **{row_axis: frame[row_axis].map(as_label), col_axis: frame[col_axis].map(as_label)}
        ).pivot_table(index=row_axis, columns=col_axis, values="mean_test_score", aggfunc="mean")
        figure, panel = new_figure((1.2 * table.shape[1] + 3, 0.6 * table.shape[0] + 2))
        image = panel.imshow(table.values, cmap="viridis", aspect="auto")
        panel.set_xticks(range(table.shape[1]), table.columns, rotation=30, fontsize=8)
        panel.set_yticks(range(table.shape[0]), table.index, fontsize=8)
        panel.set_xlabel(col_axis)
        panel.set_ylabel(row_axis)
        for (i, j), value in np.ndenumerate(table.values):
            panel.text(
                j,
                i,
                "nan" if np.isnan(value) else f"{value:.3f}",
                ha="center",
                va="center",
                color="white",
                fontsize=7,
            )
        figure.colorbar(image, ax=panel, label="mean CV score")
        figure.tight_layout()
        figures[f"heatmap_{row_axis}_x_{col_axis}.png"] = figure
    return figures


def fit_time_figure(result: SearchResult) -> Figure:
    """Mean training time of each candidate (as recorded when its fits trained), in rank order."""
    frame = result.candidates.sort_values("rank_test_score")
    figure, panel = new_figure((max(4, 0.35 * len(frame) + 2), 3.2))
    labels = [str(i) for i in frame.index]
    panel.bar(range(len(frame)), frame["mean_training_time"], tick_label=labels, color="tab:orange")
    panel.set_xlabel("candidate (rank order)")
    panel.set_ylabel("mean training time (s)")
    figure.tight_layout()
    return figure


def learning_curves_figure(history: dict[str, list[float]]) -> Figure:
    """Loss and accuracy per epoch (training and validation) of one fit."""
    figure, (loss_panel, accuracy_panel) = new_figure((8, 3.2), 1, 2)
    for name, values in history.items():
        panel = accuracy_panel if "acc" in name else loss_panel
        panel.plot(range(1, len(values) + 1), values, marker="o", label=name)
    for panel, title in ((loss_panel, "loss"), (accuracy_panel, "accuracy")):
        panel.set_xlabel("epoch")
        panel.set_title(title)
        panel.legend(fontsize=8)
    figure.tight_layout()
    return figure


def confusion_figure(confusion: np.ndarray, labels: Sequence[Any] | None = None) -> Figure:
    """The test-set confusion matrix, true class by predicted class (in the order of ``labels``)."""
    figure, panel = new_figure((5, 4.5))
    image = panel.imshow(confusion, cmap="Blues")
    labels = list(range(len(confusion))) if labels is None else list(labels)
    panel.set_xticks(range(len(labels)), [str(label) for label in labels])
    panel.set_yticks(range(len(labels)), [str(label) for label in labels])
    panel.set_xlabel("predicted class")
    panel.set_ylabel("true class")
    for (i, j), value in np.ndenumerate(confusion):
        panel.text(
            j,
            i,
            str(value),
            ha="center",
            va="center",
            fontsize=7,
            color="white" if value > confusion.max() / 2 else "black",
        )
    figure.colorbar(image, ax=panel)
    figure.tight_layout()
    return figure


def influence_figure(ranking: pd.DataFrame) -> Figure:
    """Horizontal bars: each hyperparameter's spread of stage-1 mean CV score, largest on top."""
    figure, panel = new_figure((6, 0.4 * len(ranking) + 1.5))
    panel.barh(ranking["hyperparameter"][::-1], ranking["influence"][::-1], color="tab:blue")
    panel.set_xlabel("best - worst mean CV score")
    panel.set_title("Influence of each hyperparameter (stage 1)", fontsize=10)
    figure.tight_layout()
    return figure


def difference_figure(result: SearchResult) -> Figure:
    """A forest plot: each candidate's difference to the best with its 95 % interval, tied ones marked."""
    frame = result.candidates.dropna(subset=["diff_vs_best"]).sort_values("diff_vs_best")
    labels = [" / ".join(as_label(row[axis]) for axis in result.axes) for _, row in frame.iterrows()]
    figure, axes = new_figure((7, 0.35 * len(frame) + 1.5))
    positions = np.arange(len(frame))[::-1]
    colours = ["tab:green" if tied else "tab:red" for tied in frame["tied_with_best"]]
    errors = [frame["diff_vs_best"] - frame["diff_low"], frame["diff_high"] - frame["diff_vs_best"]]
    axes.errorbar(frame["diff_vs_best"], positions, xerr=np.abs(np.asarray(errors)), fmt="none", ecolor="grey")
    axes.scatter(frame["diff_vs_best"], positions, c=colours, zorder=3)
    axes.axvline(0, color="black", linewidth=0.8)
    axes.set_yticks(positions, labels)
    axes.set_xlabel("best minus candidate, mean CV score (95 % corrected interval)")
    axes.set_title("Difference to the best (green: tied with it)")
    figure.tight_layout()
    return figure


def search_figures(result: SearchResult, best_history: dict[str, list[float]] | None) -> dict[str, Figure]:
    """Every plot a search run carries, by file name; the best fit's curves when it was refitted."""
    figures = {
        "scores_by_axis.png": axis_scores_figure(result),
        "fit_time.png": fit_time_figure(result),
        "difference_to_best.png": difference_figure(result),
    }
    figures |= heatmap_figures(result)
    if best_history is not None:
        figures["learning_curves_best.png"] = learning_curves_figure(best_history)
    if result.test is not None:
        figures["confusion_matrix.png"] = confusion_figure(result.test.confusion, result.test.classes)
    return figures
