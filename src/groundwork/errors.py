"""The exceptions Groundwork raises on bad input.

Every error a user can cause derives from :class:`GroundworkError`. Messages say what was wrong and
what to do about it; the CLI prints them on one line and exits with status 2 (``--debug`` shows the
traceback). Subclasses also derive from the closest built-in exception (``ValueError``,
``FileNotFoundError``, ...) so callers that catch those keep working.
"""

import difflib
from collections.abc import Iterable


class GroundworkError(Exception):
    """Base class of every error Groundwork raises on purpose."""


class ConfigError(GroundworkError, ValueError):
    """A configuration value is invalid or values do not fit together."""


class UnknownNameError(GroundworkError, KeyError):
    """A named thing (data source, preset, task, ...) does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DataError(GroundworkError):
    """Input data is missing, empty or malformed."""


class EmptyCorpusError(DataError, ValueError):
    """A corpus or text collection holds no usable text."""


class InputEncodingError(DataError, UnicodeError):
    """An input file is not valid UTF-8 (or the declared encoding)."""


class FetchError(DataError):
    """A data source could not be downloaded or extracted."""


class ChecksumError(FetchError):
    """A downloaded archive does not match its recorded sha256."""


class TokenizerError(GroundworkError):
    """A tokenizer file is missing, truncated or of an unsupported kind."""


class TokenIdError(TokenizerError, ValueError):
    """Token ids passed to ``decode`` are outside the vocabulary."""


class CheckpointError(GroundworkError):
    """A checkpoint or run directory is missing, corrupt or does not match its config."""


class TrainingError(GroundworkError):
    """Training cannot go on (e.g. the loss became NaN or infinite)."""


class DistributedError(GroundworkError, RuntimeError):
    """A distributed run cannot go on: not launched by ``torchrun``, or another rank died or
    stopped answering."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return a hint naming the closest valid choice, or listing them all.

    >>> did_you_mean("shakespear", ["shakespeare", "kjv"])
    "did you mean 'shakespeare'?"
    """
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=1)
    if close:
        return f"did you mean {close[0]!r}?"
    return "choose one of: " + ", ".join(choices)
