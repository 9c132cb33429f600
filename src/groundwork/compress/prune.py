r"""Pruning: zero the weights, or remove the attention heads, that a trained model needs least.

* **Magnitude pruning** drops the weights of smallest $|W_{ij}|$, compared over the whole layer
  (Han et al. 2015, "Learning both Weights and Connections for Efficient Neural Networks").
* **Wanda** (Sun et al. 2023, "A Simple and Effective Pruning Approach for Large Language
  Models") scores a weight by how much it moves the output, $S_{ij} = |W_{ij}|\,\lVert X_j
  \rVert_2$, with $\lVert X_j\rVert_2$ the norm of input feature $j$ over calibration tokens, and
  compares weights within each output row. LLMs have a few input features of huge magnitude
  (Dettmers et al. 2022, "LLM.int8()"); a small weight reading one of them matters more than a
  big weight reading a quiet one. No retraining, no weight update, one forward pass.
* **N:M semi-structured sparsity**: in every group of ``m`` consecutive input weights keep the
  ``n`` of highest score. 2:4 is what NVIDIA's Ampere (and later) sparse tensor cores execute at
  up to twice the dense speed (Mishra et al. 2021, "Accelerating Sparse Deep Neural Networks").
* **Attention-head pruning** removes whole heads (Michel et al. 2019, "Are Sixteen Heads Really
  Better than One?"), ranked by the L2 norm of their slice of the output projection or by
  Michel's gradient importance $I_h = \mathbb{E}_x\,|\partial L(x) / \partial \xi_h|$, $\xi_h$ a
  gate on head $h$'s output. The q/k/v/o projections really shrink (each
  :class:`~groundwork.nn.Attention` keeps its own ``n_heads``). With grouped-query attention a
  query head cannot leave its key/value head, and every group must keep as many query heads as
  the others (``repeat_kv``), so the unit of removal is either a whole KV group (saves the KV
  cache too) or one query head from *every* group (``unit="query"``; K/V untouched).

Masks are boolean, ``True`` = keep. Pruning is a function applied from outside the model; only
``nn.Linear`` layers inside the transformer blocks are pruned (not the embeddings or the output
head, as in the paper). Chapter 18, "Efficient inference and compression".

This module is long because it holds four pruning methods, their calibration (one pass, or
block by block as the paper's code) and the head surgery that GQA constrains; the chapter quotes
them side by side.
"""

import contextlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatch
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from groundwork.errors import ConfigError
from groundwork.models.config import kept_heads
from groundwork.nn import Attention
from groundwork.runtime import eval_mode

Method = Literal["magnitude", "wanda"]
Group = Literal["row", "layer"]
DEFAULT_SKIP = ("*.router", "*.noise")
"""Linear layers never pruned: MoE routers (``fnmatch`` patterns on module names)."""


def _check_sparsity(sparsity: float) -> None:
    if not 0.0 <= sparsity < 1.0:
        raise ConfigError(f"sparsity must be in [0, 1), got {sparsity!r}")


def magnitude_scores(weight: torch.Tensor) -> torch.Tensor:
    """$S_{ij} = |W_{ij}|$, the score of magnitude pruning."""
    return weight.abs()


# --8<-- [start:wanda]
def wanda_scores(weight: torch.Tensor, input_norms: torch.Tensor) -> torch.Tensor:
    """Wanda's score $S_{ij} = |W_{ij}| \\cdot \\lVert X_j \\rVert_2$ of an ``(out, in)`` weight.

    ``input_norms[j]`` is the L2 norm of input feature ``j`` over all calibration tokens.

    >>> wanda_scores(torch.tensor([[1.0, -2.0]]), torch.tensor([3.0, 1.0])).tolist()
    [[3.0, 2.0]]
    """
    if input_norms.shape != (weight.shape[1],):
        raise ConfigError(
            f"input_norms must have shape ({weight.shape[1]},), one per input feature, "
            f"got {tuple(input_norms.shape)}"
        )
    return weight.abs() * input_norms[None, :]  # (out, in)


def unstructured_mask(scores: torch.Tensor, sparsity: float, group: Group = "row") -> torch.Tensor:
    """Keep-mask dropping the ``floor(sparsity * size)`` lowest scores of each comparison group.

    ``group="row"``: each output row is a group (Wanda); ``"layer"``: the whole matrix is one
    (magnitude pruning). Tied scores are split arbitrarily: the count is always exact.

    >>> unstructured_mask(torch.tensor([[4.0, 1.0, 3.0, 2.0]]), 0.5).tolist()
    [[True, False, True, False]]
    """
    _check_sparsity(sparsity)
    if group not in ("row", "layer"):
        raise ConfigError(f"group must be 'row' or 'layer', got {group!r}")
    flat = scores if group == "row" else scores.reshape(1, -1)  # (groups, size)
    k = math.floor(sparsity * flat.shape[1] + 1e-9)  # weights to drop in each group
    drop = flat.topk(k, dim=1, largest=False).indices  # (groups, k): the k lowest scores
    keep = torch.ones_like(flat, dtype=torch.bool).scatter_(1, drop, False)
    return keep.reshape(scores.shape)


# --8<-- [end:wanda]


# --8<-- [start:nm]
def nm_mask(scores: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """Keep-mask with the ``n`` highest scores of every ``m`` consecutive inputs of each row.

    >>> nm_mask(torch.tensor([[4.0, 1.0, 3.0, 2.0, 0.0, 9.0, 8.0, 7.0]])).int().tolist()
    [[1, 0, 1, 0, 0, 1, 1, 0]]
    """
    if not 0 < n <= m:
        raise ConfigError(f"N:M sparsity needs 0 < n <= m, got n={n}, m={m}")
    d_out, d_in = scores.shape
    if d_in % m:
        raise ConfigError(f"m={m} must divide the layer's in_features ({d_in}) for {n}:{m}")
    groups = scores.reshape(d_out, d_in // m, m)  # (out, in / m, m): m consecutive inputs
    top = groups.topk(n, dim=-1).indices  # (out, in / m, n)
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, top, True)
    return keep.reshape(d_out, d_in)


# --8<-- [end:nm]


# ---------------------------------------------------------------------------------------------
# which layers, and calibration
def transformer_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The name and the ``nn.ModuleList`` of the model's blocks: its largest module list."""
    lists = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.ModuleList)]
    if not lists:
        raise ConfigError(f"{type(model).__name__} has no nn.ModuleList of transformer blocks")
    return max(lists, key=lambda item: sum(p.numel() for p in item[1].parameters()))


def block_linears(model: nn.Module, skip: Sequence[str] = DEFAULT_SKIP) -> dict[str, nn.Linear]:
    """Every ``nn.Linear`` inside the transformer blocks, by full name, except ``skip`` patterns.

    >>> from groundwork.models.llama import Llama, LlamaConfig
    >>> list(block_linears(Llama(LlamaConfig.from_name("tiny"))))[:2]
    ['model.layers.0.self_attn.q_proj', 'model.layers.0.self_attn.k_proj']
    """
    prefix, blocks = transformer_blocks(model)
    return {
        f"{prefix}.{i}.{name}": module
        for i, block in enumerate(blocks)
        for name, module in block.named_modules()
        if isinstance(module, nn.Linear) and not any(fnmatch(name, p) for p in skip)
    }


def _norm_hooks(linears: dict[str, nn.Linear]) -> tuple[dict[str, torch.Tensor], list[Any]]:
    """Forward hooks adding each input feature's squared values to ``sums[name]``."""
    sums = {name: torch.zeros(lin.in_features) for name, lin in linears.items()}

    def hook(name: str) -> Any:
        def add(module: nn.Module, args: tuple[torch.Tensor, ...], output: Any) -> None:
            x = args[0].detach().float().reshape(-1, args[0].shape[-1])  # (tokens, in)
            sums[name] += (x * x).sum(0).cpu()  # sum over tokens of X_j^2

        return add

    return sums, [lin.register_forward_hook(hook(name)) for name, lin in linears.items()]


@torch.no_grad()
def collect_input_norms(
    model: nn.Module, batches: Iterable[torch.Tensor], *, skip: Sequence[str] = DEFAULT_SKIP
) -> dict[str, torch.Tensor]:
    """$\\lVert X_j \\rVert_2$ over every token of ``batches`` (``(B, T)`` ids) for each block
    linear layer's input features, from one forward pass of the (unpruned) model."""
    sums, handles = _norm_hooks(block_linears(model, skip))
    try:
        with eval_mode(model):
            for ids in batches:
                model(ids)
    finally:
        for handle in handles:
            handle.remove()
    return {name: s.sqrt() for name, s in sums.items()}


class _Captured(Exception):
    """Stops the forward pass once the first block's inputs are captured."""


def _first_block_inputs(
    model: nn.Module, block: nn.Module, batches: Iterable[torch.Tensor]
) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """The ``(args, kwargs)`` each batch gives the first block (hidden states, RoPE, mask...)."""
    captured: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def grab(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        captured.append((args, kwargs))
        raise _Captured

    handle = block.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        for ids in batches:
            with contextlib.suppress(_Captured):
                model(ids)
    finally:
        handle.remove()
    return captured


# ---------------------------------------------------------------------------------------------
# pruning a model
@dataclass
class PruneReport:
    """What :func:`prune_model` did."""

    method: str
    structure: str
    target: float
    """The requested sparsity."""
    layers: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Per pruned layer: ``(zero weights, weights)`` after pruning."""

    @property
    def sparsity(self) -> float:
        """Fraction of zero weights over all pruned layers."""
        zeros, total = (sum(v) for v in zip(*self.layers.values(), strict=True))
        return zeros / total

    def per_layer(self) -> dict[str, float]:
        """Each layer's fraction of zero weights."""
        return {name: z / n for name, (z, n) in self.layers.items()}


def _parse_structure(structure: str, sparsity: float) -> tuple[int, int] | None:
    """``"unstructured"`` -> ``None``; ``"2:4"`` -> ``(2, 4)``, checked against ``sparsity``."""
    if structure == "unstructured":
        return None
    try:
        n, m = (int(s) for s in structure.split(":"))
    except ValueError:
        raise ConfigError(f"structure must be 'unstructured' or 'N:M', got {structure!r}") from None
    if 0 < n <= m and abs(sparsity - (1 - n / m)) > 1e-9:
        raise ConfigError(f"{structure} sparsity is {1 - n / m:g}, not the requested {sparsity:g}")
    return n, m


@torch.no_grad()
def prune_model(
    model: nn.Module,
    method: Method,
    sparsity: float,
    structure: str = "unstructured",
    *,
    calibration: Iterable[torch.Tensor] | None = None,
    input_norms: dict[str, torch.Tensor] | None = None,
    group: Group | None = None,
    skip: Sequence[str] = DEFAULT_SKIP,
) -> PruneReport:
    """Zero a fraction ``sparsity`` of the weights of every linear layer in the blocks, in place.

    Args:
        model: A model with a list of transformer blocks (GPT, Llama, BERT, ...).
        method: ``"magnitude"`` ($|W|$) or ``"wanda"`` ($|W|\\,\\lVert X\\rVert_2$).
        sparsity: Fraction of weights to zero, in ``[0, 1)``; ``1 - n/m`` for ``"n:m"``.
        structure: ``"unstructured"`` or ``"n:m"`` (e.g. ``"2:4"``).
        calibration: Wanda's calibration batches (``(B, T)`` ids). As in the paper's code the
            blocks are pruned one after another, each block's input norms measured on the
            output of the blocks already pruned.
        input_norms: Precomputed ``{layer name: ||X_j||}`` (:func:`collect_input_norms` on the
            dense model: one pass, reusable across sparsities) instead of ``calibration``.
        group: Comparison group of unstructured pruning, ``"row"`` or ``"layer"``; default
            the paper's: ``"layer"`` for magnitude, ``"row"`` (per output) for Wanda.
        skip: ``fnmatch`` patterns of block-relative module names left dense.

    Returns:
        A :class:`PruneReport` with the sparsity reached in every layer.
    """
    _check_sparsity(sparsity)
    nm = _parse_structure(structure, sparsity)
    if method not in ("magnitude", "wanda"):
        raise ConfigError(f"method must be 'magnitude' or 'wanda', got {method!r}")
    if method == "wanda" and (calibration is None) == (input_norms is None):
        raise ConfigError("Wanda needs exactly one of calibration batches or input_norms")
    if method == "magnitude" and (calibration is not None or input_norms is not None):
        raise ConfigError("magnitude pruning reads no activations: drop calibration/input_norms")
    group = group or ("layer" if method == "magnitude" else "row")
    report = PruneReport(method, structure, sparsity)

    def prune(name: str, linear: nn.Linear, norms: torch.Tensor | None) -> None:
        w = linear.weight.float()  # (out, in)
        scores = magnitude_scores(w) if norms is None else wanda_scores(w, norms.to(w.device))
        keep = unstructured_mask(scores, sparsity, group) if nm is None else nm_mask(scores, *nm)
        linear.weight.mul_(keep.to(linear.weight.dtype))
        report.layers[name] = (int((linear.weight == 0).sum()), linear.weight.numel())

    linears = block_linears(model, skip)
    if method == "magnitude" or input_norms is not None:
        for name, linear in linears.items():
            norms = None if input_norms is None else input_norms.get(name)
            if method == "wanda" and norms is None:
                raise ConfigError(f"input_norms has no entry for layer {name!r}")
            prune(name, linear, norms)
        return report
    assert calibration is not None
    prefix, blocks = transformer_blocks(model)
    with eval_mode(model):
        inputs = _first_block_inputs(model, blocks[0], calibration)
        for i, block in enumerate(blocks):
            mine = {n: lin for n, lin in linears.items() if n.startswith(f"{prefix}.{i}.")}
            sums, handles = _norm_hooks(mine)
            for args, kwargs in inputs:  # measure this block's inputs, then prune it
                block(*args, **kwargs)
            for handle in handles:
                handle.remove()
            for name, linear in mine.items():
                prune(name, linear, sums[name].sqrt())
            inputs = [((block(*a, **k), *a[1:]), k) for a, k in inputs]  # the pruned block's out
    return report


# ---------------------------------------------------------------------------------------------
# attention heads
def attention_layers(model: nn.Module) -> list[Attention]:
    """The model's attention modules, in order."""
    return [m for m in model.modules() if isinstance(m, Attention)]


def head_importance(
    model: nn.Module,
    score: Literal["weight_norm", "gradient"] = "weight_norm",
    calibration: Iterable[torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """One importance per query head ``(n_heads,)`` for every attention layer.

    ``"weight_norm"``: the L2 norm of the head's columns of the output projection
    $W_O[:, hD:(h+1)D]$. ``"gradient"`` (Michel et al. 2019): gates $\\xi_h = 1$ on each head's
    output; $I_h = \\sum_x |\\partial L(x) / \\partial \\xi_h|$ over the calibration sequences
    ``x`` (``L`` the mean next-token loss of one sequence), normalised to unit L2 norm per layer.
    """
    layers = attention_layers(model)
    if score == "weight_norm":
        return [
            a.o_proj.weight.detach().float().reshape(-1, a.n_heads, a.d_head).norm(dim=(0, 2))
            for a in layers  # (d_model, H, D) -> (H,)
        ]
    if score != "gradient":
        raise ConfigError(f"score must be 'weight_norm' or 'gradient', got {score!r}")
    if calibration is None:
        raise ConfigError("gradient head importance needs calibration batches")
    importance = [torch.zeros(a.n_heads) for a in layers]
    gates: list[torch.Tensor] = []

    def gate(attn: Attention) -> Any:
        def pre(module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor]:
            y = args[0]  # (B, T, H * D)
            xi = torch.ones(y.shape[0], attn.n_heads, device=y.device, requires_grad=True)
            gates.append(xi)
            heads = y.unflatten(-1, (attn.n_heads, attn.d_head))  # (B, T, H, D)
            return ((heads * xi[:, None, :, None].to(y.dtype)).flatten(-2),)  # (B, T, H * D)

        return pre

    handles = [a.o_proj.register_forward_pre_hook(gate(a)) for a in layers]
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in frozen:
            p.requires_grad_(False)
        with eval_mode(model), torch.enable_grad():
            for ids in calibration:
                gates.clear()
                logits = model(ids[:, :-1]).float()  # (B, T - 1, V)
                nll = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
                nll.mean(dim=1).sum().backward()  # sum over sequences of L(x): per-x gradients
                for total, xi in zip(importance, gates, strict=True):
                    assert xi.grad is not None
                    total += xi.grad.abs().sum(0).cpu()  # sum over x of |dL(x)/dxi_h|
    finally:
        for handle in handles:
            handle.remove()
        for p, requires_grad in frozen:
            p.requires_grad_(requires_grad)
    return [i / i.norm().clamp_min(1e-12) for i in importance]


def _rows(heads: Sequence[int], d_head: int, offset: int = 0) -> torch.Tensor:
    """Row indices of ``heads`` in a projection that stacks heads of ``d_head`` rows."""
    return torch.tensor([offset + h * d_head + i for h in heads for i in range(d_head)])


def _sliced(linear: nn.Linear, rows: torch.Tensor | None, cols: torch.Tensor | None) -> nn.Linear:
    """A new ``nn.Linear`` holding the given rows (outputs) and columns (inputs) of ``linear``."""
    w = linear.weight.detach()  # (out, in)
    w = w if rows is None else w[rows]
    w = w if cols is None else w[:, cols]
    out = nn.Linear(w.shape[1], w.shape[0], bias=linear.bias is not None)
    out = out.to(device=w.device, dtype=w.dtype)
    with torch.no_grad():
        out.weight.copy_(w)
        if linear.bias is not None and out.bias is not None:
            out.bias.copy_(linear.bias if rows is None else linear.bias[rows])
    return out


# --8<-- [start:remove_heads]
@torch.no_grad()
def remove_heads(attn: Attention, heads: Iterable[int]) -> None:
    """Remove query heads ``heads`` from ``attn`` in place: shrink q/k/v/o and ``n_heads``.

    A key/value head goes when every query head of its group goes. Grouped-query attention
    shares key/value head ``g`` with query heads ``g * n_rep ... (g + 1) * n_rep - 1``, the
    same number for every group, so every group that stays must keep as many query heads.
    """
    H, G, D = attn.n_heads, attn.n_kv_heads, attn.d_head
    if attn.q_norm is not None:
        raise ConfigError("q_norm/k_norm normalise all heads together: heads cannot be removed")
    kept, kept_kv = kept_heads(H, G, heads)  # ascending: groups stay contiguous
    q_rows, kv_rows = _rows(kept, D), _rows(kept_kv, D)
    if attn.fused_qkv:  # [q (H D), k (G D), v (G D)] stacked
        rows = torch.cat([q_rows, _rows(kept_kv, D, H * D), _rows(kept_kv, D, (H + G) * D)])
        attn.qkv_proj = _sliced(attn.qkv_proj, rows, None)
    else:
        attn.q_proj = _sliced(attn.q_proj, q_rows, None)
        attn.k_proj = _sliced(attn.k_proj, kv_rows, None)
        attn.v_proj = _sliced(attn.v_proj, kv_rows, None)
    attn.o_proj = _sliced(attn.o_proj, None, q_rows)  # the heads' columns of W_O
    attn.n_heads, attn.n_kv_heads = len(kept), len(kept_kv)


# --8<-- [end:remove_heads]


@dataclass
class HeadPruneReport:
    """What :func:`prune_heads` removed: original head indices, per attention layer."""

    heads_before: list[int]
    removed: list[list[int]]
    kv_removed: list[list[int]]

    @property
    def fraction(self) -> float:
        """Fraction of all query heads removed."""
        return sum(len(r) for r in self.removed) / sum(self.heads_before)


def _units(attn: Attention, importance: torch.Tensor, unit: str) -> list[tuple[float, list[int]]]:
    """A layer's units of removal and their scores (the sum of their heads' importance).

    ``"kv_group"``: each KV group (its ``n_rep`` query heads). ``"query"``: unit ``r`` takes the
    ``r``-th least important query head of every group (one query head per group; at least one
    must stay, so ``n_rep - 1`` units). With multi-head attention both are single heads.
    """
    H, G = attn.n_heads, attn.n_kv_heads
    n_rep = H // G
    if unit == "kv_group" or n_rep == 1:
        groups = [list(range(g * n_rep, (g + 1) * n_rep)) for g in range(G)]
        return [(float(importance[heads].sum()), heads) for heads in groups]
    order = importance.reshape(G, n_rep).argsort(dim=1, stable=True)  # (G, n_rep) ascending
    units = [[g * n_rep + int(order[g, r]) for g in range(G)] for r in range(n_rep - 1)]
    return [(float(importance[heads].sum()), heads) for heads in units]


def _record(config: Any, attn: Attention, heads: list[int]) -> None:
    """Add ``heads`` (indices among ``attn``'s current heads) to ``config.pruned_heads`` in
    original indices, so the pruned model saves and loads (``transformers`` keeps the same
    record; earlier prunings are counted in)."""
    layer, before = attn.layer_idx, config.pruned_heads.get(attn.layer_idx, [])
    current = [h for h in range(config.n_heads) if h not in before]  # original index of each
    if len(current) != attn.n_heads:
        raise ConfigError(
            f"layer {layer} has {attn.n_heads} heads but its config says {len(current)}: heads "
            "were removed without prune_heads (remove_heads does not update the config)"
        )
    config.pruned_heads = {
        **config.pruned_heads,
        layer: sorted([*before, *(current[h] for h in heads)]),
    }


def prune_heads(
    model: nn.Module,
    amount: int | float,
    *,
    unit: Literal["kv_group", "query"] = "kv_group",
    score: Literal["weight_norm", "gradient"] = "weight_norm",
    importance: list[torch.Tensor] | None = None,
    calibration: Iterable[torch.Tensor] | None = None,
) -> HeadPruneReport:
    """Remove the least important attention units over the whole model, in place.

    Units (:func:`_units`) are ranked over all layers by the summed importance of their heads,
    so layers may lose different numbers of heads; every layer keeps at least one unit.
    ``unit="kv_group"`` also removes key/value heads (a smaller KV cache: the model's
    :class:`~groundwork.nn.KVCache` holds the most heads any layer kept). ``unit="query"`` keeps
    every key/value head. A model whose config has ``pruned_heads`` (GPT, Llama, Mixtral) gets
    the removed heads recorded there in original indices, so it saves and loads as a run
    (:func:`groundwork.runs.write_run`, :func:`groundwork.runs.load_run`) with its smaller
    layers; ``transformers`` and GGUF have one head count for every layer, so a pruned model
    does not export to them.

    Args:
        model: A model with :class:`~groundwork.nn.Attention` layers.
        amount: Query heads to remove: a count (a whole number of units), or a fraction in
            ``[0, 1)`` of all query heads (rounded down to whole units).
        unit: ``"kv_group"`` or ``"query"``; both are single heads with multi-head attention.
        score: Importance when ``importance`` is not given (:func:`head_importance`).
        importance: Precomputed ``(n_heads,)`` per layer.
        calibration: Batches for ``score="gradient"``.
    """
    layers = attention_layers(model)
    if not layers:
        raise ConfigError(f"{type(model).__name__} has no attention layers to prune")
    if unit not in ("kv_group", "query"):
        raise ConfigError(f"unit must be 'kv_group' or 'query', got {unit!r}")
    n_heads = sum(a.n_heads for a in layers)
    if isinstance(amount, float):
        if not 0.0 <= amount < 1.0:
            raise ConfigError(f"a fraction of heads to prune must be in [0, 1), got {amount!r}")
        wanted, exact = math.floor(amount * n_heads + 1e-9), False
    else:
        wanted, exact = amount, True
    if not 0 <= wanted < n_heads:
        raise ConfigError(f"cannot prune {wanted} heads: the model has {n_heads}, keep at least 1")
    importance = importance or head_importance(model, score, calibration)
    per_layer = [_units(a, importance[i], unit) for i, a in enumerate(layers)]
    room = [
        len(u) - (unit == "kv_group" or a.n_heads == a.n_kv_heads)
        for a, u in zip(layers, per_layer, strict=True)
    ]  # units a layer may lose: one always stays
    ranked = sorted((s, i, heads) for i, units in enumerate(per_layer) for s, heads in units)
    chosen: list[list[int]] = [[] for _ in layers]
    done = 0
    for _, i, heads in ranked:
        if room[i] > 0 and done + len(heads) <= wanted:
            chosen[i] += heads
            room[i] -= 1
            done += len(heads)
    if exact and done != wanted:
        raise ConfigError(
            f"cannot prune exactly {wanted} heads in {unit} units (one must stay in each "
            f"layer); {done} can go: ask for a whole number of units"
        )
    report = HeadPruneReport([a.n_heads for a in layers], [], [])
    config = getattr(model, "config", None)
    for attn, heads in zip(layers, chosen, strict=True):
        kept_kv = kept_heads(attn.n_heads, attn.n_kv_heads, heads)[1]
        gone_kv = [g for g in range(attn.n_kv_heads) if g not in kept_kv]
        if heads and hasattr(config, "pruned_heads"):
            _record(config, attn, heads)
        remove_heads(attn, heads)
        report.removed.append(sorted(heads))
        report.kv_removed.append(gone_kv)
    return report
