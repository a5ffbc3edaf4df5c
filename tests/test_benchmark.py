"""The benchmark harness end to end on a tiny workload: three ways, one JSON, equal scores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import resources

from conftest import ROOT


def test_benchmark_times_three_ways_and_they_agree_on_every_score(tmp_path):
    with resources.as_file(resources.files("mnist_hpo") / "assets" / "mnist_subset.npz") as data:
        result = subprocess.run(
            [
                sys.executable,
                str(ROOT / "scripts" / "benchmark.py"),
                f"--data={data}",
                f"--out={tmp_path / 'bench.json'}",
                "--set=data.train_size=600",
                "--set=search.cv=2",
                "--set=grid.model__activation=[relu,tanh]",
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
    ways = ("runner", "baseline", "floor")
    for way in ways:
        assert report[way]["wall_s"] > 0
        assert set(report[way]["scores"]) == {"relu / mse / 64", "tanh / mse / 64"}
    for key, score in report["runner"]["scores"].items():
        assert 0.1 < score <= 1.0
        assert report["baseline"]["scores"][key] == score
        assert report["floor"]["scores"][key] == score
    assert set(report["ratios"]) == {"runner/baseline", "runner/floor"}
    assert report["max_score_difference"] == 0
    assert "between ways: 0.0000" in result.stdout
    assert report["machine"]
