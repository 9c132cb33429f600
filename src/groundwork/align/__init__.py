"""Alignment (chapter 14): supervised fine-tuning on conversations, reward models, DPO, RLHF with
PPO, and GRPO.

* :mod:`groundwork.align.sft`: conversations rendered with a chat template into token ids, with
  the loss on the assistant's tokens only; :mod:`groundwork.align.packing`: padded or packed
  batches and the SFT objective.
* :mod:`groundwork.align.data`: instructions, preference pairs and verifiable problems from
  PIQA, SIQA, BoolQ, CommonsenseQA and ASDiv, with a held-out split.
* :mod:`groundwork.align.preference`: preference pairs as token ids and batches.
* :mod:`groundwork.align.reward`: a scalar-head reward model and the Bradley-Terry loss.
* :mod:`groundwork.align.dpo`: Direct Preference Optimization (sigmoid, IPO, label smoothing).
* :mod:`groundwork.align.rollout`, :mod:`groundwork.align.ppo`, :mod:`groundwork.align.grpo`:
  sampling and scoring completions, PPO with a value head, GAE and an adaptive KL penalty,
  and GRPO's group-relative advantages with a verifiable reward.
* :mod:`groundwork.align.logprobs`: completion log-probabilities under a causal LM.
"""

from groundwork.align.dpo import DPOObjective, dpo_loss, precompute_reference_logps
from groundwork.align.grpo import GRPOObjective, group_advantages, number_reward
from groundwork.align.logprobs import sequence_logprobs, token_logprobs
from groundwork.align.packing import SFTData, SFTObjective, pack_examples, pad_examples
from groundwork.align.ppo import AdaptiveKLController, PolicyWithValue, PPOObjective, gae
from groundwork.align.preference import PreferenceData, PreferenceExample, tokenize_preference
from groundwork.align.reward import RewardModel, RewardObjective, bradley_terry_loss
from groundwork.align.rollout import PromptData, make_rollout
from groundwork.align.sft import IGNORE_INDEX, PLAIN_TEMPLATE, SFTExample, tokenize_conversation

__all__ = [
    "IGNORE_INDEX",
    "PLAIN_TEMPLATE",
    "AdaptiveKLController",
    "DPOObjective",
    "GRPOObjective",
    "PPOObjective",
    "PolicyWithValue",
    "PreferenceData",
    "PreferenceExample",
    "PromptData",
    "RewardModel",
    "RewardObjective",
    "SFTData",
    "SFTExample",
    "SFTObjective",
    "bradley_terry_loss",
    "dpo_loss",
    "gae",
    "group_advantages",
    "make_rollout",
    "number_reward",
    "pack_examples",
    "pad_examples",
    "precompute_reference_logps",
    "sequence_logprobs",
    "token_logprobs",
    "tokenize_conversation",
    "tokenize_preference",
]
