"""Mixtral: Llama with every block's MLP a sparse mixture of experts (top-2 of 8 SwiGLU experts).

Everything but the MLP is :mod:`groundwork.models.llama`'s (RMSNorm, RoPE, grouped-query
attention, the KV cache); each block's MLP is a :class:`~groundwork.nn.moe.MoE` with the
``"softmax_topk"`` router (softmax over all experts, keep the ``top_k`` largest, renormalise)
and SwiGLU experts. The MoE acts on each token separately, so cached decoding needs nothing new.

Parameter names are Hugging Face's ``MixtralForCausalLM`` names except the router: ours is
``model.layers.0.mlp.router.weight`` ``(E, d_model)`` (the :class:`~groundwork.nn.moe.MoE`
name), theirs ``model.layers.0.mlp.gate.weight``. The experts keep Hugging Face's fused layout,
``mlp.experts.gate_up_proj`` ``(E, 2 d_ff, d_model)`` (the gate projections, then the up
projections: :class:`FusedSwiGLUExperts`) and ``mlp.experts.down_proj`` ``(E, d_model, d_ff)``,
so the key map (:mod:`groundwork.models.mixtral_hf`) is a rename and no tensor is reshaped.

After each forward :attr:`Mixtral.router_outputs` holds one
:class:`~groundwork.nn.moe.RouterOutput` per layer, for a training objective to add
``router_aux_loss_coef * load_balancing_loss`` (:func:`~groundwork.nn.moe.router_aux_loss`;
:class:`~groundwork.train.objectives.MoECausalLMObjective` does).

References:
    * Jiang et al. 2024, "Mixtral of Experts".
    * ``transformers/models/mixtral/modeling_mixtral.py``.
"""

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from groundwork.errors import ConfigError
from groundwork.models.config import check_positive, preset
from groundwork.models.decoder import INIT_STD
from groundwork.models.llama import Llama, LlamaBlock, LlamaConfig, LlamaModel
from groundwork.models.llama import parameter_counts as llama_parameter_counts
from groundwork.nn import KVCache
from groundwork.nn.moe import (
    HAS_GROUPED_MM,
    MoE,
    MoEConfig,
    MoEExperts,
    RouterOutput,
    collect_router_outputs,
)


@dataclass(kw_only=True)
class MixtralConfig(LlamaConfig):
    """Shape and options of a Mixtral-style model: a :class:`LlamaConfig` and the experts."""

    n_experts: int = 8
    """Experts per block (Hugging Face's ``num_local_experts``)."""
    top_k: int = 2
    """Experts each token is routed to (``num_experts_per_tok``), ``1 <= top_k <= n_experts``."""
    router_aux_loss_coef: float = 0.001
    """Weight of the load-balancing loss in training (``router_aux_loss_coef``; Hugging Face's
    default). The model only records the routing; the objective adds the loss."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "n_experts", "top_k")
        if self.top_k > self.n_experts:
            raise ConfigError(
                f"top_k ({self.top_k}) must be <= n_experts ({self.n_experts}): a token cannot "
                "be routed to more experts than there are"
            )
        if not (math.isfinite(self.router_aux_loss_coef) and self.router_aux_loss_coef >= 0):
            raise ConfigError(
                f"router_aux_loss_coef must be >= 0, got {self.router_aux_loss_coef!r}"
            )

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> "MixtralConfig":
        """A named preset (``"mixtral-8x7b"``, ``"tiny"``), optionally with fields overridden."""
        return cls(**{**preset(MIXTRAL_PRESETS, name, "Mixtral"), **overrides})

    def moe_config(self) -> MoEConfig:
        """The :class:`~groundwork.nn.moe.MoEConfig` of each block's MLP."""
        return MoEConfig(
            d_model=self.d_model,
            d_ff=self.d_ff,
            n_experts=self.n_experts,
            top_k=self.top_k,
            activation="swiglu",
            router="softmax_topk",
        )


MIXTRAL_PRESETS: dict[str, dict[str, Any]] = {
    # mistralai/Mixtral-8x7B-v0.1 config.json (shape only: ~46.7B parameters)
    "mixtral-8x7b": dict(
        vocab_size=32000,
        max_seq_len=32768,
        d_model=4096,
        n_layers=32,
        n_heads=32,
        n_kv_heads=8,
        d_ff=14336,
        rope_theta=1e6,
        rms_norm_eps=1e-5,
        tie_embeddings=False,
        n_experts=8,
        top_k=2,
        router_aux_loss_coef=0.02,
    ),
    "tiny": dict(
        vocab_size=512,
        max_seq_len=128,
        d_model=64,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        d_ff=96,
        tie_embeddings=True,
        n_experts=4,
        top_k=2,
    ),
}
"""Named configs: Mixtral 8x7B's shape and a CPU-sized one."""


class FusedSwiGLUExperts(MoEExperts):
    """SwiGLU experts stored as Hugging Face Mixtral stores them: ``gate_up_proj``
    ``(E, 2 d_ff, d_model)`` (``torch.cat([gate_proj, up_proj], dim=1)`` of
    :class:`~groundwork.nn.moe.MoEExperts`) and ``down_proj`` ``(E, d_model, d_ff)``; no biases.

    Expert ``e`` computes ``down(silu(gate(x)) * up(x))`` as :class:`MoEExperts` does, with the
    gate and up projections as one matmul.
    """

    def __init__(self, n: int, d_model: int, d_ff: int) -> None:
        nn.Module.__init__(self)  # not MoEExperts.__init__: other parameters
        self.activation = "swiglu"
        self.use_grouped_mm = True
        self.d_ff = d_ff
        bound_in, bound_ff = 1 / math.sqrt(d_model), 1 / math.sqrt(d_ff)
        self.gate_up_proj = nn.Parameter(
            torch.empty(n, 2 * d_ff, d_model).uniform_(-bound_in, bound_in)
        )  # (n, 2 d_ff, d_model)
        self.down_proj = nn.Parameter(
            torch.empty(n, d_model, d_ff).uniform_(-bound_ff, bound_ff)
        )  # (n, d_model, d_ff)
        self.up_bias = self.down_bias = self.gate_bias = None

    def forward(self, x: torch.Tensor, e: int) -> torch.Tensor:
        """Expert ``e`` on ``x`` ``(n_e, d_model)``; returns ``(n_e, d_model)``."""
        gate, up = F.linear(x, self.gate_up_proj[e]).chunk(2, dim=-1)  # (n_e, d_ff) each
        return F.linear(F.silu(gate) * up, self.down_proj[e])  # (n_e, d_model)

    def _grouped_mm(self, x: torch.Tensor, counts: list[int]) -> torch.Tensor:
        assert HAS_GROUPED_MM
        offs = torch.tensor(counts, device=x.device).cumsum(0).to(torch.int32)
        h = F.grouped_mm(x, self.gate_up_proj.transpose(-2, -1), offs=offs)  # (M, 2 d_ff)
        gate, up = h.chunk(2, dim=-1)
        return F.grouped_mm(F.silu(gate) * up, self.down_proj.transpose(-2, -1), offs=offs)


class MixtralMoE(MoE):
    """A :class:`~groundwork.nn.moe.MoE` (router ``router.weight`` ``(E, d_model)``) whose
    experts are :class:`FusedSwiGLUExperts`."""

    def __init__(self, config: MoEConfig) -> None:
        if config.activation != "swiglu" or config.bias or config.n_shared_experts:
            raise ConfigError("MixtralMoE needs SwiGLU experts without biases or shared experts")
        super().__init__(config)

    def build_experts(self, n: int) -> MoEExperts:
        """Hugging Face's fused layout (:class:`FusedSwiGLUExperts`)."""
        return FusedSwiGLUExperts(n, self.config.d_model, self.config.d_ff)


class MixtralBlock(LlamaBlock):
    """One decoder layer: ``x + attn(norm(x))``, then ``x + moe(norm(x))``; keeps the MoE's
    :class:`~groundwork.nn.moe.RouterOutput` of its last forward in :attr:`router_output`."""

    def __init__(self, config: MixtralConfig, layer_idx: int) -> None:
        super().__init__(config, layer_idx)
        self.router_output: RouterOutput | None = None

    def build_mlp(self, config: LlamaConfig) -> nn.Module:
        """The mixture of experts in place of Llama's SwiGLU."""
        assert isinstance(config, MixtralConfig)
        return MixtralMoE(config.moe_config())

    def forward(
        self,
        x: torch.Tensor,
        *,
        rope: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor | None,
        kv_cache: KVCache | None,
        start_pos: int,
    ) -> torch.Tensor:
        """Map ``(B, T, d_model)`` to ``(B, T, d_model)``."""
        x = x + self.self_attn(
            self.input_layernorm(x), mask=mask, rope=rope, kv_cache=kv_cache, start_pos=start_pos
        )
        out, self.router_output = self.mlp(self.post_attention_layernorm(x))
        return x + out


class MixtralModel(LlamaModel):
    """The decoder stack of :class:`LlamaModel` with :class:`MixtralBlock` layers."""

    block_cls = MixtralBlock


class Mixtral(Llama):
    """Mixtral: the decoder stack (:class:`MixtralModel`) and an output head.

    ``forward`` is :meth:`Llama.forward` (same arguments, returns the logits); afterwards
    :attr:`router_outputs` holds each layer's :class:`~groundwork.nn.moe.RouterOutput`.

    Args:
        config: The model's shape and options.
    """

    config: MixtralConfig

    model_cls = MixtralModel

    def __init__(self, config: MixtralConfig) -> None:
        super().__init__(config)
        c = config
        for name, p in self.named_parameters():  # the stacked expert weights as the others
            if name.endswith("experts.gate_up_proj"):
                nn.init.normal_(p, mean=0.0, std=INIT_STD)
            elif name.endswith("experts.down_proj"):
                nn.init.normal_(p, mean=0.0, std=INIT_STD / (2 * c.n_layers) ** 0.5)

    @property
    def router_outputs(self) -> list[RouterOutput]:
        """Each layer's :class:`~groundwork.nn.moe.RouterOutput` from the last forward."""
        return collect_router_outputs(self)


def parameter_counts(config: MixtralConfig) -> dict[str, int]:
    """Parameters by component (as :func:`groundwork.models.llama.parameter_counts`, the
    ``mlp`` being the experts and routers), and ``active``: those one token uses (``top_k``
    experts per layer).

    >>> parameter_counts(MixtralConfig.from_name("mixtral-8x7b"))["total"]
    46702792704
    """
    c = config
    counts = llama_parameter_counts(c)
    expert = 3 * c.d_model * c.d_ff
    router = c.n_layers * c.n_experts * c.d_model
    mlp = c.n_layers * c.n_experts * expert + router
    total = counts["total"] - counts["mlp"] + mlp
    active = total - c.n_layers * (c.n_experts - c.top_k) * expert
    return {**counts, "mlp": mlp, "total": total, "active": active}
