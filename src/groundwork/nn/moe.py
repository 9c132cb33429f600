r"""A sparse mixture-of-experts (MoE) feed-forward layer: a router sends each token to ``top_k``
of ``n_experts`` MLPs and the layer adds their outputs, weighted by the router.

* Sparsely-gated MoE and noisy top-k gating: Shazeer et al. 2017, "Outrageously Large Neural
  Networks: The Sparsely-Gated Mixture-of-Experts Layer".
* Expert capacity: GShard (Lepikhin et al. 2020); top-1 routing, the capacity factor and the
  load-balancing loss: Switch Transformer (Fedus et al. 2021).
* Router z-loss: ST-MoE (Zoph et al. 2022, "Designing Effective Sparse Expert Models").
* Softmax over all experts, top-2, renormalised weights, SwiGLU experts: Mixtral (Jiang et al.
  2024, "Mixtral of Experts").
* Shared experts applied to every token: DeepSeekMoE (Dai et al. 2024).

**Routers** (``MoEConfig.router``), on logits :math:`z = x W_r^\top` of shape ``(N, E)``:

* ``"softmax_topk"`` (Mixtral): :math:`p = \mathrm{softmax}(z)` over all experts, keep the
  ``top_k`` largest and renormalise them to sum to 1 (Hugging Face's ``norm_topk_prob=True``).
* ``"switch"`` (Switch Transformer): the ``top_k`` largest of :math:`p`, *not* renormalised
  (top-1 in the paper; with ``top_k > 1`` this is ``norm_topk_prob=False``).
* ``"noisy_topk"`` (Shazeer et al. 2017): in training :math:`z + \mathrm{softplus}(x
  W_n^\top) \odot \epsilon`, :math:`\epsilon \sim N(0, 1)`; keep the ``top_k`` largest logits
  and softmax over them only. Without noise this equals ``"softmax_topk"``.

**Dispatch and combine by sorting.** The ``N * top_k`` (token, slot) assignments are sorted by
expert id (a stable sort, so each expert's assignments stay in token order); ``bincount`` gives
how many each expert got, so every expert's tokens are one contiguous slice of the gathered
inputs. Each expert runs once on its slice (a loop over experts, never over tokens; where
torch has ``F.grouped_mm`` the same slices go through one grouped matmul per weight) and
``index_add_`` adds the weighted outputs back at their tokens. With a capacity, an expert keeps
the first ``capacity`` assignments of its slice, i.e. the earliest tokens of the flattened
``(B*T)`` order; a dropped assignment contributes 0 (the surrounding residual connection carries
the token on unchanged, as in Switch).

**Weight layout.** Expert weights are stacked 3-D parameters in ``nn.Linear``'s ``(out, in)``
convention, so ``up_proj[e]`` is exactly the ``weight`` of expert ``e``'s ``nn.Linear``:
``gate_proj`` and ``up_proj`` ``(E, d_ff, d_model)``, ``down_proj`` ``(E, d_model, d_ff)``
(``gate_proj`` only for SwiGLU). Per-expert checkpoints (Mixtral's ``w1``/``w3``/``w2``) convert
with ``torch.stack``; Hugging Face's fused ``gate_up_proj`` ``(E, 2 d_ff, d_model)`` is
``torch.cat([gate_proj, up_proj], dim=1)``. Chapter 16 (Mixture of experts).
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from groundwork.checks import in_range, non_negative_int, positive_int, positive_number
from groundwork.errors import ConfigError

__all__ = [
    "MoE",
    "MoEConfig",
    "MoEExperts",
    "RouterOutput",
    "collect_router_outputs",
    "load_balancing_loss",
    "moe_reference",
    "router_z_loss",
]

Activation = Literal["swiglu", "gelu", "gelu_tanh", "relu"]
Router = Literal["softmax_topk", "noisy_topk", "switch"]
_ACTIVATIONS = ("swiglu", "gelu", "gelu_tanh", "relu")
_ROUTERS = ("softmax_topk", "noisy_topk", "switch")
HAS_GROUPED_MM = hasattr(F, "grouped_mm")


@dataclass(kw_only=True)
class MoEConfig:
    """Shape and routing of a :class:`MoE` layer."""

    d_model: int
    """Input and output size."""
    d_ff: int
    """Hidden size of each expert (and of each shared expert)."""
    n_experts: int = 8
    """Number of routed experts ``E``."""
    top_k: int = 2
    """Experts per token, ``1 <= top_k <= n_experts``."""
    activation: Activation = "swiglu"
    """``"swiglu"`` (Mixtral), ``"gelu"`` (exact erf GELU), ``"gelu_tanh"`` (GPT-2's tanh
    approximation) or ``"relu"`` (Switch)."""
    router: Router = "softmax_topk"
    """How router logits become expert ids and weights (see the module docstring)."""
    capacity_factor: float | None = None
    """``None``: dropless. Else each expert takes at most
    ``ceil(capacity_factor * tokens * top_k / n_experts)`` assignments per forward."""
    eval_capacity_factor: float | None = None
    """The capacity factor in eval mode (Switch trains with 1.25 and evaluates with 2.0);
    ``None``: ``capacity_factor``'s. Only used when ``capacity_factor`` is set."""
    n_shared_experts: int = 0
    """DeepSeekMoE shared experts, applied to every token and added to the routed output."""
    bias: bool = False
    """Whether the experts' linear maps have biases (the router never has one)."""
    router_jitter: float = 0.0
    """Training only: multiply the router's input by ``U(1 - j, 1 + j)`` (Switch); the experts
    see the clean input."""

    def __post_init__(self) -> None:
        positive_int("d_model", self.d_model)
        positive_int("d_ff", self.d_ff)
        positive_int("n_experts", self.n_experts)
        positive_int("top_k", self.top_k)
        if self.top_k > self.n_experts:
            raise ConfigError(
                f"top_k ({self.top_k}) > n_experts ({self.n_experts}): a token cannot pick more "
                "experts than there are; lower top_k or add experts"
            )
        if self.activation not in _ACTIVATIONS:
            raise ConfigError(f"activation must be one of {_ACTIVATIONS}, got {self.activation!r}")
        if self.router not in _ROUTERS:
            raise ConfigError(f"router must be one of {_ROUTERS}, got {self.router!r}")
        if self.capacity_factor is not None:
            positive_number("capacity_factor", self.capacity_factor)
        if self.eval_capacity_factor is not None:
            positive_number("eval_capacity_factor", self.eval_capacity_factor)
        non_negative_int("n_shared_experts", self.n_shared_experts)
        in_range("router_jitter", self.router_jitter, 0.0, 1.0, high_inclusive=False)

    def capacity(self, n_tokens: int, *, training: bool = True) -> int | None:
        """Most assignments an expert takes out of ``n_tokens`` tokens (with the eval capacity
        factor when not ``training``); ``None`` when dropless."""
        if self.capacity_factor is None:
            return None
        factor = self.capacity_factor
        if not training and self.eval_capacity_factor is not None:
            factor = self.eval_capacity_factor
        return math.ceil(factor * n_tokens * self.top_k / self.n_experts)


class RouterOutput(NamedTuple):
    """What the router decided in one forward (``N`` = tokens, ``E`` = experts, ``k`` = top_k)."""

    logits: torch.Tensor
    """``(N, E)`` float32 router logits :math:`x W_r^\\top`, without noise (for the z-loss)."""
    probs: torch.Tensor
    """``(N, E)`` softmax of the logits the routing used (noisy ones for ``noisy_topk`` in
    training), for the load-balancing loss."""
    expert_ids: torch.Tensor
    """``(N, k)`` chosen experts, best first."""
    weights: torch.Tensor
    """``(N, k)`` float32 combine weights of the chosen experts."""
    kept: torch.Tensor
    """``(N, k)`` bool: False where the assignment was dropped for lack of capacity."""
    tokens_per_expert: torch.Tensor
    """``(E,)`` assignments routed to each expert, before dropping."""
    dropped: int
    """How many assignments were dropped (0 when dropless)."""


def _stacked(n: int, out: int, inp: int, *, bias: bool = False) -> nn.Parameter:
    """``n`` stacked ``nn.Linear(inp, out)`` weights ``(n, out, inp)`` (or biases ``(n, out)``),
    initialised as ``nn.Linear`` does: uniform in :math:`\\pm 1/\\sqrt{inp}`."""
    bound = 1 / math.sqrt(inp)
    return nn.Parameter(torch.empty((n, out) if bias else (n, out, inp)).uniform_(-bound, bound))


def _activate(h: torch.Tensor, activation: Activation) -> torch.Tensor:
    """The non-gated activations: exact GELU, GPT-2's tanh GELU, or ReLU."""
    if activation == "gelu":
        return F.gelu(h)
    if activation == "gelu_tanh":
        return F.gelu(h, approximate="tanh")
    return F.relu(h)


class MoEExperts(nn.Module):
    """``n`` MLPs of one shape with their weights stacked along a leading expert dimension.

    Args:
        n: Number of experts.
        d_model: Input and output size.
        d_ff: Hidden size of each expert.
        activation: ``"swiglu"``: ``down(silu(gate(x)) * up(x))``; ``"gelu"``,
            ``"gelu_tanh"`` or ``"relu"``: ``down(act(up(x)))``.
        bias: Whether every linear map has a bias (``up_bias`` ``(n, d_ff)``, ...).
    """

    def __init__(
        self, n: int, d_model: int, d_ff: int, *, activation: Activation, bias: bool = False
    ) -> None:
        super().__init__()
        self.activation = activation
        self.use_grouped_mm = True  # set False to always run the loop over experts
        self.up_proj = _stacked(n, d_ff, d_model)  # (n, d_ff, d_model)
        self.down_proj = _stacked(n, d_model, d_ff)  # (n, d_model, d_ff)
        swiglu = activation == "swiglu"
        self.gate_proj = _stacked(n, d_ff, d_model) if swiglu else None  # (n, d_ff, d_model)
        self.up_bias = _stacked(n, d_ff, d_model, bias=True) if bias else None  # (n, d_ff)
        self.down_bias = _stacked(n, d_model, d_ff, bias=True) if bias else None  # (n, d_model)
        self.gate_bias = _stacked(n, d_ff, d_model, bias=True) if bias and swiglu else None

    def _linear(
        self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, e: int
    ) -> torch.Tensor:
        return F.linear(x, w[e], None if b is None else b[e])

    # --8<-- [start:expert]
    def forward(self, x: torch.Tensor, e: int) -> torch.Tensor:
        """Expert ``e`` on ``x`` ``(n_e, d_model)``; returns ``(n_e, d_model)``."""
        h = self._linear(x, self.up_proj, self.up_bias, e)  # (n_e, d_ff)
        if self.gate_proj is not None:  # SwiGLU
            h = F.silu(self._linear(x, self.gate_proj, self.gate_bias, e)) * h
        else:
            h = _activate(h, self.activation)
        return self._linear(h, self.down_proj, self.down_bias, e)  # (n_e, d_model)

    # --8<-- [end:expert]

    # --8<-- [start:grouped]
    def grouped(self, x: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """Every expert on its slice: ``x`` ``(M, d_model)`` holds ``counts[0]`` rows for expert 0,
        then ``counts[1]`` for expert 1, ...; returns ``(M, d_model)``.

        One loop over experts. Where torch has ``F.grouped_mm`` (2.10+), no expert is empty and
        there are no biases, the same products run as one grouped matmul per weight instead
        (tested equal to the loop); the loop is the definition.
        """
        if self.use_grouped_mm and HAS_GROUPED_MM and self.up_bias is None and 0 not in counts:
            return self._grouped_mm(x, counts)
        ys, start = [], 0
        for e, n in enumerate(counts):
            if n:
                ys.append(self(x[start : start + n], e))  # (n, d)
            start += n
        return torch.cat(ys) if ys else x

    # --8<-- [end:grouped]

    def _grouped_mm(self, x: torch.Tensor, counts: list[int]) -> torch.Tensor:
        offs = torch.tensor(counts, device=x.device).cumsum(0).to(torch.int32)  # slice ends

        def linear(h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:  # w: (E, out, in)
            return F.grouped_mm(h, w.transpose(-2, -1), offs=offs)

        h = linear(x, self.up_proj)  # (M, d_ff)
        if self.gate_proj is not None:
            h = F.silu(linear(x, self.gate_proj)) * h
        else:
            h = _activate(h, self.activation)
        return linear(h, self.down_proj)  # (M, d_model)


class MoE(nn.Module):
    """Sparse mixture-of-experts feed-forward layer, dispatching tokens to experts by sorting.

    Parameters: ``router.weight`` ``(E, d_model)`` (Hugging Face Mixtral's ``gate.weight``,
    Switch's ``router.classifier.weight``); ``noise.weight`` ``(E, d_model)`` for
    ``noisy_topk`` (zero at initialisation, as Shazeer et al.); ``experts``
    (:class:`MoEExperts`, ``E`` of them); ``shared_experts`` (``n_shared_experts`` of them, or
    ``None``). A DeepSeek shared MLP of width ``n_s * d_ff`` is the sum of ``n_s`` experts of
    width ``d_ff``: split its weights along the hidden dimension.

    Args:
        config: The layer's shape and routing.
    """

    def __init__(self, config: MoEConfig) -> None:
        super().__init__()
        self.config = c = config
        self.router = nn.Linear(c.d_model, c.n_experts, bias=False)
        self.noise: nn.Linear | None = None
        if c.router == "noisy_topk":
            self.noise = nn.Linear(c.d_model, c.n_experts, bias=False)
            nn.init.zeros_(self.noise.weight)
        self.experts = self.build_experts(c.n_experts)
        self.shared_experts: MoEExperts | None = None
        if c.n_shared_experts:
            self.shared_experts = self.build_experts(c.n_shared_experts)

    def build_experts(self, n: int) -> MoEExperts:
        """``n`` experts of the configured width and activation (a subclass may store them
        otherwise, e.g. Mixtral's fused layout)."""
        c = self.config
        return MoEExperts(n, c.d_model, c.d_ff, activation=c.activation, bias=c.bias)

    # --8<-- [start:route]
    def route(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Route tokens ``x`` ``(N, d_model)``.

        Returns:
            ``logits`` ``(N, E)`` (clean, float32), ``probs`` ``(N, E)``, ``expert_ids``
            ``(N, k)`` and ``weights`` ``(N, k)``, as in :class:`RouterOutput`.
        """
        c = self.config
        if self.training and c.router_jitter > 0:
            x = x * torch.empty_like(x).uniform_(1.0 - c.router_jitter, 1.0 + c.router_jitter)
        logits = self.router(x).float()  # (N, E); routing in float32 ("selective precision")
        if c.router == "noisy_topk":
            noisy = logits
            if self.training and self.noise is not None:
                std = F.softplus(self.noise(x).float())  # (N, E), learned per token and expert
                noisy = logits + torch.randn_like(logits) * std
            top, expert_ids = noisy.topk(c.top_k, dim=-1)  # (N, k)
            return logits, noisy.softmax(-1), expert_ids, top.softmax(-1)
        probs = logits.softmax(-1)  # (N, E)
        weights, expert_ids = probs.topk(c.top_k, dim=-1)  # (N, k)
        if c.router == "softmax_topk":
            weights = weights / weights.sum(-1, keepdim=True)  # renormalise the k weights
        return logits, probs, expert_ids, weights

    # --8<-- [end:route]

    # --8<-- [start:forward]
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, RouterOutput]:
        """Map ``x`` ``(..., d_model)`` (usually ``(B, T, d_model)``) to the same shape.

        Returns:
            The output, and the :class:`RouterOutput` of the ``N`` flattened tokens (feed it to
            :func:`load_balancing_loss` and :func:`router_z_loss`).

        Raises:
            ConfigError: the last dimension of ``x`` is not ``d_model``.
        """
        c = self.config
        if x.dim() < 2 or x.shape[-1] != c.d_model:
            raise ConfigError(
                f"MoE input must have shape (..., d_model={c.d_model}), got {tuple(x.shape)}; "
                "pass hidden states of the width the layer was built with"
            )
        flat = x.reshape(-1, c.d_model)  # (N, d)
        n_tokens, k = flat.shape[0], c.top_k
        logits, probs, expert_ids, weights = self.route(flat)

        ids = expert_ids.reshape(-1)  # (N k,) assignment a = token * k + slot
        order = torch.argsort(ids, stable=True)  # (N k,) grouped by expert, token order within
        counts = torch.bincount(ids, minlength=c.n_experts)  # (E,)
        kept_flat = torch.ones_like(ids, dtype=torch.bool)  # (N k,)
        kept_counts = counts
        capacity = c.capacity(n_tokens, training=self.training)
        if capacity is not None:
            starts = counts.cumsum(0) - counts  # (E,) where each expert's slice begins
            rank = torch.arange(ids.numel(), device=ids.device) - starts[ids[order]]  # (N k,)
            keep = rank < capacity  # the first `capacity` of each slice survive
            kept_flat[order] = keep
            order = order[keep]  # (M,)
            kept_counts = counts.clamp(max=capacity)

        token = order // k  # (M,) the token of each kept assignment, grouped by expert
        xs = flat[token]  # (M, d) gathered inputs
        y = self.experts.grouped(xs, kept_counts.tolist())  # (M, d)
        y = y * weights.reshape(-1)[order].unsqueeze(-1).to(y.dtype)  # (M, d)
        out = torch.zeros_like(flat).index_add_(0, token, y)  # (N, d) combine
        out = self._add_shared(flat, out)

        dropped = int(ids.numel() - order.numel())
        kept = kept_flat.reshape(n_tokens, k)
        aux = RouterOutput(logits, probs, expert_ids, weights, kept, counts, dropped)
        return out.reshape(x.shape), aux

    # --8<-- [end:forward]

    def _add_shared(self, flat: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        if self.shared_experts is not None:
            for s in range(self.config.n_shared_experts):
                out = out + self.shared_experts(flat, s)  # (N, d), every token
        return out


def collect_router_outputs(model: nn.Module) -> list[RouterOutput]:
    """The :class:`RouterOutput` of each MoE layer of ``model`` from its last forward, in module
    order: the ``router_output`` that a model's MoE blocks keep (None before any forward)."""
    outputs = (getattr(m, "router_output", None) for m in model.modules())
    return [o for o in outputs if isinstance(o, RouterOutput)]


# --8<-- [start:losses]
def load_balancing_loss(
    probs: torch.Tensor, expert_ids: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    r"""Switch Transformer's auxiliary loss :math:`E \sum_i f_i P_i`, as Hugging Face computes it.

    :math:`f_i` is the number of assignments routed to expert :math:`i` divided by the number of
    tokens (so :math:`\sum_i f_i = k`) and :math:`P_i` the mean router probability of expert
    :math:`i`. Perfectly balanced routing gives :math:`k`; the minimum of Switch (``k = 1``) is 1.
    Equal to ``transformers``' Mixtral ``load_balancing_loss_func`` for one layer.

    Args:
        probs: ``(N, E)`` router probabilities (:attr:`RouterOutput.probs`).
        expert_ids: ``(N, k)`` chosen experts (:attr:`RouterOutput.expert_ids`).
        mask: Optional ``(N,)`` (or ``(B, T)``) 1 for real tokens, 0 for padding.
    """
    n_tokens, n_experts = probs.shape
    k = expert_ids.shape[-1]
    w = torch.ones(n_tokens, device=probs.device) if mask is None else mask.reshape(-1).float()
    total = w.sum()
    routed = torch.zeros(n_experts, device=probs.device)  # (E,)
    routed = routed.index_add_(0, expert_ids.reshape(-1), w.repeat_interleave(k))
    f = routed / total  # (E,)
    p = (probs.float() * w.unsqueeze(-1)).sum(0) / total  # (E,)
    return n_experts * (f * p).sum()


def router_aux_loss(
    router_outputs: Sequence[RouterOutput],
    attention_mask: torch.Tensor | None = None,
    *,
    per_layer: bool = False,
) -> torch.Tensor:
    """The load-balancing loss of one forward of a model with several MoE layers.

    By default the tokens of every layer are pooled, as ``transformers``'
    ``load_balancing_loss_func`` does (``MixtralForCausalLM`` multiplies it by
    ``router_aux_loss_coef`` and adds it to its loss). Pooled, expert ``i`` of one layer and
    expert ``i`` of another count as one expert, so opposite imbalances in two layers cancel;
    ``per_layer=True`` takes each layer's loss separately and averages them (Switch adds each
    layer's; the mean keeps the coefficient's meaning at any depth).

    Args:
        router_outputs: One :class:`RouterOutput` per MoE layer, from the same forward.
        attention_mask: Optional ``(B, T)`` 1 for tokens, 0 for padding (of that forward).
        per_layer: Balance each layer on its own (the mean of the layers' losses).

    Raises:
        ConfigError: no router outputs (the model has no MoE layer, or has not run).
    """
    if not router_outputs:
        raise ConfigError("no router outputs: run a model with MoE layers forward first")
    if per_layer:
        losses = [
            load_balancing_loss(o.probs, o.expert_ids, attention_mask) for o in router_outputs
        ]
        return torch.stack(losses).mean()
    probs = torch.cat([o.probs for o in router_outputs])  # (L N, E)
    expert_ids = torch.cat([o.expert_ids for o in router_outputs])  # (L N, k)
    mask = None
    if attention_mask is not None:
        mask = attention_mask.reshape(-1).repeat(len(router_outputs))  # (L N,)
    return load_balancing_loss(probs, expert_ids, mask)


def router_z_loss(logits: torch.Tensor) -> torch.Tensor:
    r"""ST-MoE's router z-loss :math:`\frac1N \sum_t \left(\log \sum_i e^{z_{t,i}}\right)^2`,
    which keeps router logits small. ``logits``: ``(N, E)`` (any leading shape)."""
    return torch.logsumexp(logits.float(), dim=-1).square().mean()


# --8<-- [end:losses]


def moe_reference(layer: MoE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The MoE layer computed naively, to test :meth:`MoE.forward` against.

    The routing is ``layer.route`` (call it in eval mode, or with the same random state, when the
    router is random); then the capacity rule is applied by a plain loop over tokens, and every
    expert runs on every token, its output masked by the token's weight for it (0 when not
    chosen or dropped).

    Returns:
        The output ``(..., d_model)`` and ``kept`` ``(N, k)``.
    """
    c = layer.config
    flat = x.reshape(-1, c.d_model)  # (N, d)
    _, _, expert_ids, weights = layer.route(flat)
    capacity = c.capacity(flat.shape[0], training=layer.training)
    used = [0] * c.n_experts
    kept = torch.zeros(expert_ids.shape, dtype=torch.bool)
    for t, row in enumerate(expert_ids.tolist()):  # earlier tokens claim capacity first
        for s, e in enumerate(row):
            kept[t, s] = capacity is None or used[e] < capacity
            used[e] += 1
    kept = kept.to(expert_ids.device)
    gate = torch.zeros(flat.shape[0], c.n_experts, device=flat.device)  # (N, E)
    gate = gate.scatter_add(1, expert_ids, weights * kept)
    out = torch.zeros_like(flat)
    for e in range(c.n_experts):
        out = out + layer.experts(flat, e) * gate[:, e : e + 1].to(flat.dtype)
    return layer._add_shared(flat, out).reshape(x.shape), kept
