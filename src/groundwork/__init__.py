"""Groundwork: the foundations of large language models, built from scratch, tested against the
implementations the field trusts. See the docs (``make docs``) for the chapters."""

__version__ = "0.1.0"

from typing import TYPE_CHECKING

from groundwork.errors import GroundworkError


def load(name: str, **kwargs: object) -> "Pretrained":
    """Load a named pretrained model and its tokenizer; see :func:`groundwork.pretrained.load`.

    >>> smol = groundwork.load("smollm2-135m-instruct")  # doctest: +SKIP
    >>> smol.model, smol.tokenizer, smol.chat_template  # doctest: +SKIP
    """
    from groundwork.pretrained import load as load_pretrained

    return load_pretrained(name, **kwargs)  # type: ignore[arg-type]


if TYPE_CHECKING:
    from groundwork.pretrained import Pretrained

__all__ = ["GroundworkError", "__version__", "load"]
