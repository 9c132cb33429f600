r"""AWQ: activation-aware weight quantisation (Lin et al. 2023): scale up the input channels that
carry large activations before rounding, and fold the inverse scale into the layer before.

**Salient channels.** Not all weights matter equally: the ones that multiply input channels with
large activations contribute most to the output, and keeping about 1% of them in fp16 recovers
most of the loss of 4-bit rounding. Mixed precision is awkward for kernels, so AWQ protects them
by *scaling* instead. For a linear layer :math:`y = W x` and any positive per-input-channel
vector :math:`s`,

.. math:: W x = \big(W \operatorname{diag}(s)\big)\big(\operatorname{diag}(s)^{-1} x\big).

Rounding :math:`W \operatorname{diag}(s)` group-wise, the error of a weight in channel :math:`j`
is still at most half a step, but the step barely changes when one channel of a group of 128 is
scaled by :math:`s_j > 1` (the group's maximum moves little), while the channel's share of the
output error is divided by :math:`s_j` when its input is divided by :math:`s_j`: salient weights
get a relatively finer grid.

**The search.** With :math:`\bar s_x` the mean :math:`|x_j|` per input channel on the
calibration set, AWQ tries :math:`s = \bar s_x^{\alpha}` (normalised by
:math:`\sqrt{\max s \cdot \min s}`) for :math:`\alpha \in \{0, 0.05, \dots, 0.95\}` and keeps the
one minimising

.. math:: \big\lVert f\big(Q(W \operatorname{diag}(s)) \operatorname{diag}(s)^{-1} X\big)
   - f(W X) \big\rVert^2,

where :math:`f` is the smallest module containing the layers that share the input: the whole
attention sublayer for q/k/v, the whole MLP for gate/up, the layer itself for o_proj and
down_proj. :math:`\alpha = 0` is plain round-to-nearest, so on the calibration data the search
never does worse than RTN for any group.

**Folding.** :math:`\operatorname{diag}(s)^{-1}` is not applied at run time: it is folded into
the operation that produces :math:`x`, leaving the model's function unchanged before rounding:

* RMSNorm before q/k/v and before gate/up: its weight :math:`\gamma \leftarrow \gamma / s`;
* v_proj before o_proj (the attention's value path is linear per channel): rows of
  :math:`W_v` divided by :math:`s` -- only when ``v_proj``'s outputs are ``o_proj``'s inputs one to
  one (multi-head attention); with grouped-query attention (SmolLM2: 9 query heads, 3 key/value
  heads) the reference skips this pair, and so does this file;
* up_proj before down_proj (:math:`\operatorname{silu}(g) \odot u` is linear in :math:`u`): rows
  of :math:`W_{up}` divided by :math:`s`.

Then every linear is rounded to nearest, group-wise (int4, :math:`g = 128` by default, the same
grid as :mod:`groundwork.compress.quantize`). Optionally (``clip=True``, the reference's
``auto_clip``) each weight group's range is shrunk to :math:`(1 - i/20) \max|w|`,
:math:`i = 0..9`, whichever minimises that group's share of the output on 512 calibration tokens
(q/k/v excluded, as in the reference).

Blocks are processed in order; each block is calibrated on the *float* model's hidden states
(the reference computes the next block's inputs before scaling and quantising).

References:
    - Lin, Tang, Tang, Yang, Chen, Wang, Xiao, Dang, Gan & Han 2023, "AWQ: Activation-aware
      Weight Quantization for LLM Compression and Acceleration" (arXiv 2306.00978); reference
      code mit-han-lab/llm-awq (``awq/quantize/auto_scale.py``, ``auto_clip.py``).
    - Docs: chapter 18, "Efficient inference and compression".
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from groundwork.compress.calibration import (
    LinearInputs,
    block_inputs,
    check_calibration,
    decoder_blocks,
    run_block,
)
from groundwork.compress.gptq import check_group_size
from groundwork.compress.quantize import (
    Granularity,
    int_range,
    quantizable_linears,
    quantize_tensor,
)
from groundwork.errors import ConfigError
from groundwork.runtime import eval_mode


@dataclass
class ScaleGroup:
    """Linear layers that read the same input, the operation that produces it, and the module
    whose output the scale search compares."""

    prev: nn.Module
    """Produces the input: a norm (its ``weight`` is divided by the scales) or a linear layer
    (its output rows are)."""
    linears: list[nn.Linear]
    """The layers whose input columns are multiplied by the scales."""
    inspect: nn.Module
    """The module run in the search (the attention, the MLP or the layer itself)."""
    call_kwargs: bool
    """Whether ``inspect`` takes the block's keyword arguments (RoPE, mask): the attention."""
    name: str
    """For reports: ``"qkv"``, ``"o"``, ``"gate_up"``, ``"down"``."""


def llama_scale_groups(block: nn.Module) -> list[ScaleGroup]:
    """The four scale groups of a Llama block (as the reference's ``get_act_scale`` pairs):
    ``input_layernorm -> q,k,v``, ``v_proj -> o_proj`` (multi-head attention only),
    ``post_attention_layernorm -> gate, up`` and ``up_proj -> down_proj``.

    Raises:
        ConfigError: the block is not Llama-shaped (separate q/k/v projections, a SwiGLU MLP).
    """
    attn = getattr(block, "self_attn", None)
    mlp = getattr(block, "mlp", None)
    needed = (
        hasattr(block, "input_layernorm")
        and hasattr(block, "post_attention_layernorm")
        and all(hasattr(attn, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj"))
        and all(hasattr(mlp, n) for n in ("gate_proj", "up_proj", "down_proj"))
    )
    if not needed:
        raise ConfigError(
            f"AWQ needs Llama-style blocks (input_layernorm, self_attn.q/k/v/o_proj, "
            f"post_attention_layernorm, mlp.gate/up/down_proj); {type(block).__name__} is not"
        )
    assert attn is not None and mlp is not None
    norm_1 = cast(nn.Module, block.input_layernorm)
    norm_2 = cast(nn.Module, block.post_attention_layernorm)
    groups = [ScaleGroup(norm_1, [attn.q_proj, attn.k_proj, attn.v_proj], attn, True, "qkv")]
    if attn.v_proj.weight.shape == attn.o_proj.weight.shape:  # MHA: v's outputs are o's inputs
        groups.append(ScaleGroup(attn.v_proj, [attn.o_proj], attn.o_proj, False, "o"))
    groups += [
        ScaleGroup(norm_2, [mlp.gate_proj, mlp.up_proj], mlp, False, "gate_up"),
        ScaleGroup(mlp.up_proj, [mlp.down_proj], mlp.down_proj, False, "down"),
    ]
    return groups


@torch.no_grad()
def apply_scale(group: ScaleGroup, s: torch.Tensor) -> None:
    """Fold ``s`` ``(d_in,)`` into ``group``: ``prev``'s output channels divided by ``s``, the
    linears' input columns multiplied by it. The composition computes the same function."""
    prev = group.prev
    if isinstance(prev, nn.Linear):
        prev.weight.div_(s.view(-1, 1).to(prev.weight.dtype))  # (d_out_prev, d_in_prev) rows
        if prev.bias is not None:
            prev.bias.div_(s.to(prev.bias.dtype))
    else:  # a norm: y = gamma * normalised(x) (+ beta)
        weight = getattr(prev, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.dim() != 1:
            raise ConfigError(f"cannot fold scales into {type(prev).__name__}: it has no weight")
        weight.div_(s.to(weight.dtype))
        bias = getattr(prev, "bias", None)
        if isinstance(bias, torch.Tensor):
            bias.div_(s.to(bias.dtype))
    for fc in group.linears:
        fc.weight.mul_(s.view(1, -1).to(fc.weight.dtype))  # (d_out, d_in) columns


def rtn(w: torch.Tensor, bits: int, group_size: int | None, symmetric: bool) -> torch.Tensor:
    """Round-to-nearest ``w`` ``(rows, cols)`` with one grid per ``group_size`` columns of a row
    (per row when ``None``), dequantised, in ``w``'s dtype."""
    granularity: Granularity = "channel" if group_size is None else "group"
    q = quantize_tensor(
        w.detach(), bits, symmetric=symmetric, granularity=granularity, group_size=group_size or 1
    )
    return q.dequantize().reshape(w.shape).to(w.dtype)


def _run(
    group: ScaleGroup, xs: Sequence[torch.Tensor], kwargs: Sequence[dict[str, Any]]
) -> list[torch.Tensor]:
    if group.call_kwargs:
        return [group.inspect(x, **kw) for x, kw in zip(xs, kwargs, strict=True)]
    return [group.inspect(x) for x in xs]


@torch.no_grad()
def search_scale(
    group: ScaleGroup,
    xs: Sequence[torch.Tensor],
    kwargs: Sequence[dict[str, Any]],
    bits: int = 4,
    group_size: int | None = 128,
    *,
    symmetric: bool = False,
    n_grid: int = 20,
) -> tuple[torch.Tensor, list[float]]:
    """AWQ's grid search for one scale group (``auto_scale.py: _search_module_scale``).

    Args:
        group: The layers and the module to inspect.
        xs: The group's inputs, one ``(B, T, d_in)`` tensor per calibration batch.
        kwargs: The block's keyword arguments for each batch (used by the attention).
        bits, group_size, symmetric: The grid.
        n_grid: Points of the grid ``alpha = 0, 1/n_grid, ..., (n_grid - 1)/n_grid``.

    Returns:
        The best scales ``(d_in,)`` and the mean squared output error at every ``alpha`` (the
        first, ``alpha = 0``, is round-to-nearest's).
    """
    d_in = group.linears[0].in_features
    # s_x: mean |x_j| over every calibration token, per input channel
    flat = [x.reshape(-1, d_in) for x in xs]  # (n, d_in) each
    s_x = torch.stack([x.abs().float().sum(0) for x in flat]).sum(0)
    s_x = s_x / sum(x.shape[0] for x in flat)  # (d_in,)
    reference = _run(group, xs, kwargs)  # f(W X)
    originals = [fc.weight.detach().clone() for fc in group.linears]
    losses: list[float] = []
    best, best_s = float("inf"), torch.ones_like(s_x)
    try:
        for k in range(n_grid):
            alpha = k / n_grid
            s = s_x.pow(alpha).clamp(min=1e-4)
            s = s / (s.max() * s.min()).sqrt()  # (d_in,), centred in log scale
            for fc, w in zip(group.linears, originals, strict=True):
                scaled = w * s.view(1, -1).to(w.dtype)  # W diag(s)
                fc.weight.copy_(rtn(scaled, bits, group_size, symmetric) / s.view(1, -1))
            out = _run(group, xs, kwargs)  # f(Q(W diag(s)) diag(s)^-1 X)
            n = sum(r.numel() for r in reference)
            errors = zip(out, reference, strict=True)
            loss = sum(float((o - r).float().pow(2).sum()) for o, r in errors) / n
            losses.append(loss)
            if loss < best:
                best, best_s = loss, s.clone()
    finally:
        for fc, w in zip(group.linears, originals, strict=True):
            fc.weight.copy_(w)
    return best_s, losses


@torch.no_grad()
def search_clip(
    w: torch.Tensor,
    x: torch.Tensor,
    bits: int = 4,
    group_size: int | None = 128,
    *,
    symmetric: bool = False,
    n_grid: int = 20,
    max_shrink: float = 0.5,
    n_tokens: int = 512,
    rows_per_batch: int = 64,
) -> torch.Tensor:
    """AWQ's clipping search (``auto_clip.py: auto_clip_layer``): for every row and group of
    ``w`` ``(rows, cols)``, the range ``m = (1 - i / n_grid) max|w|``, ``i < max_shrink *
    n_grid``, whose clamped-and-rounded weights best preserve that group's partial outputs
    :math:`\\sum_{k \\in g} w_k x_k` on ``n_tokens`` of the inputs ``x`` ``(N, cols)``.

    Returns:
        The chosen ``m`` per row and group, ``(rows, n_groups, 1)``.
    """
    rows, cols = w.shape
    g = group_size or cols
    x = x[:: max(1, x.shape[0] // n_tokens)].float()  # (n, c) evenly spaced tokens
    xg = x.view(x.shape[0], cols // g, g)  # (n, G, g)
    best_max = []
    for r0 in range(0, rows, rows_per_batch):
        wg = w[r0 : r0 + rows_per_batch].float().view(-1, cols // g, g)  # (r, G, g)
        org_out = torch.einsum("ngk,rgk->rng", xg, wg)  # (r, n, G) partial outputs per group
        org_max = wg.abs().amax(-1, keepdim=True)  # (r, G, 1)
        best = org_max.clone()
        min_err = torch.full_like(org_max, float("inf"))
        for i in range(int(max_shrink * n_grid)):
            m = org_max * (1 - i / n_grid)
            clamped = torch.maximum(torch.minimum(wg, m), -m)  # (r, G, g)
            q = rtn(clamped.reshape(-1, cols), bits, group_size, symmetric).view_as(wg)
            err = (torch.einsum("ngk,rgk->rng", xg, q) - org_out).pow(2).mean(1)  # (r, G)
            err = err.unsqueeze(-1)  # (r, G, 1)
            better = err < min_err
            min_err = torch.where(better, err, min_err)
            best = torch.where(better, m, best)
        best_max.append(best)
    return torch.cat(best_max)  # (rows, G, 1)


@torch.no_grad()
def quantize_model_awq(
    model: nn.Module,
    calibration_batches: Sequence[torch.Tensor],
    bits: int = 4,
    group_size: int | None = 128,
    *,
    symmetric: bool = False,
    n_grid: int = 20,
    clip: bool = True,
    scale: bool = True,
    quantize: bool = True,
    skip: Iterable[str] = ("lm_head",),
    report: dict[str, Any] | None = None,
) -> nn.Module:
    """Quantise a Llama-style model with AWQ in place (simulated: the weights stay float,
    holding only grid values, and the norms carry the folded scales) and return it.

    Args:
        model: A decoder LM with Llama blocks (:func:`llama_scale_groups`).
        calibration_batches: ``(B, T)`` token ids
            (:func:`~groundwork.compress.calibration.calibration_batches`).
        bits, group_size, symmetric: The round-to-nearest grid applied at the end.
        n_grid: Points of the ``alpha`` grid.
        clip: Run the clipping search (``search_clip``) after scaling.
        scale: Run the scale search (``False``: clipping and RTN only, for ablations).
        quantize: Round at the end; ``False`` leaves the weights float, with the scales folded
            in (and the ranges clipped, if ``clip``): with ``clip=False`` the model computes
            the same function as before.
        skip: Layer-name suffixes left in float (the output head).
        report: If given, filled with each block's chosen ``alpha`` per scale group.

    Raises:
        ConfigError: bits out of range, a group size that does not divide some layer's inputs,
            blocks that are not Llama-shaped.
        DataError: no calibration batches.
    """
    int_range(bits, symmetric)
    check_calibration(calibration_batches)
    linears = quantizable_linears(model, skip)
    for name, layer in linears.items():
        check_group_size(group_size, layer.in_features, name)
    to_quantize = {id(m) for m in linears.values()}
    blocks = decoder_blocks(model)
    groups_of = [llama_scale_groups(block) for block in blocks]  # checks the shape up front

    with eval_mode(model):
        inputs = block_inputs(model, calibration_batches)
        for b, (block, groups) in enumerate(zip(blocks, groups_of, strict=True)):
            layers = {g.name: g.linears[0] for g in groups}  # one hook per distinct input
            with LinearInputs(layers, hessian=False, keep_inputs=True) as stats:
                next_inputs = run_block(block, inputs)  # the float block's outputs
            kwargs = [kw for _, kw in inputs]
            group_inputs = {g.name: stats.inputs[g.name] for g in groups}  # (B, T, d_in) each
            del stats
            if scale:
                for group in groups:
                    xs = group_inputs[group.name]
                    s, losses = search_scale(
                        group, xs, kwargs, bits, group_size, symmetric=symmetric, n_grid=n_grid
                    )
                    apply_scale(group, s)
                    group_inputs[group.name] = [x / s.to(x.dtype) for x in xs]  # diag(s)^-1 X
                    if report is not None:
                        best = min(range(len(losses)), key=losses.__getitem__)
                        report.setdefault(f"block{b}", {})[group.name] = {
                            "alpha": best / n_grid,
                            "loss": losses[best],
                            "rtn_loss": losses[0],
                        }
            if clip:
                for group in groups:
                    x = torch.cat([x.reshape(-1, x.shape[-1]) for x in group_inputs[group.name]])
                    for fc in group.linears:
                        if group.name == "qkv" and fc is not group.linears[2]:
                            continue  # q and k are not clipped (as the reference)
                        if id(fc) not in to_quantize:
                            continue
                        m = search_clip(
                            fc.weight, x, bits, group_size, symmetric=symmetric, n_grid=n_grid
                        )  # (r, G, 1)
                        w = fc.weight.view(fc.out_features, m.shape[1], -1)  # (r, G, g)
                        w.copy_(torch.maximum(torch.minimum(w, m), -m))
            del group_inputs
            for block_layer in block.modules():
                if quantize and id(block_layer) in to_quantize:
                    assert isinstance(block_layer, nn.Linear)
                    block_layer.weight.copy_(rtn(block_layer.weight, bits, group_size, symmetric))
            inputs = next_inputs
    return model
