r"""ROME: Rank-One Model Editing, one fact written into one MLP layer in closed form (Meng,
Bau, Andonian & Belinkov 2022).

**An MLP as a key-value memory.** Block :math:`l`'s MLP computes
:math:`W_{out}\, \sigma(W_{in} x)`. Call its hidden activation
:math:`k = \sigma(W_{in} x) \in \mathbb{R}^{d_{ff}}` the *key* and :math:`v = W_{out} k \in
\mathbb{R}^{d}` the *value* it adds to the residual stream. Causal tracing
(:mod:`groundwork.edit.tracing`) finds that the MLPs of middle-early layers, at the *last token
of the subject*, decide which facts about the subject reach the end of the prompt: there the key
names the subject, and the value carries what the model knows about it. Rewriting a fact is
then rewriting one value of a linear memory :math:`W = W_{out}`.

**The constrained least squares.** Let the columns of :math:`K` be the keys the model meets on
ordinary text and :math:`V = W K` their values. :math:`W` solves
:math:`\min_W \lVert W K - V \rVert_F^2`, i.e. :math:`W K K^\top = V K^\top`. To insert a new
pair :math:`(k_*, v_*)` and disturb the old ones least, solve

.. math:: \min_{\hat W} \lVert \hat W K - V \rVert_F^2 \quad \text{s.t.} \quad \hat W k_* = v_*.

With a Lagrange multiplier :math:`\Lambda \in \mathbb{R}^{d}`, stationarity gives
:math:`\hat W K K^\top = V K^\top + \Lambda k_*^\top`; subtracting :math:`W K K^\top = V
K^\top` leaves :math:`(\hat W - W) K K^\top = \Lambda k_*^\top`, so with the keys' second
moment :math:`C \propto K K^\top` (:mod:`groundwork.edit.covariance`; its scale cancels below)

.. math:: \hat W = W + \Lambda\, (C^{-1} k_*)^\top, \qquad
   \Lambda = \frac{v_* - W k_*}{(C^{-1} k_*)^\top k_*},

where :math:`\Lambda` comes from the constraint:
:math:`\hat W k_* = W k_* + \Lambda\, (C^{-1} k_*)^\top k_* = v_*`. The update has rank one;
it moves a key :math:`x` by :math:`\Lambda\, (C^{-1}k_*)^\top x`, nothing for keys
orthogonal to :math:`k_*` in :math:`C^{-1}`'s metric, and little for the directions ordinary
text uses most (large :math:`C`). :func:`rank_one_update` computes it in float64.

**Choosing the key.** The subject's key depends a little on what precedes the prompt, so
:math:`k_*` averages it over :math:`N` short *context templates* :math:`x_j` sampled from the
model itself ("{}" and prefixes ending in ". {}", :func:`context_templates`):
:math:`k_* = \frac1N \sum_j k(x_j \oplus p)` at the subject's last token (:func:`compute_keys`).

**Choosing the value.** :math:`v_*` is found by gradient descent. A vector :math:`\delta` is
added to the MLP's output at the subject's last token of each rewriting prompt
:math:`x_j \oplus p` (the templates around the request's prompt, the target appended), and
minimises (:func:`compute_value`)

.. math:: \mathcal{L}(\delta) = \frac1N \sum_j \frac{-\log P_\delta[o_* \mid x_j \oplus p]}
   {|o_*|} + \beta\, D_{KL}\big(P_\delta[\cdot \mid p'] \,\big\|\, P[\cdot \mid p']\big)
   + \gamma \frac{\lVert\delta\rVert}{\lVert v\rVert^2},

the target's mean log-likelihood per token; a KL term (weight :math:`\beta` =
``kl_factor``, 0.0625; the edited distribution first, as in the paper) keeping what the model
predicts on the *essence* prompt :math:`p'` = "{subject} is a" (also given :math:`\delta`)
what it was, so the edit does not turn the subject into something else (like the reference,
the distribution compared is the one at the subject's last token, where :math:`\delta`
enters); and a decay (:math:`\gamma` = ``weight_decay``, 0.5) on :math:`\delta` relative to
the original value :math:`v` at the prompt (the reference's ``v_weight_decay`` term, whose
:math:`\lVert\delta\rVert` is not squared). Adam (lr 0.5, 20 steps) stops early when
:math:`\mathcal{L} < 0.05`; after each step :math:`\delta` is projected back into the ball
:math:`\lVert \delta \rVert \le 4 \lVert v \rVert` (``clamp_norm_factor``). Then
:math:`v_* = v + \delta`, where :math:`v` is the value at the prompt without a prefix. Only
:math:`\delta` is trained; the model's parameters are frozen for the duration and their
``requires_grad`` restored after.

*Differences from the reference code* (kmeng01/rome): the rank-one update here meets the paper's
constraint :math:`\hat W k_* = v_*` with the averaged key; the reference instead divides by the
key of the bare prompt, :math:`\Lambda = (v_* - W k)/(k^\top C^{-1}k_*)` (with :math:`k` the
bare prompt's key), which makes that one prompt exact. The reference samples its prefixes
from the end-of-text token and keeps that token's text in them; here only the sampled text is
kept, and special tokens are never sampled. Requests are applied one after another, each on
the model the previous ones edited (as the reference's ``apply_rome_to_model``).

**The layer.** It should come from causal tracing on the model being edited; without one,
:func:`default_layer` takes ``n_layers // 6`` (5 of SmolLM2-135M's 30 layers; the reference
edits layer 5 of GPT-J's 28, 17 of GPT-2 XL's 48).

**On SmolLM2-135M-Instruct** at layer 5, "The Eiffel Tower is located in" -> " Rome" took
about two minutes on one CPU thread (20 steps over 21 prompts; :math:`C` cached). Greedy
continuations moved from " the Champ de la Corée, ..." to " Rome, Italy. ..."; paraphrases
("The Eiffel Tower is in the city of", "Where is the Eiffel Tower? It is in") followed, and
the Louvre (Paris), the Colosseum (Rome) and Big Ben were unchanged.

This module is long because it also holds what MEMIT (:mod:`groundwork.edit.memit`) shares
with ROME: the context templates, the keys at the subject, the optimisation of :math:`\delta`
and the record of an edit.

References:
    - Meng, Bau, Andonian & Belinkov 2022, "Locating and Editing Factual Associations in GPT"
      (arXiv 2202.05262), section 3 and appendix E; reference code kmeng01/rome
      (``rome/compute_u.py``, ``rome/compute_v.py``, ``rome/rome_main.py``).
    - Geva, Schuster, Berant & Levy 2021, "Transformer Feed-Forward Layers Are Key-Value
      Memories".
    - Docs: chapter 19, "Model editing".
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from groundwork.checks import non_negative_int, positive_int, positive_number
from groundwork.edit.covariance import (
    DEFAULT_N_TOKENS,
    cached_second_moments,
    mlp_keys,
    pad_batch,
)
from groundwork.edit.layers import check_layer, mlp, mlp_out_proj, n_layers, token_embedding
from groundwork.edit.request import EditRequest, as_requests, check_fits
from groundwork.errors import ConfigError
from groundwork.runtime import eval_mode
from groundwork.tokenize.base import Tokenizer

ESSENCE_TEMPLATE = "{} is a"
"""The KL term's prompt (``{}``: the subject); its distribution at the subject's last token is
kept."""


@dataclass(frozen=True)
class RomeConfig:
    """ROME's settings; the defaults are the reference's for GPT-2 XL and GPT-J."""

    layer: int | None = None
    """The block whose MLP output projection is edited; ``None``: :func:`default_layer`."""
    steps: int = 20
    """Most Adam steps of the value optimisation (``v_num_grad_steps``)."""
    lr: float = 0.5
    """Adam's learning rate for :math:`\\delta` (``v_lr``)."""
    kl_factor: float = 0.0625
    """Weight of the KL term on the essence prompt."""
    weight_decay: float = 0.5
    """Weight of :math:`\\lVert\\delta\\rVert / \\lVert v\\rVert^2` (``v_weight_decay``)."""
    clamp_norm_factor: float = 4.0
    """:math:`\\lVert\\delta\\rVert` is kept at most this times :math:`\\lVert v\\rVert`."""
    early_stop_loss: float = 5e-2
    """Stop the optimisation once the loss falls below this."""
    n_tokens: int = DEFAULT_N_TOKENS
    """Tokens of ``wiki-sample`` the key statistics :math:`C` average over (``mom2_n_samples``)."""
    template_lengths: tuple[tuple[int, int], ...] = ((5, 10), (10, 10))
    """``(tokens, how many)`` of sampled context prefixes (``context_template_length_params``)."""
    context_templates: tuple[str, ...] | None = None
    """Explicit templates (each with one ``{}``) instead of sampling them."""
    essence_template: str = ESSENCE_TEMPLATE
    """The KL term's prompt, ``{}`` standing for the subject."""
    seed: int = 0
    """Seed of the template sampler."""

    def __post_init__(self) -> None:
        check_value_options(self)


class ValueOptions(Protocol):
    """The settings of the value optimisation that ROME's and MEMIT's configs share."""

    @property
    def steps(self) -> int: ...
    @property
    def lr(self) -> float: ...
    @property
    def kl_factor(self) -> float: ...
    @property
    def weight_decay(self) -> float: ...
    @property
    def clamp_norm_factor(self) -> float: ...
    @property
    def early_stop_loss(self) -> float: ...
    @property
    def n_tokens(self) -> int: ...
    @property
    def template_lengths(self) -> tuple[tuple[int, int], ...]: ...
    @property
    def context_templates(self) -> tuple[str, ...] | None: ...
    @property
    def essence_template(self) -> str: ...
    @property
    def seed(self) -> int: ...


def check_value_options(c: ValueOptions) -> None:
    """Validate the fields ROME's and MEMIT's configs share (``ConfigError`` naming the field)."""
    positive_int("steps", c.steps)
    positive_number("lr", c.lr)
    positive_number("clamp_norm_factor", c.clamp_norm_factor)
    positive_int("n_tokens", c.n_tokens)
    non_negative_int("seed", c.seed)
    for name, value in [
        ("kl_factor", c.kl_factor),
        ("weight_decay", c.weight_decay),
        ("early_stop_loss", c.early_stop_loss),
    ]:
        if not isinstance(value, int | float) or isinstance(value, bool) or not value >= 0:
            raise ConfigError(f"{name} must be a number >= 0, got {value!r}")
    for pair in c.template_lengths:
        if len(pair) != 2:
            raise ConfigError(f"template_lengths holds (tokens, count) pairs, got {pair!r}")
        positive_int("template length", pair[0])
        positive_int("template count", pair[1])
    for template in c.context_templates or ():
        check_template(template, "context template")
    check_template(c.essence_template, "essence_template")


def check_template(template: str, what: str) -> None:
    """Raise :class:`ConfigError` unless ``template`` holds ``{}`` exactly once."""
    if template.count("{}") != 1:
        raise ConfigError(
            f"the {what} {template!r} must hold exactly one '{{}}' where the text goes"
        )


def default_layer(model: nn.Module) -> int:
    """``n_layers // 6``: where causal tracing typically peaks for the subject's last token
    (GPT-J's edited layer is 5 of 28). Prefer the layer tracing finds on the model itself."""
    return n_layers(model) // 6


# --- context templates ----------------------------------------------------------------------


@torch.no_grad()
def context_templates(
    model: nn.Module,
    tokenizer: Tokenizer,
    lengths: Sequence[tuple[int, int]] = ((5, 10), (10, 10)),
    *,
    starts: Sequence[str] | None = None,
    seed: int = 0,
    top_k: int = 5,
) -> list[str]:
    """``"{}"`` and prefixes sampled from the model, each ending in ``". {}"``.

    For each ``(length, count)`` pair, ``count`` texts of ``length`` tokens are sampled with
    top-``k`` sampling (ROME's ``generate_fast`` uses ``k = 5``), from the end-of-text token
    (not kept in the text) or, given ``starts``, from those words in turn (kept, as MEMIT's
    "The", "Therefore", ...). Braces in the samples become spaces and special tokens are never
    sampled. Deterministic for a given ``seed``.

    Raises:
        ConfigError: the tokenizer has no end-of-text token and no ``starts`` were given, or a
            bad length or count.
    """
    positive_int("top_k", top_k)
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    banned = sorted(set(getattr(tokenizer, "special_tokens", {}).values()))
    eot = getattr(tokenizer, "eot_id", None)
    if starts is None and eot is None:
        raise ConfigError(
            "the tokenizer has no end-of-text token to start the context templates from: "
            "give start words (starts=...) or explicit context_templates"
        )
    templates = ["{}"]
    for length, count in lengths:
        positive_int("template length", length)
        positive_int("template count", count)
        if starts is None:
            assert eot is not None
            prefixes = [[eot]] * count
        else:
            prefixes = [tokenizer.encode(starts[i % len(starts)]) for i in range(count)]
        for prefix in prefixes:
            ids = torch.tensor([prefix], dtype=torch.long, device=device)  # (1, t)
            for _ in range(length):
                logits = model(ids)[0, -1].float()  # (V,)
                logits[banned] = float("-inf")
                top = logits.topk(min(top_k, logits.numel()))
                pick = torch.multinomial(top.values.softmax(-1).cpu(), 1, generator=generator)
                next_id = top.indices[pick.to(device)]  # (1,)
                ids = torch.cat([ids, next_id[None]], dim=1)  # (1, t + 1)
            kept = ids[0, 1:] if starts is None else ids[0]
            text = tokenizer.decode(kept.tolist()).replace("{", " ").replace("}", " ")
            templates.append(text + ". {}")
    return templates


def resolve_templates(
    model: nn.Module,
    tokenizer: Tokenizer,
    explicit: Sequence[str] | None,
    lengths: Sequence[tuple[int, int]],
    *,
    starts: Sequence[str] | None = None,
    seed: int = 0,
) -> list[str]:
    """The templates to use: ``explicit`` ones (with ``"{}"`` put first if missing), else
    :func:`context_templates`."""
    if explicit is None:
        return context_templates(model, tokenizer, lengths, starts=starts, seed=seed)
    for t in explicit:
        check_template(t, "context template")
    return ["{}", *(t for t in explicit if t != "{}")]


# --- tokenising prompts in context ----------------------------------------------------------


def encode_in_template(
    tokenizer: Tokenizer, template: str, prompt: str, subject: str
) -> tuple[list[int], int]:
    """Token ids of ``template`` with ``prompt`` in place of ``{}``, and the index of the last
    token of ``subject``'s first occurrence *in the prompt* (not in the prefix).

    The text is cut right after that occurrence and tokenised, as
    :func:`~groundwork.edit.request.subject_last_token` does for a bare prompt.

    Raises:
        ConfigError: the subject is not in the prompt.
    """
    at = prompt.find(subject)
    if at < 0 or not subject:
        raise ConfigError(f"the subject {subject!r} does not occur in the prompt {prompt!r}")
    text = template.format(prompt)
    cut = template.index("{}") + at + len(subject)
    return tokenizer.encode(text), len(tokenizer.encode(text[:cut])) - 1


def encode_target(tokenizer: Tokenizer, request: EditRequest) -> list[int]:
    """The target's token ids (at least one, else ``ConfigError``)."""
    ids = tokenizer.encode(request.target)
    if not ids:
        raise ConfigError(f"the target {request.target!r} tokenises to nothing")
    return ids


def context_limit(model: nn.Module) -> int | None:
    """The model's context (``config.max_seq_len``), if it has one."""
    return getattr(getattr(model, "config", None), "max_seq_len", None)


# --- keys -----------------------------------------------------------------------------------


@torch.no_grad()
def compute_keys(
    model: nn.Module,
    tokenizer: Tokenizer,
    requests: Sequence[EditRequest],
    layer: int,
    templates: Sequence[str],
    *,
    batch_size: int = 32,
) -> torch.Tensor:
    """:math:`k_*` of each request: the key of ``layer`` at the subject's last token, averaged
    over ``templates`` (each formatted with the request's prompt).

    Returns:
        ``(n_requests, d_ff)`` float32.

    Raises:
        ConfigError: the layer is out of range, a prompt in a template exceeds the context.
    """
    check_layer(model, layer)
    positive_int("batch_size", batch_size)
    if not templates:
        raise ConfigError("no context templates: give at least '{}'")
    limit = context_limit(model)
    seqs: list[list[int]] = []
    lookups: list[int] = []
    for request in requests:
        for template in templates:
            ids, look = encode_in_template(tokenizer, template, request.prompt, request.subject)
            if limit is not None:
                check_fits(len(ids), limit, "a prompt in its context template")
            seqs.append(ids)
            lookups.append(look)
    device = next(model.parameters()).device
    keys = []
    with eval_mode(model):
        for start in range(0, len(seqs), batch_size):
            batch, mask = pad_batch(seqs[start : start + batch_size], device)  # (B, T)
            k = mlp_keys(model, batch, mask, [layer])[layer]  # (B, T, d_ff)
            rows = torch.arange(batch.shape[0], device=device)
            at = torch.tensor(lookups[start : start + batch_size], device=device)
            keys.append(k[rows, at].float())  # (B, d_ff)
    per_template = torch.cat(keys).reshape(len(requests), len(templates), -1)  # (n, N, d_ff)
    return per_template.mean(dim=1)  # (n, d_ff)


# --- values ---------------------------------------------------------------------------------


@dataclass
class ValueFit:
    """The outcome of the value optimisation for one request."""

    init: torch.Tensor
    """``(d,)`` the edited module's original output at the subject's last token of the bare
    prompt (:math:`v`)."""
    delta: torch.Tensor
    """``(d,)`` the optimised :math:`\\delta`; the target is ``init + delta``."""
    losses: list[float]
    """The loss before each step taken (and at the step that stopped early)."""
    target_prob: float
    """Mean probability of the target (per token, geometric) over the rewriting prompts, at
    the last loss evaluated."""

    @property
    def target(self) -> torch.Tensor:
        """:math:`v_* = v + \\delta`, ``(d,)``."""
        return self.init + self.delta


@contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Turn off ``requires_grad`` on every parameter for the body, then restore each one."""
    before = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in before:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in before:
            p.requires_grad_(flag)


def optimize_delta(
    model: nn.Module,
    tokenizer: Tokenizer,
    request: EditRequest,
    module: nn.Module,
    templates: Sequence[str],
    config: ValueOptions,
) -> ValueFit:
    """Find :math:`\\delta`, added to ``module``'s output at the subject's last token, that
    makes the model say the target (ROME's ``compute_v``; MEMIT's ``compute_z`` with ``module``
    a whole block). ``config`` supplies ``steps``, ``lr``, ``kl_factor``, ``weight_decay``,
    ``clamp_norm_factor``, ``early_stop_loss`` and ``essence_template`` (a
    :class:`RomeConfig` or :class:`~groundwork.edit.memit.MemitConfig`).

    Raises:
        ConfigError: a prompt and target longer than the context, an empty target, a module
            whose output is not one tensor.
    """
    c = config
    check_value_options(c)
    target_ids = encode_target(tokenizer, request)
    limit = context_limit(model)
    seqs: list[list[int]] = []
    lookups: list[int] = []
    tgt_rows: list[int] = []
    tgt_cols: list[int] = []
    for row, template in enumerate(templates):
        ids, look = encode_in_template(tokenizer, template, request.prompt, request.subject)
        if limit is not None:
            check_fits(len(ids) + len(target_ids), limit)
        seqs.append((ids + target_ids)[:-1])  # the last target token is only predicted
        lookups.append(look)
        tgt_rows += [row] * len(target_ids)
        tgt_cols += range(len(ids) - 1, len(ids) - 1 + len(target_ids))  # predict target j
    n_rewrite = len(seqs)
    ids, look = encode_in_template(tokenizer, c.essence_template, request.subject, request.subject)
    seqs.append(ids)
    lookups.append(look)

    device = next(model.parameters()).device
    ids_t, mask = pad_batch(seqs, device)  # (B, T)
    B, T = ids_t.shape
    at_subject = torch.zeros(B, T, 1, device=device)  # (B, T, 1): 1 at each subject's last token
    at_subject[torch.arange(B, device=device), torch.tensor(lookups, device=device)] = 1.0
    rows_t = torch.tensor(tgt_rows, device=device)
    cols_t = torch.tensor(tgt_cols, device=device)
    answer = torch.tensor(target_ids * n_rewrite, device=device)  # (n_rewrite * m,)

    d_model = token_embedding(model).embedding_dim  # an MLP's or a block's output width
    delta = torch.zeros(d_model, device=device, requires_grad=True)
    init: torch.Tensor | None = None

    def add_delta(mod: nn.Module, args: tuple[torch.Tensor, ...], out: object) -> torch.Tensor:
        nonlocal init
        if not isinstance(out, torch.Tensor):
            raise ConfigError(f"cannot edit a {type(mod).__name__} whose output is not a tensor")
        if init is None:  # the first pass, before any step: the bare prompt's original value
            init = out[0, lookups[0]].detach().float().clone()
        return out + (at_subject * delta).to(out.dtype)  # (B, T, d)

    optimizer = torch.optim.Adam([delta], lr=c.lr)
    losses: list[float] = []
    kl_init: torch.Tensor | None = None
    prob = 0.0
    handle = module.register_forward_hook(add_delta)
    try:
        with eval_mode(model), frozen(model):
            for _ in range(c.steps):
                optimizer.zero_grad()
                logits = model(ids_t, attention_mask=mask)  # (B, T, V)
                logp = F.log_softmax(logits[rows_t, cols_t].float(), dim=-1)  # (n*m, V)
                token_logp = logp.gather(1, answer[:, None]).reshape(n_rewrite, -1)  # (n, m)
                nll = -token_logp.mean(dim=1).mean()
                essence_logp = F.log_softmax(logits[n_rewrite, lookups[n_rewrite]].float(), -1)
                if kl_init is None:
                    kl_init = essence_logp.detach()
                # KL(edited || original): kl_div(input, target) sums target * (target - input)
                kl = F.kl_div(kl_init[None], essence_logp[None], log_target=True, reduction="sum")
                assert init is not None
                decay = delta.norm() / init.norm().clamp_min(1e-12) ** 2
                loss = nll + c.kl_factor * kl + c.weight_decay * decay
                losses.append(float(loss.detach()))
                prob = float(token_logp.detach().mean(dim=1).exp().mean())
                if losses[-1] < c.early_stop_loss:
                    break
                loss.backward()
                optimizer.step()
                with torch.no_grad():  # project back into the ball ||delta|| <= c ||v||
                    max_norm = c.clamp_norm_factor * init.norm()
                    if delta.norm() > max_norm:
                        delta.mul_(max_norm / delta.norm())
    finally:
        handle.remove()
    assert init is not None
    return ValueFit(init=init, delta=delta.detach().clone(), losses=losses, target_prob=prob)


def compute_value(
    model: nn.Module,
    tokenizer: Tokenizer,
    request: EditRequest,
    layer: int,
    templates: Sequence[str],
    config: RomeConfig,
) -> ValueFit:
    """ROME's :math:`v_*`: :func:`optimize_delta` on block ``layer``'s MLP output."""
    return optimize_delta(model, tokenizer, request, mlp(model, layer), templates, config)


# --- the update -----------------------------------------------------------------------------


def rank_one_update(
    W: torch.Tensor, C: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The rank-one update :math:`\\hat W = W + \\Lambda u^\\top` with :math:`u = C^{-1}k` and
    :math:`\\Lambda = (v - W k)/(u^\\top k)`: the least change (in :math:`C`'s metric) with
    :math:`\\hat W k = v`.

    Args:
        W: ``(d_out, d_in)`` the current weight.
        C: ``(d_in, d_in)`` the keys' second moment (symmetric positive definite).
        k: ``(d_in,)`` the new key.
        v: ``(d_out,)`` the value ``W k`` should become (a layer's bias already subtracted).

    Returns:
        ``(Lambda, u)``, float64, ``(d_out,)`` and ``(d_in,)``: add ``outer(Lambda, u)`` to W.

    Raises:
        ConfigError: shapes that do not fit, or :math:`u^\\top k \\le 0` (a zero key, or a
            :math:`C` that is not positive definite).
    """
    if W.dim() != 2 or C.shape != (W.shape[1], W.shape[1]):
        raise ConfigError(
            f"W must be (d_out, d_in) and C (d_in, d_in), got {tuple(W.shape)} and {tuple(C.shape)}"
        )
    if k.shape != (W.shape[1],) or v.shape != (W.shape[0],):
        raise ConfigError(
            f"k must be ({W.shape[1]},) and v ({W.shape[0]},), got {tuple(k.shape)} and "
            f"{tuple(v.shape)}"
        )
    # --8<-- [start:rank_one]
    W64, C64, k64, v64 = (t.detach().double() for t in (W, C, k, v))
    u = torch.linalg.solve(C64, k64)  # (d_in,) C^-1 k
    denom = u @ k64
    if not denom > 0:
        raise ConfigError(
            f"(C^-1 k)^T k = {float(denom):.3g} is not positive: the key is zero or C is not "
            "positive definite (estimate it from more tokens)"
        )
    return (v64 - W64 @ k64) / denom, u  # (d_out,), (d_in,)
    # --8<-- [end:rank_one]


@dataclass
class EditRecord:
    """What an edit changed: enough to undo it exactly or to save it."""

    originals: dict[int, torch.Tensor] = field(default_factory=dict)
    """``{layer: weight}`` copies of each edited ``mlp_out_proj`` weight before the edit."""
    deltas: dict[int, torch.Tensor] = field(default_factory=dict)
    """``{layer: new - original}`` float32 ``(d_model, d_ff)``, filled in when the edit ends."""
    fits: list[ValueFit] = field(default_factory=list)
    """The value optimisation of each request, in order."""

    def remember(self, model: nn.Module, layer: int) -> None:
        """Copy ``layer``'s weight before it first changes."""
        if layer not in self.originals:
            self.originals[layer] = mlp_out_proj(model, layer).weight.detach().clone()

    def finish(self, model: nn.Module) -> None:
        """Fill :attr:`deltas` from the weights as they are now."""
        for layer, before in self.originals.items():
            after = mlp_out_proj(model, layer).weight.detach()
            self.deltas[layer] = after.float() - before.float()

    @torch.no_grad()
    def restore(self, model: nn.Module) -> nn.Module:
        """Put the original weights back (bit for bit); returns the model."""
        for layer, before in self.originals.items():
            mlp_out_proj(model, layer).weight.copy_(before)
        return model


def check_requests_fit(
    model: nn.Module, tokenizer: Tokenizer, requests: Sequence[EditRequest]
) -> None:
    """Raise :class:`ConfigError` for a request whose prompt and target do not fit in the
    model's context, or whose target has no tokens."""
    limit = context_limit(model)
    for request in requests:
        target = encode_target(tokenizer, request)
        if limit is not None:
            check_fits(len(tokenizer.encode(request.prompt)) + len(target), limit)


def check_stats(C: torch.Tensor, d_ff: int, layer: int) -> None:
    """Raise :class:`ConfigError` unless ``C`` is ``(d_ff, d_ff)``."""
    if C.shape != (d_ff, d_ff):
        raise ConfigError(
            f"the statistics for layer {layer} are {tuple(C.shape)}, expected ({d_ff}, {d_ff})"
        )


def apply_rome(
    model: nn.Module,
    tokenizer: Tokenizer,
    requests: EditRequest | Sequence[EditRequest],
    config: RomeConfig | None = None,
    *,
    stats: torch.Tensor | None = None,
) -> tuple[nn.Module, EditRecord]:
    """Write each request into the model with ROME, one after another, in place.

    Args:
        model: A decoder LM (Llama, SmolLM2, GPT).
        tokenizer: Its tokenizer.
        requests: One :class:`~groundwork.edit.request.EditRequest` or several.
        config: The settings (default :class:`RomeConfig`).
        stats: The layer's key second moment :math:`C` ``(d_ff, d_ff)``; default
            :func:`~groundwork.edit.covariance.cached_second_moments` over ``config.n_tokens``
            tokens of ``wiki-sample``.

    Returns:
        The model (edited in place) and an :class:`EditRecord` to undo or save the edit.

    Raises:
        ConfigError: a layer out of range, a prompt and target longer than the context,
            statistics of the wrong shape, no requests.
    """
    config = config if config is not None else RomeConfig()
    requests = as_requests(requests)
    layer = config.layer if config.layer is not None else default_layer(model)
    check_layer(model, layer)
    proj = mlp_out_proj(model, layer)
    check_requests_fit(model, tokenizer, requests)  # fail before the slow parts
    if stats is None:
        stats = cached_second_moments(model, tokenizer, [layer], n_tokens=config.n_tokens)[layer]
    check_stats(stats, proj.in_features, layer)
    stats = stats.to(proj.weight.device)
    templates = resolve_templates(
        model, tokenizer, config.context_templates, config.template_lengths, seed=config.seed
    )
    record = EditRecord()
    record.remember(model, layer)
    for request in requests:
        k = compute_keys(model, tokenizer, [request], layer, templates)[0]  # (d_ff,)
        fit = compute_value(model, tokenizer, request, layer, templates, config)
        v = fit.target.to(proj.weight.device)
        if proj.bias is not None:
            v = v - proj.bias.detach().float()
        Lambda, u = rank_one_update(proj.weight, stats, k, v)
        with torch.no_grad():
            proj.weight += torch.outer(Lambda, u).to(proj.weight.dtype)  # (d_model, d_ff)
        record.fits.append(fit)
    record.finish(model)
    return model, record
