"""Decoding: turning a language model's next-token distributions into text. Chapter 10.

For now this holds plain ancestral sampling with temperature and top-k (no KV cache); the
decoding chapter's strategies, the cached loop and batching arrive with the decoding issue.
"""

from groundwork.generate.simple import sample

__all__ = ["sample"]
