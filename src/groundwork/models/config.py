"""Validation helpers shared by the model configs (``GPTConfig``, ``LlamaConfig``).

Each check raises :class:`~groundwork.errors.ConfigError` naming the offending field, so a typo in
a recipe or a command-line override is reported as ``model.n_heads: ...`` rather than as a shape
error deep inside a forward pass.
"""

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from groundwork.errors import ConfigError, UnknownNameError, did_you_mean

T = TypeVar("T")


def check_positive(config: object, *fields: str) -> None:
    """Raise ``ConfigError`` unless every named integer field of ``config`` is positive."""
    for field in fields:
        value = getattr(config, field)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{field} must be a positive integer, got {value!r}")


def check_choice(config: object, field: str, choices: Iterable[str]) -> None:
    """Raise ``ConfigError`` unless ``config.<field>`` is one of ``choices``."""
    value = getattr(config, field)
    choices = list(choices)
    if value not in choices:
        raise ConfigError(f"{field} must be one of {choices}, got {value!r}")


def check_divides(config: object, numerator: str, denominator: str) -> None:
    """Raise ``ConfigError`` unless ``config.<denominator>`` divides ``config.<numerator>``."""
    num, den = getattr(config, numerator), getattr(config, denominator)
    if num % den:
        raise ConfigError(f"{numerator} ({num}) must be a multiple of {denominator} ({den})")


def preset(presets: Mapping[str, dict[str, Any]], name: str, kind: str) -> dict[str, Any]:
    """The keyword arguments of preset ``name``, or ``UnknownNameError`` with a suggestion."""
    if name not in presets:
        raise UnknownNameError(f"unknown {kind} preset {name!r}: {did_you_mean(name, presets)}")
    return dict(presets[name])
