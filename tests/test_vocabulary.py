"""One vocabulary: a hyperparameter has one name as config key, grid key, search-space key, MLflow param and column."""

from __future__ import annotations

import ast
from dataclasses import fields

import pandas as pd
import pytest
from conftest import compose_config, run_cli, store_uri
from mlflow_tree import runs_by_level

from mnist_hpo.configuration.schema import ExecutionConfig, ModelConfig
from mnist_hpo.execution.estimator import build_estimator
from mnist_hpo.search.space import build_space

CONFIG_FIELDS = {field.name for field in fields(ModelConfig)}
# Each preset's axes keep their names, one value each: the names are under test, not the grid's size.
PRESETS = {
    "default": ["data.train_size=200", "model.epochs=1"],
    "leohoji": ["experiment=leohoji", "data=embedded", "data.train_size=200", "model.epochs=1", "execution.n_jobs=1"],
}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_each_hyperparameter_of_a_preset_has_one_name_everywhere(preset, tmp_path):
    cfg = compose_config(*PRESETS[preset])
    axes = list(cfg.grid)
    one_each = [f"grid.{name}=[{values[0]}]" for name, values in cfg.grid.items()]
    typed = CONFIG_FIELDS - {"builder", "builder_args"}
    set_by_preset = {name for name in typed if getattr(cfg.model, name) is not None}
    # Config and command line: model.<name>; grid and in-search Optuna space: <name>; the estimator: <name>.
    assert set(axes) <= CONFIG_FIELDS
    assert set(build_space(dict(cfg.grid), allow_distributions=True)) == set(axes)
    estimator = build_estimator(cfg.model, ExecutionConfig(model_cache_mb=0), cfg.seed)
    params = estimator.get_params()
    assert {name: params[name] for name in set_by_preset} == {
        name: list(value) if name == "conv_filters" else value
        for name in set_by_preset
        if (value := getattr(cfg.model, name)) is not None
    }
    result = run_cli(*PRESETS[preset], *one_each, "search.cv=2", "hydra.run.dir=out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    # MLflow: the search run's params are the config's values under the same names, each candidate's its axes.
    levels = runs_by_level(store_uri(tmp_path))
    (search,) = levels["search"]
    assert set_by_preset <= set(search.data.params)
    assert all(search.data.params[name] == str(getattr(cfg.model, name)) for name in set_by_preset - {"conv_filters"})
    (candidate,) = levels["candidate"]
    assert set(axes) <= set(candidate.data.params)
    # cv_results.csv and the printed table: the same names.
    frame = pd.read_csv(tmp_path / "out" / "cv_results.csv")
    assert {f"param_{name}" for name in axes} <= set(frame.columns)
    assert set(ast.literal_eval(frame["params"][0])) == set(axes)
    assert all(name in result.stdout for name in axes)
