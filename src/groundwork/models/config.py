"""Validation helpers shared by the model configs (``GPTConfig``, ``LlamaConfig``), and the
per-layer head counts of a model whose attention heads were pruned (``pruned_heads``).

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


def kept_heads(
    n_heads: int, n_kv_heads: int, removed: Iterable[int]
) -> tuple[list[int], list[int]]:
    """The query heads and key/value heads an attention layer keeps when query heads ``removed``
    go (indices in ``0..n_heads-1``), both ascending.

    With grouped-query attention key/value head ``g`` serves query heads ``g * r .. (g + 1) * r
    - 1`` (``r = n_heads // n_kv_heads``), as many for every group; a key/value head goes with
    the last query head of its group, and every group that stays must keep as many query heads
    as the others.

    >>> kept_heads(4, 2, [2, 3])  # the second group, with its key/value head
    ([0, 1], [0])

    Raises:
        ConfigError: a head out of range, every head removed, or groups left uneven.
    """
    gone, n_rep = set(removed), n_heads // n_kv_heads
    if not gone <= set(range(n_heads)):
        raise ConfigError(f"heads {sorted(gone)} are not all among the layer's {n_heads} heads")
    kept = [h for h in range(n_heads) if h not in gone]
    if not kept:
        raise ConfigError(f"cannot remove all {n_heads} heads of an attention layer")
    kept_kv = sorted({h // n_rep for h in kept})
    if any(sum(h // n_rep == g for h in kept) != len(kept) // len(kept_kv) for g in kept_kv):
        raise ConfigError(
            f"grouped-query attention needs the same number of query heads per group; removing "
            f"{sorted(gone)} of {n_heads} heads in {n_kv_heads} groups leaves them uneven"
        )
    return kept, kept_kv


def check_pruned_heads(config: Any) -> None:
    """Normalise and check ``config.pruned_heads`` in place: ``{layer: [query heads removed]}``,
    original indices (as ``transformers``' ``pruned_heads``), keys and heads as ints (a
    ``config.yaml`` or JSON may bring strings), each layer's heads sorted, empty layers dropped.

    Raises:
        ConfigError: a layer outside ``0..n_layers-1`` or heads :func:`kept_heads` refuses.
    """
    try:
        pruned = {int(k): sorted({int(h) for h in v}) for k, v in dict(config.pruned_heads).items()}
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"pruned_heads must map layer indices to lists of head indices, got "
            f"{config.pruned_heads!r}"
        ) from err
    for layer, heads in pruned.items():
        if not 0 <= layer < config.n_layers:
            raise ConfigError(f"pruned_heads: layer {layer} is not in 0..{config.n_layers - 1}")
        try:
            kept_heads(config.n_heads, config.n_kv_heads, heads)
        except ConfigError as err:
            raise ConfigError(f"pruned_heads, layer {layer}: {err}") from err
    config.pruned_heads = {k: v for k, v in sorted(pruned.items()) if v}


def layer_heads(config: Any, layer: int) -> tuple[int, int]:
    """``(query heads, key/value heads)`` of attention layer ``layer`` after
    ``config.pruned_heads``."""
    kept, kept_kv = kept_heads(
        config.n_heads, config.n_kv_heads, config.pruned_heads.get(layer, ())
    )
    return len(kept), len(kept_kv)


def check_not_pruned(config: Any, target: str) -> None:
    """Raise ``ConfigError`` if ``config`` has pruned attention heads: ``target`` (a format with
    one head count for every layer) cannot describe them."""
    if getattr(config, "pruned_heads", None):
        raise ConfigError(
            f"this model's attention heads were pruned (pruned_heads {config.pruned_heads}): "
            f"{target} has one head count for every layer and cannot describe it; keep it as a "
            "groundwork run (groundwork.runs.write_run)"
        )
