"""Checks of one config value against what is allowed, each raising a one-line ``ConfigError``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from mnist_hpo.configuration.schema import ConfigError

Check = Callable[[str, Any], None]


def one_of(valid: Sequence[str]) -> Check:
    """A check that a value is one of ``valid``."""

    def check(key: str, value: Any) -> None:
        if value not in valid:
            raise ConfigError(f"{key}: unknown value {value!r}; valid: {', '.join(valid)}")

    return check


def number(low: float, high: float | None = None, *, integer: bool = False, closed_low: bool = True) -> Check:
    """A check that a value is a number (an int when ``integer``) within [low, high)."""

    def check(key: str, value: Any) -> None:
        kind = int if integer else (int, float)
        low_ok = value >= low if closed_low else value > low
        if isinstance(value, bool) or not isinstance(value, kind) or not low_ok or (high is not None and value >= high):
            bound = f"{'>=' if closed_low else '>'} {low}" + (f" and < {high}" if high is not None else "")
            noun = "an integer" if integer else "a number"
            raise ConfigError(f"{key}: {value!r} must be {noun} {bound}")

    return check
