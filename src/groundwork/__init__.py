"""Groundwork: the foundations of large language models, built from scratch, tested against the
implementations the field trusts. See the docs (``make docs``) for the chapters."""

__version__ = "0.1.0"

from groundwork.errors import GroundworkError

__all__ = ["GroundworkError", "__version__"]
