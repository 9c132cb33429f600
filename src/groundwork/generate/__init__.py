"""Decoding: turning a language model's next-token distributions into text. Chapter 10.

* :mod:`~groundwork.generate.processors`: temperature, top-k, top-p, min-p, repetition penalty.
* :mod:`~groundwork.generate.decode`: batched generation with a KV cache (and without, to compare).
* :mod:`~groundwork.generate.static`: a static KV cache and a compiled decode step (CUDA graphs).
* :mod:`~groundwork.generate.stream`: text as soon as it is final, stop strings.
* :mod:`~groundwork.generate.beam`: beam search with length penalty and n-best.
* :mod:`~groundwork.generate.speculative`: speculative decoding with a draft model.
* :mod:`~groundwork.generate.seq2seq`: encoder-decoder (T5) greedy, sampling and beam search.
* :mod:`~groundwork.generate.chat`: chat templates and the terminal chat.
* :mod:`~groundwork.generate.simple`: the plain uncached sampler, the first thing chapter 10 shows.
"""

from groundwork.generate.beam import beam_search
from groundwork.generate.config import GenerationConfig
from groundwork.generate.decode import GenerateOutput, generate, generate_uncached
from groundwork.generate.processors import process_logits, sample_next
from groundwork.generate.seq2seq import beam_search_seq2seq, generate_seq2seq
from groundwork.generate.simple import sample
from groundwork.generate.speculative import SpeculativeOutput, speculative_generate
from groundwork.generate.static import StaticDecoder, generate_static
from groundwork.generate.stream import generate_text, generate_texts, stream

__all__ = [
    "GenerateOutput",
    "GenerationConfig",
    "SpeculativeOutput",
    "StaticDecoder",
    "beam_search",
    "beam_search_seq2seq",
    "generate",
    "generate_seq2seq",
    "generate_static",
    "generate_text",
    "generate_texts",
    "generate_uncached",
    "process_logits",
    "sample",
    "sample_next",
    "speculative_generate",
    "stream",
]
