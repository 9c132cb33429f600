r"""GPTQ: one-shot weight quantisation that corrects each rounding error with the weights not
yet rounded (Frantar, Ashkboos, Hoefler & Alistarh 2022, Algorithm 1).

**The objective.** For one linear layer with weight :math:`W \in \mathbb{R}^{r \times c}` and
calibration inputs :math:`X \in \mathbb{R}^{c \times N}` (one column per token), find
representable :math:`\hat W` minimising :math:`\lVert W X - \hat W X \rVert_2^2`. Rows do not
interact, and for one row :math:`w` the error is the quadratic
:math:`(w - \hat w) H (w - \hat w)^\top / 2` with Hessian :math:`H = 2 X X^\top` (the same
:math:`H` for every row).

**OBS -> OBQ.** Optimal Brain Surgeon (Hassibi & Stork 1993) removes one weight :math:`w_q`
and moves the others to absorb it: for a quadratic loss the best compensation and its cost are

.. math:: \delta = -\frac{w_q - \operatorname{quant}(w_q)}{[H^{-1}]_{qq}}\; H^{-1}_{:,q},
   \qquad \Delta L = \frac{(w_q - \operatorname{quant}(w_q))^2}{2\,[H^{-1}]_{qq}},

where "removing" means rounding to the grid (OBQ, Frantar & Alistarh 2022). After
:math:`q` is fixed it leaves the problem: the inverse Hessian of the remaining weights :math:`F`
is one step of Gaussian elimination,
:math:`H_{F}^{-1} \leftarrow H^{-1} - H^{-1}_{:,q} H^{-1}_{q,:} / [H^{-1}]_{qq}`.

**OBQ -> GPTQ.** Three changes make this fast enough for billions of weights:

1. *Arbitrary order.* OBQ picks the cheapest weight of each row greedily; GPTQ quantises
   columns left to right, the same order for every row, so :math:`H_F^{-1}` is shared by all
   rows and is updated once per column instead of once per weight. (Optional *act-order*
   permutes the columns by decreasing :math:`H_{ii}` first: the most-used input channels are
   rounded while many weights remain to compensate.)
2. *Lazy batch updates.* Column :math:`q`'s update touches every later column, a
   memory-bound rank-1 update. GPTQ applies it inside a block of ``block_size`` (128) columns
   only, remembers the scaled errors :math:`E`, and updates the rest of the matrix once per
   block with one matrix product :math:`W_{:, >b} \mathrel{-}= E\, U_{b, >b}`.
3. *Cholesky form.* The eliminated inverses are never formed: with the upper Cholesky
   factor :math:`H^{-1} = U^\top U`, row :math:`q` of :math:`U` (from the diagonal on) equals
   :math:`[H_F^{-1}]_{q,F} / \sqrt{[H_F^{-1}]_{qq}}` for :math:`F = \{q, q+1, \dots\}`:
   Cholesky's first step divides the first row by the root of its pivot and subtracts its
   outer product, which *is* the elimination above, and the rest of :math:`U` factors what
   remains. So :math:`\frac{w_q - \hat w_q}{U_{qq}} U_{q,F} = \frac{w_q - \hat w_q}{[H_F^{-1}]_{qq}}
   [H_F^{-1}]_{q,F}`, the OBS update, from one factorisation computed up front and
   numerically stable (the repeated eliminations accumulate error at scale).

Before factorising, a dampening
:math:`\lambda = 0.01 \cdot \operatorname{mean}\operatorname{diag}(H)`
is added to the diagonal, and *dead* inputs (:math:`H_{ii} = 0`, never active) get
:math:`H_{ii} = 1` and their weights set to 0. With ``group_size`` :math:`g`, each run of
:math:`g` columns gets its own grid (:func:`~groundwork.compress.quantize.fit_grid`, the RTN
grid), fit when quantisation reaches its first column, on the weights as they are *then* (the
earlier columns' updates included), as the reference ``--groupsize`` option. (The reference
reads the group's values from the matrix as it was at the start of the current lazy block;
this file applies the block's pending updates first, so results do not depend on
``block_size``; the two agree whenever groups start at block boundaries, e.g. ``g = 128``.)

:func:`quantize_model_gptq` quantises a whole model block by block: the calibration set's
hidden states enter block 0; each block's linears get :math:`H` from those inputs, are
quantised, and the block's *quantised* outputs feed the next block (the reference
``llama_sequential``; ``true_sequential`` also re-collects inputs inside the block after each
group of layers that share an input).

**The attention sink (not in the paper).** :math:`H` averages over tokens, so GPTQ protects
the directions most tokens use and may push error into directions few tokens use. One token
breaks that bargain: the first token of a sequence becomes an *attention sink* (Xiao et al.
2023) with unusual hidden states, and every later token attends to it, so an error in its keys
and values reaches every output. On SmolLM2-135M, GPTQ (int4, :math:`g = 64`, columns in order)
lowers held-out layer errors 2-3x below RTN's yet barely moves perplexity (44.1 vs RTN's 44.4);
the first token's own error in a mid-stack ``q_proj`` grows about 12x. ``sink_weight`` counts
each window's first token that many times in :math:`H`; at 512 it gains little (43.8), while
act-order recovers most of the gap (39.2): the few input channels with huge activations are
rounded first, while every other column can still compensate (``docs/results/quantize.md``).

References:
    - Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for Generative
      Pre-trained Transformers" (arXiv 2210.17323), Algorithm 1; reference code
      IST-DASLab/gptq (``gptq.py: fasterquant``, ``llama.py``).
    - Frantar & Alistarh 2022, "Optimal Brain Compression" (OBQ).
    - Hassibi & Stork 1993, "Second Order Derivatives for Network Pruning: Optimal Brain
      Surgeon".
    - Xiao et al. 2023, "Efficient Streaming Language Models with Attention Sinks"; Sun et al.
      2024, "Massive Activations in Large Language Models".
    - Docs: chapter 18, "Efficient inference and compression".
"""

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from groundwork.compress.calibration import (
    BlockInput,
    LinearInputs,
    block_inputs,
    check_calibration,
    decoder_blocks,
    iterate_linears,
    run_block,
)
from groundwork.compress.quantize import (
    dequantize_codes,
    fit_grid,
    int_range,
    quantizable_linears,
    quantize_codes,
)
from groundwork.errors import ConfigError
from groundwork.runtime import eval_mode


@dataclass
class GPTQResult:
    """A GPTQ-quantised weight."""

    weight: torch.Tensor
    """The dequantised weight ``(rows, cols)``, in the input's dtype: what the model computes
    with."""
    codes: torch.Tensor
    """Integer codes ``(rows, cols)`` (int32), in the original column order."""
    scale: torch.Tensor
    """One scale per row and group ``(rows, n_groups, 1)`` (``n_groups = 1`` per channel)."""
    zero: torch.Tensor
    """Zero points, shaped like ``scale`` (all 0 when symmetric)."""
    group_index: torch.Tensor
    """The group of every input column ``(cols,)``: ``j // group_size`` without act-order;
    with it, groups are runs of the *permuted* columns (the reference's ``g_idx``)."""
    error: float
    """GPTQ's own estimate of the loss, :math:`\\sum (w_q - \\hat w_q)^2 / (2 U_{qq}^2)`."""

    def dequantize(self) -> torch.Tensor:
        """``scale * (codes - zero)`` with each column's group constants (float32)."""
        g = self.group_index
        return dequantize_codes(self.codes, self.scale[:, g, 0], self.zero[:, g, 0])


def check_group_size(group_size: int | None, in_features: int, name: str = "weight") -> None:
    """Raise :class:`ConfigError` unless ``group_size`` is ``None`` (per channel) or a positive
    divisor of ``in_features``."""
    if group_size is None:
        return
    if group_size < 1 or in_features % group_size:
        raise ConfigError(
            f"group_size {group_size} does not divide the {in_features} input columns of "
            f"{name}: choose a divisor (e.g. 32, 64 or 128) or None (per channel)"
        )


def _check_layer(W: torch.Tensor, H: torch.Tensor, bits: int, symmetric: bool) -> None:
    int_range(bits, symmetric)  # raises ConfigError for bits outside 2..8
    if W.dim() != 2:
        raise ConfigError(f"W must be (out_features, in_features), got shape {tuple(W.shape)}")
    if H.shape != (W.shape[1], W.shape[1]):
        raise ConfigError(
            f"H must be (in_features, in_features) = {(W.shape[1], W.shape[1])}, "
            f"got {tuple(H.shape)}"
        )


@torch.no_grad()
def gptq_quantize_layer(
    W: torch.Tensor,
    H: torch.Tensor,
    bits: int = 4,
    group_size: int | None = 128,
    *,
    symmetric: bool = False,
    block_size: int = 128,
    damp: float = 0.01,
    act_order: bool = False,
) -> GPTQResult:
    """Quantise one weight matrix with GPTQ (Algorithm 1: Cholesky form, lazy batches).

    Args:
        W: The weight ``(rows, cols)``; not modified. float64 in, float64 arithmetic; anything
            else runs in float32.
        H: The Hessian ``2 X X^T / N`` of the layer's inputs ``(cols, cols)``
            (:class:`~groundwork.compress.calibration.LinearInputs`).
        bits: Bits per code, 2..8.
        group_size: Columns per grid; ``None``: one grid per row, fit before the loop.
        symmetric: Absmax grid (signed codes) instead of min/max with a zero point (the
            reference's default).
        block_size: Columns per lazy batch (128 in the paper); does not change the result.
        damp: Dampening, as a fraction of the mean diagonal of ``H``.
        act_order: Quantise columns in order of decreasing ``H_ii``.

    Returns:
        A :class:`GPTQResult`.

    Raises:
        ConfigError: bits out of range, a group size that does not divide ``cols``, shapes
            that do not match, a non-positive ``block_size``, or an ``H`` that stays
            indefinite after dampening.
    """
    _check_layer(W, H, bits, symmetric)
    rows, cols = W.shape
    check_group_size(group_size, cols)
    if block_size < 1:
        raise ConfigError(f"block_size must be at least 1, got {block_size}")
    if damp < 0:
        raise ConfigError(f"damp must be non-negative, got {damp}")
    dtype = torch.float64 if W.dtype == torch.float64 else torch.float32
    W = W.detach().to(dtype).clone()  # (r, c), updated in place as columns are rounded
    H = H.detach().to(dtype=dtype, device=W.device).clone()  # (c, c)

    dead = torch.diag(H) == 0  # inputs that were never active: nothing to preserve
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    perm = torch.arange(cols, device=W.device)
    if act_order:
        perm = torch.argsort(torch.diag(H), descending=True)
        W, H = W[:, perm], H[perm][:, perm]
    H += damp * torch.mean(torch.diag(H)) * torch.eye(cols, dtype=dtype, device=W.device)
    try:
        # H^-1 via its Cholesky factor, then the upper factor U of H^-1 = U^T U.
        Hinv = torch.cholesky_inverse(torch.linalg.cholesky(H))  # (c, c)
        U = torch.linalg.cholesky(Hinv, upper=True)  # (c, c), upper triangular
    except torch.linalg.LinAlgError as e:
        raise ConfigError(
            f"H is not positive definite even after dampening ({damp}): raise damp"
        ) from e

    codes = torch.zeros(rows, cols, dtype=torch.int32, device=W.device)  # permuted order
    Q = torch.zeros_like(W)  # (r, c) dequantised, permuted order
    scales: list[torch.Tensor] = []  # one (r, 1) per group
    zeros: list[torch.Tensor] = []
    losses = torch.zeros_like(W)
    if group_size is None:  # per channel: one grid per row, from the weights as given
        scale, zero = fit_grid(W, bits, symmetric)  # (r, 1)
        scales.append(scale)
        zeros.append(zero)

    # --8<-- [start:gptq]
    for i1 in range(0, cols, block_size):  # lazy batches of block_size columns
        i2 = min(i1 + block_size, cols)
        W1 = W[:, i1:i2].clone()  # (r, b) this block, kept up to date
        E1 = torch.zeros_like(W1)  # (r, b) scaled errors (w - q) / U_qq
        U1 = U[i1:i2, i1:i2]  # (b, b)
        for i in range(i2 - i1):
            j = i1 + i  # the column being quantised
            if group_size is not None and j % group_size == 0:
                # A new group: fit its grid on its columns as they are now (pending updates
                # from this block applied to any columns past the block).
                end = j + group_size
                current = torch.cat(
                    [W1[:, i : i + group_size], W[:, i2:end] - E1[:, :i] @ U[i1:j, i2:end]], 1
                )  # (r, g)
                scale, zero = fit_grid(current, bits, symmetric)  # (r, 1) each
                scales.append(scale)
                zeros.append(zero)
            w, d = W1[:, i], U1[i, i]  # (r,), U_qq = sqrt([H_F^-1]_qq)
            q_codes = quantize_codes(w.unsqueeze(1), scale, zero, bits, symmetric)  # (r, 1)
            q = dequantize_codes(q_codes, scale, zero).squeeze(1).to(dtype)  # (r,)
            codes[:, j], Q[:, j] = q_codes.squeeze(1), q
            losses[:, j] = (w - q) ** 2 / d**2 / 2  # OBS cost of rounding w_q
            err = (w - q) / d  # (r,)
            # OBS update of the block's later columns: delta = -(w - q)/[H_F^-1]_qq H_F^-1_{q,:}
            # = -err * U_{q,:} (the Cholesky row holds the eliminated inverse's row).
            W1[:, i:] -= err.unsqueeze(1) @ U1[i, i:].unsqueeze(0)  # (r, b - i)
            E1[:, i] = err
        W[:, i2:] -= E1 @ U[i1:i2, i2:]  # the block's deferred updates, one matmul
    # --8<-- [end:gptq]

    inverse = torch.argsort(perm)
    n_groups = len(scales)
    group_of_perm = (
        torch.arange(cols, device=W.device) // group_size
        if group_size is not None
        else torch.zeros(cols, dtype=torch.long, device=W.device)
    )
    return GPTQResult(
        weight=Q[:, inverse],
        codes=codes[:, inverse],
        scale=torch.stack(scales, 1).view(rows, n_groups, 1),
        zero=torch.stack(zeros, 1).view(rows, n_groups, 1),
        group_index=group_of_perm[inverse],
        error=float(losses.sum()),
    )


def _sequential_groups(
    block: nn.Module, layers: dict[str, nn.Linear], sample: BlockInput
) -> list[list[str]]:
    """``layers`` in the order ``block`` calls them on ``sample``, consecutive calls that take
    the very same input tensor grouped (Llama: ``[q, k, v], [o], [gate, up], [down]``)."""
    calls: list[tuple[str, torch.Tensor]] = []
    handles = [
        layer.register_forward_pre_hook(
            lambda module, args, name=name: calls.append((name, args[0]))
        )
        for name, layer in layers.items()
    ]
    try:
        run_block(block, [sample])
    finally:
        for handle in handles:
            handle.remove()
    groups: list[list[str]] = []
    seen: set[str] = set()
    last: torch.Tensor | None = None
    for name, x in calls:
        if name in seen:
            continue
        seen.add(name)
        if groups and x is last:
            groups[-1].append(name)
        else:
            groups.append([name])
        last = x
    groups += [[n] for n in layers if n not in seen]  # never called: quantised last
    return groups


@torch.no_grad()
def quantize_model_gptq(
    model: nn.Module,
    calibration_batches: Sequence[torch.Tensor],
    bits: int = 4,
    group_size: int | None = 128,
    *,
    symmetric: bool = False,
    block_size: int = 128,
    damp: float = 0.01,
    act_order: bool = False,
    true_sequential: bool = False,
    sink_weight: float = 1.0,
    skip: Iterable[str] = ("lm_head",),
    on_layer: Callable[[str, GPTQResult], None] | None = None,
) -> nn.Module:
    """Quantise every linear layer inside the decoder blocks of ``model`` with GPTQ, block by
    block, in place (simulated: the weights stay float, holding only grid values), and return
    it.

    Each block sees the calibration hidden states produced by the blocks before it *after*
    they were quantised, so later blocks correct for earlier blocks' errors. A layer that never
    receives input gets :math:`H = I` (round to nearest).

    Args:
        model: A decoder LM whose blocks are an ``nn.ModuleList`` (``layers``/``blocks``).
        calibration_batches: ``(B, T)`` token ids
            (:func:`~groundwork.compress.calibration.calibration_batches`).
        bits, group_size, symmetric, block_size, damp, act_order: As
            :func:`gptq_quantize_layer`.
        true_sequential: Within a block, quantise the layers sharing an input together, then
            re-collect the next group's inputs from the partly quantised block (the reference
            ``--true-sequential``); else one pass collects every layer's inputs.
        sink_weight: How many times each calibration window's first token counts in
            :math:`H` (1: the paper's plain average). Not part of GPTQ: the first token of a
            window is the model's attention sink, which every later token reads, so its
            errors cost far more than its share of the average (see the module docstring).
        skip: Layer-name suffixes left in float (the output head).
        on_layer: Called with each layer's name and result (progress, statistics).

    Raises:
        ConfigError: bits out of range, a group size that does not divide some layer's inputs,
            or quantisable linears outside the decoder blocks.
        DataError: no calibration batches.
    """
    int_range(bits, symmetric)
    check_calibration(calibration_batches)
    if sink_weight <= 0:
        raise ConfigError(f"sink_weight must be positive, got {sink_weight}")
    linears = quantizable_linears(model, skip)
    for name, layer in linears.items():
        check_group_size(group_size, layer.in_features, name)
    blocks = decoder_blocks(model)
    prefixes = {id(m): n for n, m in model.named_modules()}
    in_blocks = {
        name for block in blocks for name, _ in iterate_linears(block, linears, prefixes[id(block)])
    }
    if outside := sorted(set(linears) - in_blocks):
        raise ConfigError(f"linear layers outside the decoder blocks: {outside}; add them to skip")

    with eval_mode(model):
        inputs = block_inputs(model, calibration_batches)
        for block in blocks:
            layers = dict(iterate_linears(block, linears, prefixes[id(block)]))
            groups = (
                _sequential_groups(block, layers, inputs[0]) if true_sequential else [list(layers)]
            )
            for group in groups:
                group_layers = {n: layers[n] for n in group}
                with LinearInputs(group_layers, sink_weight=sink_weight) as stats:
                    run_block(block, inputs)
                for name in group:
                    weight = layers[name].weight
                    H = stats.hessian.get(name)
                    if H is None:  # never called on the calibration data
                        H = torch.eye(weight.shape[1], device=weight.device)
                    result = gptq_quantize_layer(
                        weight,
                        H,
                        bits,
                        group_size,
                        symmetric=symmetric,
                        block_size=block_size,
                        damp=damp,
                        act_order=act_order,
                    )
                    weight.copy_(result.weight.to(weight.dtype))
                    if on_layer is not None:
                        on_layer(name, result)
            inputs = run_block(block, inputs)  # the quantised block's outputs feed the next
    return model
