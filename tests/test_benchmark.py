"""The benchmark harness end to end on a tiny workload: four ways, one JSON, the same computations score alike."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import resources

from conftest import ROOT


def test_benchmark_times_every_way_and_the_same_computations_agree(tmp_path):
    with resources.as_file(resources.files("mnist_hpo") / "assets" / "mnist_subset.npz") as data:
        result = subprocess.run(
            [
                sys.executable,
                str(ROOT / "scripts" / "benchmark.py"),
                f"--data={data}",
                f"--out={tmp_path / 'bench.json'}",
                "--set=data.train_size=600",
                "--set=search.cv=2",
                "--set=grid.activation=[relu,tanh]",
                "--set=grid.loss=[mse]",
                "--set=grid.batch_size=[64]",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "COLUMNS": "200"},
        )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["workload"]["candidates"] == 2
    assert report["workload"]["folds"] == 2
    ways = ("runner", "fused", "baseline", "floor")
    for way in ways:
        assert report[way]["wall_s"] > 0
        assert set(report[way]["scores"]) == {"relu / mse / 64", "tanh / mse / 64"}
        assert all(0.1 < score <= 1.0 for score in report[way]["scores"].values())
    # The plain ways shuffle as Keras does; the runner, fused or not, feeds the project's batch order
    # (execution/batches.py), so only these pairs are the same computation.
    for key, score in report["baseline"]["scores"].items():
        assert report["floor"]["scores"][key] == score
    for key, score in report["runner"]["scores"].items():
        assert abs(report["fused"]["scores"][key] - score) <= 0.02
    assert {"fused/runner", "runner/baseline", "fused/baseline"} <= set(report["ratios"])
    assert report["machine"]
