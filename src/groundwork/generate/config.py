"""What to generate and how: one dataclass shared by every decoding strategy. Chapter 10."""

import math
from dataclasses import dataclass

from groundwork.errors import ConfigError


@dataclass(kw_only=True)
class GenerationConfig:
    """Decoding settings. ``temperature == 0`` (or ``num_beams > 1``) means deterministic."""

    max_new_tokens: int = 256
    """Generate at most this many tokens after the prompt."""
    temperature: float = 1.0
    """Divide logits by this before sampling; 0 means greedy decoding."""
    top_k: int | None = None
    """Sample only among the k most likely tokens."""
    top_p: float | None = None
    """Nucleus sampling: the smallest set of tokens whose probability reaches p."""
    min_p: float | None = None
    """Drop tokens whose probability is below min_p times the most likely token's."""
    repetition_penalty: float | None = None
    """Divide positive (multiply negative) logits of tokens already present (CTRL, 2019)."""
    num_beams: int = 1
    """Beam search with this many beams (1: no beam search)."""
    length_penalty: float = 1.0
    """Beam search: scores are sum log p / length ** length_penalty."""
    early_stopping: bool = False
    """Beam search: stop as soon as num_beams hypotheses are finished."""
    num_return_sequences: int = 1
    """Beam search: how many of the best hypotheses to return (n-best)."""
    stop_strings: tuple[str, ...] = ()
    """Stop when the generated text contains one of these (it is cut off before it)."""
    stop_ids: tuple[int, ...] = ()
    """Stop after generating one of these token ids (e.g. end of text)."""
    seed: int | None = None
    """Seed for sampling (None: nondeterministic)."""

    def __post_init__(self) -> None:
        # Written as `not (ok)` so that NaN, which fails every comparison, is refused too.
        n = self.max_new_tokens
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"max_new_tokens must be a positive integer, got {n!r}")
        if not 0 <= self.temperature < math.inf:
            raise ConfigError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k is not None and not self.top_k >= 1:
            raise ConfigError(f"top_k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.min_p is not None and not 0 <= self.min_p <= 1:
            raise ConfigError(f"min_p must be in [0, 1], got {self.min_p}")
        if self.repetition_penalty is not None and not 0 < self.repetition_penalty < math.inf:
            raise ConfigError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if not self.num_beams >= 1:
            raise ConfigError(f"num_beams must be >= 1, got {self.num_beams}")
        if not math.isfinite(self.length_penalty):
            raise ConfigError(f"length_penalty must be a finite number, got {self.length_penalty}")
        if not 1 <= self.num_return_sequences <= max(1, self.num_beams):
            raise ConfigError(
                f"num_return_sequences must be between 1 and num_beams ({self.num_beams}), "
                f"got {self.num_return_sequences}"
            )
        if any(not s for s in self.stop_strings):
            raise ConfigError(
                "stop_strings may not contain an empty string (it would match at once)"
            )

    @property
    def do_sample(self) -> bool:
        """Whether tokens are sampled (rather than chosen greedily or by beam search)."""
        return self.temperature > 0 and self.num_beams == 1
