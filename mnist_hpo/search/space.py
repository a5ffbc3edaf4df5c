"""Turns the ``grid`` config group into a scikit-learn parameter grid or distributions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scipy import stats

from mnist_hpo.configuration.schema import ConfigError

DISTRIBUTIONS = {
    "uniform": lambda low, high: stats.uniform(low, high - low),
    "loguniform": stats.loguniform,
    "randint": lambda low, high: stats.randint(low, high + 1),
}


def distribution(key: str, spec: Mapping[str, Any]) -> Any:
    """Build the scipy distribution a ``{dist: ..., low: ..., high: ...}`` entry describes."""
    name = spec.get("dist")
    if name == "choice":
        values = spec.get("values")
        if set(spec) != {"dist", "values"} or not isinstance(values, list) or not values:
            raise ConfigError(f"grid.{key}: a choice takes exactly dist and values, a non-empty list")
        return list(values)
    if name not in DISTRIBUTIONS:
        valid = ", ".join([*DISTRIBUTIONS, "choice"])
        raise ConfigError(f"grid.{key}.dist: unknown distribution {name!r}; valid: {valid}")
    if set(spec) != {"dist", "low", "high"}:
        raise ConfigError(f"grid.{key}: a {name} distribution takes exactly dist, low and high")
    low, high = spec["low"], spec["high"]
    numbers = all(isinstance(bound, int | float) and not isinstance(bound, bool) for bound in (low, high))
    if not numbers or not (low <= high if name == "randint" else low < high) or (name == "loguniform" and low <= 0):
        least = "0 < low < high" if name == "loguniform" else ("low <= high" if name == "randint" else "low < high")
        raise ConfigError(f"grid.{key}: {name} from {low!r} to {high!r}; it needs numbers with {least}")
    return DISTRIBUTIONS[name](low, high)


def is_distribution(value: Any) -> bool:
    """True for a ``{dist: ...}`` mapping rather than a list of values."""
    return isinstance(value, Mapping)


def build_space(grid: Mapping[str, Any], *, allow_distributions: bool) -> dict[str, Any]:
    """Convert the grid config to sklearn's ``param_grid`` / ``param_distributions``.

    Args:
        grid: Estimator parameter (a ``model`` field's name) to a list of values or a distribution.
        allow_distributions: Whether ``{dist: ...}`` entries are allowed (random search).

    Returns:
        A dict of lists (and scipy distributions where allowed).
    """
    space: dict[str, Any] = {}
    for key, value in grid.items():
        if is_distribution(value):
            if not allow_distributions:
                raise ConfigError(
                    f"grid.{key}: distributions need search.strategy=random, optuna or halving; "
                    "a grid search needs a list of values"
                )
            space[key] = distribution(key, value)
        elif isinstance(value, list) and value:
            space[key] = value
        else:
            raise ConfigError(f"grid.{key}: expected a non-empty list of values, got {value!r}")
    return space


def bounding_values(space: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Per axis, the values that bound what any candidate can draw: what checks before training test.

    A list gives its values; a distribution its two ends (randint its lowest and highest integer;
    uniform and loguniform low and high, as floats, which a key that needs whole numbers refuses).
    The package's checks are monotone in the value (a larger kernel or pooling window leaves a
    smaller feature map; a range holds if both ends are inside it), so the ends stand for
    everything between; a user's builder is built at the ends.
    """
    return {
        key: value if isinstance(value, list) else [end.item() for end in value.support()]
        for key, value in space.items()
    }
