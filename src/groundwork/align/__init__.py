"""Alignment (chapter 14): supervised fine-tuning on conversations, and (to come) reward models,
RLHF with PPO, DPO and GRPO.

* :mod:`groundwork.align.sft`: conversations rendered with a chat template into token ids, with
  the loss on the assistant's tokens only.
"""

from groundwork.align.sft import IGNORE_INDEX, PLAIN_TEMPLATE, SFTExample, tokenize_conversation

__all__ = ["IGNORE_INDEX", "PLAIN_TEMPLATE", "SFTExample", "tokenize_conversation"]
