r"""MEMIT: Mass-Editing Memory in a Transformer, many facts spread over several MLP layers
(Meng, Sharma, Andonian, Belinkov & Bau 2022).

ROME (:mod:`groundwork.edit.rome`) writes one fact into one layer; applied to thousands of facts
one after another it degrades the model. MEMIT writes a *batch* of facts at once, and shares
the work among a range of layers :math:`\mathcal{R} = \{l_1 < \dots < l_L\}` (the middle-early
layers where causal tracing locates recall).

**Targets in the residual stream.** For each request :math:`i` a vector :math:`\delta_i` is
optimised exactly as ROME's :math:`\delta` (:func:`~groundwork.edit.rome.optimize_delta`: the
target's log-likelihood over context templates, the KL term on "{subject} is a", the decay and
the norm ball), but added to the *output of the whole block* :math:`l_L` (the residual stream
:math:`h^{l_L}`) at the subject's last token, not to one MLP's output. The target hidden
state is :math:`z_i = h_i^{l_L} + \delta_i`. Because the residual stream sums the outputs of
every layer below, the MLPs of all layers in :math:`\mathcal{R}` can contribute to reaching it.

**The batch update of one layer.** Read layer :math:`l`'s output projection as a memory
(:mod:`groundwork.edit.covariance`): the keys it must keep, summarised by their second moment,
and the new keys :math:`K = [k_1 \dots k_n] \in \mathbb{R}^{d_{ff} \times n}` whose values
must move by the residuals :math:`R = [r_1 \dots r_n] \in \mathbb{R}^{d \times n}`. The change
:math:`\Delta` minimises

.. math:: \lVert \Delta K - R \rVert_F^2 + \lambda \operatorname{tr}(\Delta C \Delta^\top),

the new associations' error plus the change to the old keys' values (:math:`N` old keys with
second moment :math:`C` contribute :math:`\lVert \Delta K_0 \rVert^2 = N
\operatorname{tr}(\Delta C \Delta^\top)`; :math:`\lambda` plays :math:`N`, how much the old
memories weigh, ``mom2_weight``). Setting the gradient to zero,
:math:`(\Delta K - R) K^\top + \lambda \Delta C = 0`, gives the normal equations

.. math:: \Delta\, (\lambda C + K K^\top) = R K^\top, \qquad
   \Delta = R K^\top (\lambda C + K K^\top)^{-1},

solved (not inverted) in float64 by :func:`memit_update`. With one key and
:math:`\lambda \to 0` it is ROME's rank-one update; for :math:`\lambda > 0` that update shrunk
by :math:`s/(1+s)`, :math:`s = k^\top (\lambda C)^{-1} k` (Sherman-Morrison), since the new key
now competes with the old ones instead of being a hard constraint.

**Spreading the residual over the layers.** The layers are edited from the lowest up. Before
layer :math:`l_j`, the keys :math:`K` at :math:`l_j` are recomputed (averaged over the context
templates, as ROME's :math:`k_*`) on the model the lower layers already changed, and the gap
still open at the top layer, :math:`z_i - h_i^{l_L}` (measured at the bare prompt), is divided
by the number of layers left, :math:`L - j + 1`, so each remaining layer closes an equal share
of it:

.. math:: R = \frac{Z - H^{l_L}}{L - j + 1}.

The last layer takes whatever is left. (:math:`\Delta` writes at the MLP's output; its effect
on :math:`h^{l_L}` passes through the layers in between, which is why the gap is measured again
each time instead of assumed.)

**The strength** :math:`\lambda`. The reference uses :math:`\lambda = 15{,}000` with GPT-J and
:math:`C` the mean second moment, as here; its scale relative to the keys is model-specific.
On SmolLM2-135M-Instruct (layers 3-7, :math:`C` over 100,000 tokens of ``wiki-sample``) a
quick sweep with four counterfactual edits (Eiffel Tower -> Rome, Colosseum -> London, capital
of Japan -> Berlin, Obama born in -> Canada) gave, for the new targets' probabilities:
:math:`\lambda` = 300 or 1,000: all four above 0.97; 2,000: 0.87-0.99; 5,000: 0.99, 0.99,
0.53, 0.14; 15,000: 0.92, 0.85 and two below 0.01; 50,000: none. The probabilities of six
unrelated facts (the Louvre, Big Ben, the capitals of France and Italy, ...) moved by at most
0.2 at every :math:`\lambda`, the largest moves upwards ("The capital of Italy is" -> " Rome":
0.38, then 0.56 at 1,000).
The default is 1,000; larger batches of edits may want it larger.

References:
    - Meng, Sharma, Andonian, Belinkov & Bau 2022, "Mass-Editing Memory in a Transformer"
      (arXiv 2210.07229), section 4 and Algorithm 1; reference code kmeng01/memit
      (``memit/memit_main.py``, ``memit/compute_z.py``, ``memit/compute_ks.py``).
    - Meng, Bau, Andonian & Belinkov 2022, "Locating and Editing Factual Associations in GPT"
      (ROME, arXiv 2202.05262).
    - Docs: chapter 19, "Model editing".
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from groundwork.checks import positive_number
from groundwork.edit.covariance import DEFAULT_N_TOKENS, cached_second_moments, pad_batch
from groundwork.edit.layers import check_layer, decoder_blocks, mlp_out_proj, n_layers
from groundwork.edit.request import EditRequest, as_requests
from groundwork.edit.rome import (
    ESSENCE_TEMPLATE,
    EditRecord,
    ValueFit,
    check_requests_fit,
    check_stats,
    check_value_options,
    compute_keys,
    default_layer,
    encode_in_template,
    optimize_delta,
    resolve_templates,
)
from groundwork.errors import ConfigError
from groundwork.runtime import eval_mode
from groundwork.tokenize.base import Tokenizer

TEMPLATE_STARTS = ("The", "Therefore", "Because", "I", "You")
"""The words MEMIT's context templates are sampled from (one template each)."""

DEFAULT_MOM2_WEIGHT = 1_000.0
"""Default :math:`\\lambda`, chosen on SmolLM2-135M (the reference: 15,000 for GPT-J); see the
module docstring."""


@dataclass(frozen=True)
class MemitConfig:
    """MEMIT's settings; the defaults are the reference's for GPT-J except ``mom2_weight``."""

    layers: tuple[int, ...] | None = None
    """The edited layers, increasing; ``None``: :func:`default_layers` (five layers)."""
    mom2_weight: float = DEFAULT_MOM2_WEIGHT
    """:math:`\\lambda`, the weight of the old keys' second moment against the new keys (the
    reference's ``mom2_update_weight``)."""
    steps: int = 25
    """Most Adam steps of the target optimisation (``v_num_grad_steps``)."""
    lr: float = 0.5
    """Adam's learning rate for :math:`\\delta_i`."""
    kl_factor: float = 0.0625
    """Weight of the KL term on the essence prompt."""
    weight_decay: float = 0.5
    """Weight of :math:`\\lVert\\delta\\rVert / \\lVert h\\rVert^2`."""
    clamp_norm_factor: float = 0.75
    """:math:`\\lVert\\delta_i\\rVert` at most this times the hidden state's norm (the residual
    stream is much larger than one MLP's output, hence less than ROME's 4)."""
    early_stop_loss: float = 5e-2
    """Stop a target's optimisation once its loss falls below this."""
    n_tokens: int = DEFAULT_N_TOKENS
    """Tokens of ``wiki-sample`` the key statistics average over (``mom2_n_samples``)."""
    template_lengths: tuple[tuple[int, int], ...] = ((10, 5),)
    """``(tokens, how many)`` of sampled context prefixes."""
    template_starts: tuple[str, ...] | None = TEMPLATE_STARTS
    """Words the prefixes start from; ``None``: the end-of-text token (as ROME)."""
    context_templates: tuple[str, ...] | None = None
    """Explicit templates (each with one ``{}``) instead of sampling them."""
    essence_template: str = ESSENCE_TEMPLATE
    """The KL term's prompt, ``{}`` standing for the subject."""
    seed: int = 0
    """Seed of the template sampler."""

    def __post_init__(self) -> None:
        check_value_options(self)
        positive_number("mom2_weight", self.mom2_weight)
        if self.layers is not None:
            layers = list(self.layers)
            if not layers or layers != sorted(set(layers)):
                raise ConfigError(
                    f"layers must be a non-empty increasing sequence, got {self.layers!r}"
                )


def default_layers(model: nn.Module, count: int = 5) -> tuple[int, ...]:
    """``count`` consecutive layers around ROME's :func:`~groundwork.edit.rome.default_layer`
    (two below it, two above; shifted to fit): 3-7 of SmolLM2-135M's 30. Prefer the range
    causal tracing points to on the model itself."""
    n = n_layers(model)
    count = min(count, n)
    first = min(max(default_layer(model) - count // 2, 0), n - count)
    return tuple(range(first, first + count))


def memit_update(
    K: torch.Tensor, R: torch.Tensor, C: torch.Tensor, mom2_weight: float
) -> torch.Tensor:
    """:math:`\\Delta = R K^\\top (\\lambda C + K K^\\top)^{-1}`, the minimiser of
    :math:`\\lVert \\Delta K - R\\rVert_F^2 + \\lambda \\operatorname{tr}(\\Delta C
    \\Delta^\\top)`, in float64.

    Args:
        K: ``(d_in, n)`` the new keys as columns.
        R: ``(d_out, n)`` how much each key's value must move.
        C: ``(d_in, d_in)`` the old keys' second moment.
        mom2_weight: :math:`\\lambda > 0`.

    Returns:
        ``(d_out, d_in)`` float64.

    Raises:
        ConfigError: shapes that do not fit or :math:`\\lambda \\le 0`.
    """
    positive_number("mom2_weight", mom2_weight)
    if K.dim() != 2 or R.dim() != 2 or K.shape[1] != R.shape[1]:
        raise ConfigError(
            f"K must be (d_in, n) and R (d_out, n), got {tuple(K.shape)} and {tuple(R.shape)}"
        )
    if C.shape != (K.shape[0], K.shape[0]):
        raise ConfigError(f"C must be ({K.shape[0]}, {K.shape[0]}), got {tuple(C.shape)}")
    # --8<-- [start:update]
    K64, R64, C64 = K.detach().double(), R.detach().double(), C.detach().double()
    A = mom2_weight * C64 + K64 @ K64.T  # (d_in, d_in), symmetric
    # Delta A = R K^T  <=>  A Delta^T = K R^T  (A symmetric)
    return torch.linalg.solve(A, K64 @ R64.T).T  # (d_out, d_in)
    # --8<-- [end:update]


@torch.no_grad()
def hidden_at_subject(
    model: nn.Module, tokenizer: Tokenizer, requests: Sequence[EditRequest], layer: int
) -> torch.Tensor:
    """Block ``layer``'s output (the residual stream) at each request's subject's last token
    of the bare prompt, ``(n, d_model)`` float32."""
    check_layer(model, layer)
    encoded = [encode_in_template(tokenizer, "{}", r.prompt, r.subject) for r in requests]
    device = next(model.parameters()).device
    ids, mask = pad_batch([e[0] for e in encoded], device)  # (n, T)
    captured: list[torch.Tensor] = []

    class _Stop(Exception):
        pass

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        captured.append(out.detach())
        raise _Stop

    handle = decoder_blocks(model)[layer].register_forward_hook(hook)
    try:
        with eval_mode(model):
            model(ids, attention_mask=mask)
    except _Stop:
        pass
    finally:
        handle.remove()
    at = torch.tensor([e[1] for e in encoded], device=device)
    return captured[0][torch.arange(len(requests), device=device), at].float()  # (n, d)


def apply_memit(
    model: nn.Module,
    tokenizer: Tokenizer,
    requests: EditRequest | Sequence[EditRequest],
    config: MemitConfig | None = None,
    *,
    stats: dict[int, torch.Tensor] | None = None,
) -> tuple[nn.Module, EditRecord]:
    """Write a batch of requests into the model with MEMIT, in place.

    Args:
        model: A decoder LM (Llama, SmolLM2, GPT).
        tokenizer: Its tokenizer.
        requests: One :class:`~groundwork.edit.request.EditRequest` or several.
        config: The settings (default :class:`MemitConfig`).
        stats: ``{layer: C}`` for every edited layer; default
            :func:`~groundwork.edit.covariance.cached_second_moments` (one pass for all
            layers, before any edit).

    Returns:
        The model (edited in place) and an :class:`~groundwork.edit.rome.EditRecord`.

    Raises:
        ConfigError: a layer out of range, a prompt and target longer than the context,
            missing or misshapen statistics, no requests.
    """
    config = config if config is not None else MemitConfig()
    requests = as_requests(requests)
    layers = list(config.layers) if config.layers is not None else list(default_layers(model))
    for layer in layers:
        check_layer(model, layer)
    check_requests_fit(model, tokenizer, requests)  # fail before the slow parts
    if stats is None:
        stats = cached_second_moments(model, tokenizer, layers, n_tokens=config.n_tokens)
    for layer in layers:
        if layer not in stats:
            raise ConfigError(f"stats has no second moment for layer {layer}")
        check_stats(stats[layer], mlp_out_proj(model, layer).in_features, layer)
    templates = resolve_templates(
        model,
        tokenizer,
        config.context_templates,
        config.template_lengths,
        starts=config.template_starts,
        seed=config.seed,
    )

    # 1. The target hidden state z_i at the top layer, for every request.
    top = layers[-1]
    block = decoder_blocks(model)[top]
    fits: list[ValueFit] = [
        optimize_delta(model, tokenizer, request, block, templates, config) for request in requests
    ]
    Z = torch.stack([fit.target for fit in fits])  # (n, d_model)

    # 2. Each layer, lowest first, closes its share of the remaining gap.
    record = EditRecord(fits=fits)
    # --8<-- [start:spread]
    for j, layer in enumerate(layers):
        K = compute_keys(model, tokenizer, requests, layer, templates)  # (n, d_ff)
        H = hidden_at_subject(model, tokenizer, requests, top)  # (n, d_model)
        R = (Z.to(H.device) - H) / (len(layers) - j)  # (n, d_model)
        C = stats[layer].to(K.device)
        delta = memit_update(K.T, R.T, C, config.mom2_weight)  # (d_model, d_ff)
        record.remember(model, layer)
        proj = mlp_out_proj(model, layer)
        with torch.no_grad():
            proj.weight += delta.to(proj.weight.device, proj.weight.dtype)
    # --8<-- [end:spread]
    record.finish(model)
    return model, record
