r"""SmoothQuant: move the activations' outliers into the weights, then run every linear layer in
W8A8 (int8 weights *and* int8 activations).

**The difficulty.** Weights are easy to quantise (flat, per output channel); activations are
not: a few input channels are 10-100× larger than the rest, consistently across tokens, so a
per-token int8 grid spends its range on them (:mod:`groundwork.compress.llm_int8` routes them
through float instead). Per-*channel* activation scales would fix it, but they do not factor
out of the int8 GEMM's inner sum; per-token and per-tensor scales do.

**Smoothing.** For :math:`Y = X W^\top` (``X`` tokens × in, ``W`` out × in) any positive
per-input-channel :math:`s` gives the same product,

.. math:: Y = \big(X \operatorname{diag}(s)^{-1}\big) \big(W \operatorname{diag}(s)\big)^\top
   = \hat X \hat W^\top,

and :math:`\operatorname{diag}(s)^{-1}` folds into the norm that produces :math:`X` (its
:math:`\gamma` and :math:`\beta` divided by :math:`s`), so it costs nothing at run time. With
:math:`m^X_j = \max_t |X_{tj}|` from calibration text and :math:`m^W_j = \max_i |W_{ij}|`,
Xiao et al. choose

.. math:: s_j = \frac{(m^X_j)^{\alpha}}{(m^W_j)^{1-\alpha}}, \qquad
   \max_t |\hat X_{tj}| = (m^X_j m^W_j)^{1-\alpha}, \quad
   \max_i |\hat W_{ij}| = (m^X_j m^W_j)^{\alpha}.

The product :math:`m^X_j m^W_j` is fixed by the layer; :math:`\alpha` says how much of its
range goes to the weights. :math:`\alpha = 0.5` splits it evenly (both maxima equal
:math:`\sqrt{m^X_j m^W_j}`); models with stronger outliers want more migration (0.75-0.85).

**Where.** Only a scale that some preceding op can absorb is free: the pre-norms of a block
feed q/k/v (one :math:`s` for the three, :math:`m^W` the max over all their rows) and
gate/up (likewise). ``o_proj`` and ``down_proj`` are quantised without smoothing, as in the
paper's Llama recipe; optionally (``smooth_down_proj``) ``down_proj`` is smoothed through the
rows of ``up_proj``, since SwiGLU's hidden state :math:`\mathrm{silu}(g) \odot u` is linear in
:math:`u`. That is where Llama-style models keep their largest ("massive") activations.

References:
    - Xiao, Lin, Seznec, Wu, Demouth & Han 2023, "SmoothQuant: Accurate and Efficient Post-Training
      Quantization for Large Language Models" (sections 3-4; mit-han-lab/smoothquant).
    - Dettmers et al. 2022, "LLM.int8()" (the outlier features it answers).
    - Docs: chapter 18, "Efficient inference and compression".
"""

import dataclasses
from collections.abc import Callable, Iterable
from typing import Literal

import torch
from torch import nn

from groundwork.compress.llm_int8 import int8_matmul, vectorwise_quantize
from groundwork.compress.quantize import quantizable_linears, quantize_codes, set_submodule
from groundwork.errors import ConfigError, DataError
from groundwork.nn.norms import LayerNorm, RMSNorm

ActQuant = Literal["per-token", "per-tensor"]

_NORMS = (RMSNorm, LayerNorm, nn.LayerNorm, nn.RMSNorm)


@dataclasses.dataclass
class SmoothGroup:
    """A norm and the linear layers that read its output (they share one smoothing vector)."""

    norm_name: str
    norm: nn.Module
    linears: dict[str, nn.Linear]


def smoothing_groups(model: nn.Module, smooth_down_proj: bool = False) -> list[SmoothGroup]:
    """The norm → projection pairs of every pre-norm block: Llama's ``input_layernorm`` → q/k/v
    and ``post_attention_layernorm`` → gate/up; GPT's ``ln_1`` → ``qkv_proj`` and ``ln_2`` →
    ``up_proj``. A sublayer without plain projections (a mixture of experts) is left alone.

    With ``smooth_down_proj``, also SwiGLU's ``up_proj`` → ``down_proj`` (listed after the
    norms): ``down_proj`` reads ``silu(gate(x)) * up(x)``, linear in ``up(x)``, so dividing
    ``up_proj``'s output rows by ``s`` divides its input channels by ``s`` exactly."""
    groups: list[SmoothGroup] = []
    down_groups: list[SmoothGroup] = []
    for name, block in model.named_modules():
        prefix = f"{name}." if name else ""
        if hasattr(block, "input_layernorm") and hasattr(block, "post_attention_layernorm"):
            pairs = [("input_layernorm", "self_attn"), ("post_attention_layernorm", "mlp")]
        elif getattr(block, "norm_position", None) == "pre" and hasattr(block, "ln_1"):
            pairs = [("ln_1", "attn"), ("ln_2", "mlp")]
        else:
            continue
        for norm_attr, sub_attr in pairs:
            norm, sub = getattr(block, norm_attr), getattr(block, sub_attr)
            if not isinstance(norm, _NORMS):
                continue
            names = ("qkv_proj", "q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")
            linears = {
                f"{prefix}{sub_attr}.{n}": getattr(sub, n)
                for n in names
                if isinstance(getattr(sub, n, None), nn.Linear)
            }
            if linears:
                groups.append(SmoothGroup(f"{prefix}{norm_attr}", norm, linears))
            if smooth_down_proj and isinstance(getattr(sub, "gate_proj", None), nn.Linear):
                up, down = getattr(sub, "up_proj", None), getattr(sub, "down_proj", None)
                if isinstance(up, nn.Linear) and isinstance(down, nn.Linear):
                    mlp = f"{prefix}{sub_attr}"
                    down_groups.append(
                        SmoothGroup(f"{mlp}.up_proj", up, {f"{mlp}.down_proj": down})
                    )
    return groups + down_groups


def _groups_or_raise(model: nn.Module, smooth_down_proj: bool = False) -> list[SmoothGroup]:
    groups = smoothing_groups(model, smooth_down_proj)
    if not groups:
        raise ConfigError(
            f"{type(model).__name__} has no pre-norm → projection pairs to smooth "
            "(SmoothQuant supports Llama- and pre-LN GPT-style blocks)"
        )
    return groups


@torch.no_grad()
def activation_absmax(
    model: nn.Module, calibration: Iterable[torch.Tensor], layers: dict[str, nn.Linear]
) -> dict[str, torch.Tensor]:
    """Per-input-channel ``max |x|`` ``(in_features,)`` at each of ``layers``, over every token of
    the ``calibration`` batches of token ids ``(B, T)`` (forward pre-hooks).

    Raises:
        DataError: ``calibration`` is empty or a batch is not a 2-D integer tensor.
    """
    maxima: dict[str, torch.Tensor] = {}

    def hook(name: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], None]:
        def record(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].detach().abs().reshape(-1, args[0].shape[-1])  # (tokens, in)
            m = x.float().amax(dim=0).cpu()  # (in,)
            maxima[name] = torch.maximum(maxima[name], m) if name in maxima else m

        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in layers.items()]
    try:
        n_batches = 0
        for batch in calibration:
            if batch.dim() != 2 or batch.is_floating_point():
                raise DataError(
                    f"calibration batches must be (B, T) token ids, got {batch.dtype} "
                    f"of shape {tuple(batch.shape)}"
                )
            model(batch)
            n_batches += 1
    finally:
        for h in handles:
            h.remove()
    if n_batches == 0:
        raise DataError("calibration is empty: pass at least one (B, T) batch of token ids")
    return maxima


# --8<-- [start:smooth]
def smoothing_factors(
    act_max: torch.Tensor, weight_max: torch.Tensor, alpha: float
) -> torch.Tensor:
    """``s_j = max|X_j|^α / max|W_j|^(1-α)`` per input channel (both maxima floored at 1e-5
    so a dead channel gets a finite factor)."""
    check_alpha(alpha)
    s = act_max.clamp(min=1e-5).pow(alpha) / weight_max.clamp(min=1e-5).pow(1 - alpha)
    return s.clamp(min=1e-5)


@torch.no_grad()
def smooth_model(
    model: nn.Module,
    act_max: dict[str, torch.Tensor],
    alpha: float = 0.5,
    smooth_down_proj: bool = False,
) -> dict[str, torch.Tensor]:
    """Fold the smoothing factors into every norm → projection group of ``model`` in place: the
    norm's ``γ`` (and ``β``) divided by ``s``, each projection's columns multiplied by it. The
    float model computes the same function. Returns ``s`` for every smoothed linear layer."""
    groups = _groups_or_raise(model, smooth_down_proj)
    factors: dict[str, torch.Tensor] = {}
    for g in groups:
        w = torch.cat([lin.weight for lin in g.linears.values()])  # (sum of outs, in)
        x_max = torch.stack([act_max[n] for n in g.linears]).amax(dim=0)  # (in,) shared input
        s = smoothing_factors(x_max, w.abs().amax(dim=0).float().cpu(), alpha)  # (in,)
        s = s.to(w.device)
        gamma, beta = g.norm.weight, getattr(g.norm, "bias", None)
        assert isinstance(gamma, torch.Tensor)
        if isinstance(g.norm, nn.Linear):  # up_proj → down_proj: its output rows / s
            gamma.div_(s.to(gamma.dtype).unsqueeze(1))  # (out, in)
        else:
            gamma.div_(s.to(gamma.dtype))  # γ / s: the norm now emits X diag(s)^-1
        if isinstance(beta, torch.Tensor):
            beta.div_(s.to(beta.dtype))
        for name, lin in g.linears.items():
            lin.weight.mul_(s.to(lin.weight.dtype))  # W diag(s): columns scaled, (out, in)
            factors[name] = s.cpu()
    return factors


# --8<-- [end:smooth]


# --8<-- [start:w8a8]
class W8A8Linear(nn.Module):
    """A linear layer with int8 weights (absmax per output channel) and int8 activations
    (absmax per token, or one scale for the tensor), multiplied in integers and dequantised by
    the outer product of the scales.

    Args:
        linear: The layer to quantise.
        act_quant: ``"per-token"`` (a dynamic scale per row of the input) or ``"per-tensor"``.
        act_absmax: The calibrated ``max |x|`` for a *static* per-tensor scale; ``None``: the
            per-tensor scale is taken from each input (dynamic).
    """

    def __init__(
        self, linear: nn.Linear, act_quant: ActQuant = "per-token", act_absmax: float | None = None
    ) -> None:
        super().__init__()
        if act_quant not in ("per-token", "per-tensor"):
            raise ConfigError(f"act_quant must be 'per-token' or 'per-tensor', got {act_quant!r}")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.act_quant = act_quant
        self.act_scale = None if act_absmax is None else max(act_absmax, 1e-8) / 127
        codes, scale = vectorwise_quantize(linear.weight.detach())
        self.weight_codes: torch.Tensor
        self.weight_scale: torch.Tensor
        self.bias: torch.Tensor | None
        self.register_buffer("weight_codes", codes)  # (out, in) int8
        self.register_buffer("weight_scale", scale)  # (out, 1)
        bias = linear.bias.detach().clone() if linear.bias is not None else None
        self.register_buffer("bias", bias)

    def quantize_input(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """int8 codes of ``x`` ``(m, in)`` and their scale ``(m, 1)`` or ``(1, 1)``."""
        if self.act_quant == "per-token":
            return vectorwise_quantize(x)
        if self.act_scale is None:  # dynamic per-tensor
            scale = (x.abs().amax().float() / 127).clamp(min=1e-8).reshape(1, 1)
        else:  # static: values beyond the calibrated range are clipped
            scale = torch.full((1, 1), self.act_scale, device=x.device)
        return quantize_codes(x, scale, torch.zeros_like(scale), 8).to(torch.int8), scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(..., in_features)`` to ``(..., out_features)``."""
        x2 = x.reshape(-1, self.in_features)  # (m, in)
        x_codes, x_scale = self.quantize_input(x2)
        y = int8_matmul(x_codes, self.weight_codes).float() * (x_scale * self.weight_scale.t())
        if self.bias is not None:
            y = y + self.bias.float()
        return y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)  # (..., out)

    def extra_repr(self) -> str:
        static = "static" if self.act_scale is not None else "dynamic"
        return f"in={self.in_features}, out={self.out_features}, act={self.act_quant} ({static})"


# --8<-- [end:w8a8]


@torch.no_grad()
def quantize_w8a8(
    model: nn.Module,
    act_quant: ActQuant = "per-token",
    act_absmax: dict[str, torch.Tensor] | None = None,
    skip: Iterable[str] = ("lm_head",),
) -> nn.Module:
    """Replace every quantisable linear layer with a :class:`W8A8Linear`, in place. With
    ``act_quant="per-tensor"`` and calibrated ``act_absmax`` (per-channel maxima, as
    :func:`activation_absmax` returns) the activation scales are static."""
    for name, linear in quantizable_linears(model, skip).items():
        amax = None
        if act_quant == "per-tensor" and act_absmax is not None and name in act_absmax:
            amax = float(act_absmax[name].max())
        set_submodule(model, name, W8A8Linear(linear, act_quant, amax))
    return model


def check_alpha(alpha: float) -> None:
    """Raise :class:`ConfigError` unless ``0 <= alpha <= 1``."""
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(
            f"alpha must be in [0, 1] (the share of the outliers moved into the weights), "
            f"got {alpha}"
        )


def apply_smoothquant(
    model: nn.Module,
    calibration: Iterable[torch.Tensor],
    alpha: float = 0.5,
    quantize: bool = True,
    *,
    act_quant: ActQuant = "per-token",
    smooth_down_proj: bool = False,
    skip: Iterable[str] = ("lm_head",),
) -> nn.Module:
    """SmoothQuant in place: calibrate the activation maxima on ``calibration`` (batches of token
    ids ``(B, T)``), fold the smoothing factors into the norms, and, if ``quantize``, turn every
    quantisable linear layer into a :class:`W8A8Linear`. Returns ``model``. ``smooth_down_proj``
    also smooths SwiGLU's ``down_proj`` through ``up_proj`` (see :func:`smoothing_groups`).

    Raises:
        ConfigError: ``alpha`` outside [0, 1], a model without norm → projection pairs.
        DataError: empty or malformed calibration.
    """
    check_alpha(alpha)
    if act_quant not in ("per-token", "per-tensor"):
        raise ConfigError(f"act_quant must be 'per-token' or 'per-tensor', got {act_quant!r}")
    layers = quantizable_linears(model, skip)
    for g in _groups_or_raise(model, smooth_down_proj):
        layers.update(g.linears)
    act_max = activation_absmax(model, calibration, layers)
    factors = smooth_model(model, act_max, alpha, smooth_down_proj)
    if quantize:
        # A smoothed layer's input is exactly X diag(s)^-1, so its maxima shrink by s.
        smoothed = {n: m / factors[n] if n in factors else m for n, m in act_max.items()}
        quantize_w8a8(model, act_quant, smoothed, skip)
    return model
