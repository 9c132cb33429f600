"""OLMoE: Mixtral's layout with many small experts, top-k weights left unnormalised, and RMSNorm on
the query and key projections.

Three differences from :mod:`groundwork.models.mixtral`, everything else (RoPE, RMSNorm
pre-norm blocks, grouped-query attention, SwiGLU experts in the fused layout, the KV cache)
being the same:

* **fine-grained experts**: OLMoE-1B-7B has 64 experts of ``d_ff = 1024`` per layer and routes
  each token to 8 of them (1.3B of its 6.9B parameters active);
* **unnormalised top-k** (``norm_topk_prob=False``): the gates are the top-k softmax
  probabilities as they are, not rescaled to sum to 1 (the ``"switch"`` router of
  :class:`~groundwork.nn.moe.MoE`);
* **QK-norm**: an RMSNorm over the whole query projection and one over the whole key projection,
  before the heads are split (``self_attn.q_norm``, ``self_attn.k_norm``), which keeps the
  attention logits from growing in training.

Parameter names are Hugging Face's ``OlmoeForCausalLM`` names except the router (ours
``mlp.router.weight``, theirs ``mlp.gate.weight``): :mod:`groundwork.models.olmoe_hf`.

References:
    * Muennighoff et al. 2024, "OLMoE: Open Mixture-of-Experts Language Models".
    * ``transformers/models/olmoe/modeling_olmoe.py``.

Chapter 16 (Mixture of experts).
"""

from dataclasses import dataclass
from typing import Any

from groundwork.errors import ConfigError
from groundwork.models.config import preset
from groundwork.models.llama import LlamaConfig
from groundwork.models.mixtral import (
    Mixtral,
    MixtralBlock,
    MixtralConfig,
    MixtralModel,
)
from groundwork.models.mixtral import parameter_counts as mixtral_parameter_counts
from groundwork.nn import Attention
from groundwork.nn.moe import MoEConfig


@dataclass(kw_only=True)
class OlmoeConfig(MixtralConfig):
    """Shape and options of an OLMoE-style model: a :class:`MixtralConfig` whose top-k weights
    may be left unnormalised, with QK-norm in every attention layer."""

    norm_topk_prob: bool = False
    """Renormalise the top-k router probabilities to sum to 1 (OLMoE: no)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pruned_heads:
            raise ConfigError(
                "pruned_heads: OLMoE's query/key norms normalise all heads together, so its "
                "heads cannot be removed"
            )

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> "OlmoeConfig":
        """A named preset (``"olmoe-1b-7b"``, ``"tiny"``), optionally with fields overridden."""
        return cls(**{**preset(OLMOE_PRESETS, name, "OLMoE"), **overrides})

    def moe_config(self) -> MoEConfig:
        """The MoE of each block: Mixtral's, with the top-k weights renormalised or not."""
        config = super().moe_config()
        config.router = "softmax_topk" if self.norm_topk_prob else "switch"
        return config


OLMOE_PRESETS: dict[str, dict[str, Any]] = {
    # allenai/OLMoE-1B-7B-0924 config.json (shape only: ~6.9B parameters, ~1.3B active)
    "olmoe-1b-7b": dict(
        vocab_size=50304,
        max_seq_len=4096,
        d_model=2048,
        n_layers=16,
        n_heads=16,
        n_kv_heads=16,
        d_ff=1024,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        tie_embeddings=False,
        n_experts=64,
        top_k=8,
        router_aux_loss_coef=0.01,
    ),
    "tiny": dict(
        vocab_size=512,
        max_seq_len=128,
        d_model=64,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        d_ff=32,
        tie_embeddings=True,
        n_experts=8,
        top_k=3,
        router_aux_loss_coef=0.01,
    ),
}
"""Named configs: OLMoE-1B-7B's shape and a CPU-sized one."""


class OlmoeBlock(MixtralBlock):
    """A :class:`~groundwork.models.mixtral.MixtralBlock` whose attention has QK-norm."""

    def build_attention(self, config: LlamaConfig, layer_idx: int) -> Attention:
        """Grouped-query attention with RMSNorm over the query and key projections."""
        c = config
        return Attention(
            c.d_model,
            c.n_heads,
            c.n_kv_heads,
            c.d_head,
            impl=c.attn_impl,
            layer_idx=layer_idx,
            qk_norm_eps=c.rms_norm_eps,
        )


class OlmoeModel(MixtralModel):
    """The decoder stack with :class:`OlmoeBlock` layers."""

    block_cls = OlmoeBlock


class Olmoe(Mixtral):
    """OLMoE: :class:`~groundwork.models.mixtral.Mixtral` with :class:`OlmoeModel` as its stack.

    Args:
        config: The model's shape and options.
    """

    config: OlmoeConfig

    model_cls = OlmoeModel


def parameter_counts(config: OlmoeConfig) -> dict[str, int]:
    """Parameters by component (as :func:`groundwork.models.mixtral.parameter_counts`, with the
    query and key norms among the ``norms``), ``total`` and ``active``.

    >>> counts = parameter_counts(OlmoeConfig.from_name("olmoe-1b-7b"))
    >>> counts["total"], counts["active"]
    (6919161856, 1282017280)
    """
    c = config
    assert c.d_head is not None and c.n_kv_heads is not None
    counts = mixtral_parameter_counts(c)
    qk = c.n_layers * (c.n_heads + c.n_kv_heads) * c.d_head
    return {
        **counts,
        "norms": counts["norms"] + qk,
        "total": counts["total"] + qk,
        "active": counts["active"] + qk,
    }
