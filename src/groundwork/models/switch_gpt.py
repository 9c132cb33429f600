"""A Switch-style GPT: GPT-2 with some blocks' MLPs replaced by a sparse mixture of experts.

Everything is :mod:`groundwork.models.gpt`'s (learned positions, pre-LN LayerNorm, tied
embeddings) except the MLP of every ``moe_every``-th block (blocks ``moe_every - 1``,
``2 moe_every - 1``, ...; Switch Transformer replaces every other one), which is a
:class:`~groundwork.nn.moe.MoE` of ``n_experts`` GPT-2 MLPs (tanh GELU, biases) with the Switch
router: the softmax over experts, the ``top_k`` best kept *without* renormalising (top-1 in the
paper, so a token's output is scaled by its router probability, the path by which the router
learns), a capacity of ``ceil(capacity_factor * tokens * top_k / n_experts)`` assignments per
expert in training (``eval_capacity_factor`` in eval mode) with the overflow dropped (the
residual connection carries a dropped token on unchanged). With ``n_experts = 1`` and no
capacity the model is exactly :class:`~groundwork.models.gpt.GPT` (tested).

After each forward :attr:`SwitchGPT.router_outputs` holds one
:class:`~groundwork.nn.moe.RouterOutput` per MoE block;
:class:`~groundwork.train.objectives.MoECausalLMObjective` adds ``router_aux_loss_coef`` times
the load-balancing loss and ``router_z_loss_coef`` times the router z-loss to the LM loss.

Capacity makes a token's output depend on the other tokens of the forward (which of them reach
an expert first), so batched or cached decoding with a finite ``eval_capacity_factor`` may differ
from one-sequence, uncached decoding; with ``eval_capacity_factor`` large enough (or
``capacity_factor=None``, dropless) they agree. There is no ``transformers`` twin (Switch
Transformers is an encoder-decoder); its MLP is tested equal to ``SwitchTransformersSparseMLP``
in ``tests/nn/test_moe.py``.

References:
    * Fedus, Zoph and Shazeer 2021, "Switch Transformers: Scaling to Trillion Parameter Models
      with Simple and Efficient Sparsity".
    * Zoph et al. 2022, "ST-MoE: Designing Stable and Transferable Sparse Expert Models" (z-loss).

Chapter 16 (Mixture of experts).
"""

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from groundwork.errors import ConfigError
from groundwork.models.config import check_choice, check_positive, preset
from groundwork.models.decoder import INIT_STD
from groundwork.models.gpt import GPT, GPTConfig
from groundwork.models.gpt import parameter_counts as gpt_parameter_counts
from groundwork.nn.moe import MoE, MoEConfig, RouterOutput, collect_router_outputs


@dataclass(kw_only=True)
class SwitchGPTConfig(GPTConfig):
    """Shape and options of a Switch-style GPT: a :class:`GPTConfig` and the experts."""

    n_experts: int = 8
    """Experts per MoE block."""
    top_k: int = 1
    """Experts per token (Switch: 1), ``1 <= top_k <= n_experts``."""
    router: Literal["switch", "softmax_topk"] = "switch"
    """``"switch"`` (top-k of the softmax, not renormalised) or ``"softmax_topk"`` (Mixtral:
    renormalised to sum to 1)."""
    moe_every: int = 2
    """Every ``moe_every``-th block has the MoE MLP (Switch: 2; 1: all of them)."""
    capacity_factor: float | None = 1.25
    """Training capacity factor (Switch: 1.0 or 1.25); ``None``: dropless."""
    eval_capacity_factor: float | None = 2.0
    """Capacity factor in eval mode (Switch: 2.0); ``None``: ``capacity_factor``'s."""
    router_aux_loss_coef: float = 0.01
    """Weight of the load-balancing loss in training (Switch's alpha = 0.01)."""
    router_aux_loss_per_layer: bool = True
    """Balance each MoE block's experts on its own (the mean of the blocks' losses, as Switch);
    False pools the blocks' tokens as ``transformers`` does, which lets opposite imbalances in
    two blocks cancel (:func:`~groundwork.nn.moe.router_aux_loss`)."""
    router_z_loss_coef: float = 0.001
    """Weight of the router z-loss in training (ST-MoE: 0.001)."""
    router_jitter: float = 0.0
    """Multiplicative noise on the router's input in training (Switch tried 0.01)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "n_experts", "top_k", "moe_every")
        check_choice(self, "router", ["switch", "softmax_topk"])
        if self.moe_every > self.n_layers:
            raise ConfigError(
                f"moe_every ({self.moe_every}) > n_layers ({self.n_layers}): no block would have "
                "experts; lower moe_every (1: every block)"
            )
        for name in ("router_aux_loss_coef", "router_z_loss_coef"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be >= 0, got {value!r}")
        self.moe_config(0)  # checks top_k <= n_experts, the capacity factors and the jitter

    def is_moe_layer(self, layer_idx: int) -> bool:
        """Whether block ``layer_idx`` has the mixture of experts."""
        return (layer_idx + 1) % self.moe_every == 0

    def moe_config(self, layer_idx: int) -> MoEConfig:
        """The :class:`~groundwork.nn.moe.MoEConfig` of an MoE block's MLP."""
        assert self.d_ff is not None
        return MoEConfig(
            d_model=self.d_model,
            d_ff=self.d_ff,
            n_experts=self.n_experts,
            top_k=self.top_k,
            activation="gelu_tanh",
            router=self.router,
            capacity_factor=self.capacity_factor,
            eval_capacity_factor=self.eval_capacity_factor,
            bias=self.bias,
            router_jitter=self.router_jitter,
        )

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> "SwitchGPTConfig":
        """A named preset (``"tiny"``), optionally with fields overridden."""
        return cls(**{**preset(SWITCH_GPT_PRESETS, name, "Switch GPT"), **overrides})


SWITCH_GPT_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        vocab_size=512,
        max_seq_len=128,
        d_model=64,
        n_layers=2,
        n_heads=4,
        n_experts=4,
        top_k=1,
        moe_every=1,
    ),
}
"""Named configs: a CPU-sized one (``configs/shakespeare-moe.yaml`` sets its own shape)."""


# --8<-- [start:switch]
class SwitchMLP(MoE):
    """A :class:`~groundwork.nn.moe.MoE` used as a block's MLP: returns the output only (with
    dropout, as GPT's MLP) and keeps the :class:`~groundwork.nn.moe.RouterOutput` of its last
    forward in :attr:`router_output`."""

    def __init__(self, config: MoEConfig, dropout: float = 0.0) -> None:
        super().__init__(config)
        self.dropout = nn.Dropout(dropout)
        self.router_output: RouterOutput | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """Map ``(B, T, d_model)`` to ``(B, T, d_model)``."""
        out, self.router_output = super().forward(x)
        return self.dropout(out)


class SwitchGPT(GPT):
    """GPT-2 with :class:`SwitchMLP` experts in every ``moe_every``-th block.

    ``forward`` is :meth:`GPT.forward` (same arguments, returns the logits); afterwards
    :attr:`router_outputs` holds each MoE block's :class:`~groundwork.nn.moe.RouterOutput`.

    Args:
        config: The model's shape and options.
    """

    config: SwitchGPTConfig

    def __init__(self, config: SwitchGPTConfig) -> None:
        super().__init__(config)
        for name, p in self.named_parameters():  # the stacked experts as GPT-2's MLPs
            if ".experts." not in name:
                continue
            if name.endswith("_bias"):
                nn.init.zeros_(p)
            elif name.endswith("down_proj"):  # writes into the residual stream
                nn.init.normal_(p, mean=0.0, std=INIT_STD / (2 * config.n_layers) ** 0.5)
            else:
                nn.init.normal_(p, mean=0.0, std=INIT_STD)

    def build_mlp(self, config: GPTConfig, layer_idx: int) -> nn.Module:
        """:class:`SwitchMLP` in MoE blocks, GPT-2's MLP elsewhere."""
        assert isinstance(config, SwitchGPTConfig)
        if config.is_moe_layer(layer_idx):
            return SwitchMLP(config.moe_config(layer_idx), dropout=config.dropout)
        return super().build_mlp(config, layer_idx)

    # --8<-- [end:switch]

    @property
    def router_outputs(self) -> list[RouterOutput]:
        """Each MoE block's :class:`~groundwork.nn.moe.RouterOutput` from the last forward."""
        return collect_router_outputs(self)


def parameter_counts(config: SwitchGPTConfig) -> dict[str, int]:
    """Parameters by component (as :func:`groundwork.models.gpt.parameter_counts`, the ``mlp``
    being the dense MLPs, the experts and the routers), and ``active``: those one token uses
    (``top_k`` experts per MoE block).

    >>> c = SwitchGPTConfig(d_model=128, n_layers=4, n_heads=4, n_experts=8, moe_every=1)
    >>> counts = parameter_counts(c)
    >>> counts["total"] - counts["active"] == 4 * 7 * (2 * 128 * 512 + 512 + 128)
    True
    """
    c = config
    assert c.d_ff is not None
    counts = gpt_parameter_counts(c)
    b = 1 if c.bias else 0
    expert = c.d_model * c.d_ff + b * c.d_ff + c.d_ff * c.d_model + b * c.d_model
    n_moe = sum(c.is_moe_layer(i) for i in range(c.n_layers))
    mlp = (c.n_layers - n_moe) * expert + n_moe * (c.n_experts * expert + c.n_experts * c.d_model)
    total = counts["total"] - counts["mlp"] + mlp
    active = total - n_moe * (c.n_experts - c.top_k) * expert
    return {**counts, "mlp": mlp, "total": total, "active": active}
