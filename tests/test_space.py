"""The typed config's ``grid`` (plain dicts and lists) turned into scikit-learn's parameter grid or distributions."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_hpo.configuration.schema import ConfigError
from mnist_hpo.search.space import build_space

DRAWS = 2000


def draws(distribution, seed: int = 0) -> np.ndarray:
    """``DRAWS`` seeded samples of a scipy distribution."""
    return np.asarray(distribution.rvs(size=DRAWS, random_state=np.random.default_rng(seed)))


def config_error(grid: dict, *, allow_distributions: bool) -> str:
    """The message of the ``ConfigError`` that ``build_space`` raises for ``grid``."""
    with pytest.raises(ConfigError) as raised:
        build_space(grid, allow_distributions=allow_distributions)
    message = str(raised.value)
    assert "\n" not in message
    return message


LR, DROPOUT = "learning_rate", "dropout_dense"
# case: (grid, distributions allowed, the key the message names, what it says)
BAD_GRIDS = {
    "distribution-in-grid-search": (
        {LR: {"dist": "loguniform", "low": 1e-4, "high": 1e-1}},
        False,
        f"grid.{LR}",
        "search.strategy=random",
    ),
    "unknown-dist": ({LR: {"dist": "gauss", "low": 0, "high": 1}}, True, f"grid.{LR}.dist", "'gauss'"),
    "wrong-keys": ({DROPOUT: {"dist": "uniform", "low": 0.0, "hi": 0.5}}, True, f"grid.{DROPOUT}", "exactly dist"),
    "extra-key": (
        {DROPOUT: {"dist": "uniform", "low": 0.0, "high": 0.5, "step": 0.1}},
        True,
        f"grid.{DROPOUT}",
        "exactly dist",
    ),
    "empty-list": ({"batch_size": []}, True, "grid.batch_size", "non-empty list"),
    "scalar": ({"batch_size": 32}, False, "grid.batch_size", "got 32"),
}


@pytest.mark.parametrize("case", sorted(BAD_GRIDS))
def test_bad_grid_entries_raise_one_line_naming_the_key(case):
    grid, allow, names, says = BAD_GRIDS[case]
    message = config_error(grid, allow_distributions=allow)
    assert names in message
    assert says in message


def test_only_the_bad_key_is_named():
    grid = {"batch_size": [32, 64], "epochs": "3"}
    message = config_error(grid, allow_distributions=True)
    assert "grid.epochs" in message and "grid.batch_size" not in message


def test_lists_pass_through_as_the_grid_axes():
    # Given value lists, one of them of list values (filters per conv block)
    grid = {"batch_size": [32, 128], "conv_filters": [[16], [16, 32]]}
    # When they become a parameter grid
    space = build_space(grid, allow_distributions=False)
    # Then every axis keeps its values, lists inside lists included
    assert space == {"batch_size": [32, 128], "conv_filters": [[16], [16, 32]]}
    assert all(type(values) is list for values in space.values())


def test_uniform_spans_low_to_high():
    grid = {"dropout_dense": {"dist": "uniform", "low": 0.2, "high": 0.5}}
    samples = draws(build_space(grid, allow_distributions=True)["dropout_dense"])
    assert samples.min() >= 0.2 and samples.max() <= 0.5
    # The whole interval is used, not just [low, low + something smaller]
    assert samples.min() < 0.21 and samples.max() > 0.49


def test_loguniform_spans_low_to_high_evenly_in_log_space():
    grid = {"learning_rate": {"dist": "loguniform", "low": 1e-4, "high": 1e-1}}
    samples = draws(build_space(grid, allow_distributions=True)["learning_rate"])
    assert samples.min() >= 1e-4 and samples.max() <= 1e-1
    # A third of the draws in each decade: the log-uniform median is 10**-2.5, not the midpoint.
    assert np.median(samples) == pytest.approx(10**-2.5, rel=0.2)


def test_randint_includes_high():
    space = build_space({"dense_units": {"dist": "randint", "low": 8, "high": 12}}, allow_distributions=True)
    samples = draws(space["dense_units"])
    assert set(samples.tolist()) == {8, 9, 10, 11, 12}


def test_choice_becomes_a_list_of_its_values():
    grid = {"activation": {"dist": "choice", "values": ["relu", "tanh"]}}
    space = build_space(grid, allow_distributions=True)
    assert space == {"activation": ["relu", "tanh"]}
    assert type(space["activation"]) is list
