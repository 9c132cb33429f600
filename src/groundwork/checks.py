"""Argument checks shared by every layer: each raises :class:`~groundwork.errors.ConfigError`
naming the option and the value, so a bad number from a recipe or the command line is reported as
``train.max_steps must be a positive integer, got -5`` instead of failing deep inside torch.
"""

import math
from typing import Any

from groundwork.errors import ConfigError


def positive_int(name: str, value: Any) -> int:
    """Return ``value`` if it is an integer >= 1 (not a bool), else raise ``ConfigError``.

    >>> positive_int("batch_size", 8)
    8
    """
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


def non_negative_int(name: str, value: Any) -> int:
    """Return ``value`` if it is an integer >= 0 (not a bool), else raise ``ConfigError``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")
    return value


def positive_number(name: str, value: Any) -> float:
    """Return ``value`` if it is a finite number > 0, else raise ``ConfigError``."""
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def in_range(
    name: str, value: Any, low: float, high: float, *, high_inclusive: bool = True
) -> float:
    """Return ``value`` if ``low <= value <= high`` (``< high`` when not ``high_inclusive``)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and low <= value and (value <= high if high_inclusive else value < high)
    if not ok:
        bracket = "]" if high_inclusive else ")"
        raise ConfigError(f"{name} must be in [{low}, {high}{bracket}, got {value!r}")
    return float(value)
