r"""Causal tracing: which hidden states carry a fact from the subject to the answer
(Meng, Bau, Andonian & Belinkov 2022, §2.1).

**Three runs.** Take a prompt that a model completes with a fact, "The Eiffel Tower is located
in the city of" -> " Paris", and its subject, "Eiffel Tower". Write :math:`h_i^{(l)}` for the
residual stream at token :math:`i` after block :math:`l`, and :math:`a_i^{(l)}`,
:math:`m_i^{(l)}` for what block :math:`l`'s attention and MLP add to it.

1. *Clean run*: run the prompt; record every :math:`h_i^{(l)}`, :math:`a_i^{(l)}`,
   :math:`m_i^{(l)}` and :math:`P = p(o \mid \text{prompt})`, the probability of the answer
   :math:`o` (the first token of a given target, or the model's own greedy next token).
2. *Corrupted run*: add Gaussian noise :math:`\epsilon \sim \mathcal N(0, \nu^2)` to the
   token embeddings of the subject's tokens, so the model no longer knows which entity the
   prompt is about, and measure :math:`P_* = p(o)`, averaged over ``samples`` noise draws.
   Following the paper, :math:`\nu = 3\sigma`, three times the standard deviation of the
   embeddings; here :math:`\sigma` is the standard deviation of all the entries of the token
   embedding matrix (:func:`noise_scale`; the reference code measures it over the subjects of
   its 1,000 facts: on SmolLM2 the two differ by a few percent, 0.136 for the whole matrix
   against 0.133 for "Eiffel Tower"'s three tokens).
3. *Corrupted-with-restoration runs*: corrupt again with the same noise, but put one state
   back to its clean value, :math:`h_i^{(l)} \leftarrow h_i^{(l)}|_{\text{clean}}`, and let the
   rest of the computation proceed from there. The result :math:`P_{*,\text{clean}\,h_i^{(l)}}`
   is the *score* of that state, and its **indirect effect** is
   :math:`P_{*,\text{clean}\,h_i^{(l)}} - P_*`: how much of the fact that single state alone
   can bring back.

A state whose restoration recovers :math:`P` must carry (or cause) the information. Tracing
every token and layer gives a heat map (the paper's Figure 1): restoring at the *last subject
token* in the middle layers, and at the last token in the top layers, recovers most of the
answer. For the sublayers (kinds ``"mlp"`` and ``"attn"``) the paper restores a *window* of
``window`` (10) consecutive layers' outputs centred on :math:`l`, the layers
:math:`[l - \lfloor w/2 \rfloor, l + \lceil w/2 \rceil)` clipped to the model
(:func:`restored_layers`; one layer alone changes the stream too little to see). The MLP
peak at the subject's last token is what ROME uses to pick the layer it edits.

**Batching.** A naive trace runs the model once per (token, layer) pair: 30 layers x 10 tokens
x 3 kinds = 900 runs of 10 noisy sequences each for SmolLM2. Three observations make it
cheaper, all implemented with hooks on the unmodified model:

* A restoration whose first restored layer is :math:`l_0` leaves blocks :math:`0..l_0-1`
  exactly as in the corrupted run. So each forward pass starts with only the ``samples``
  corrupted sequences (the "spine"), and a pre-hook on block :math:`l_0` *grows the batch*,
  appending one copy of the spine's input per restoration that starts there. Blocks below the
  first restored layer are computed once for all restorations, which halves the work. (This
  needs a model whose attention mask and positions broadcast over the batch, true of both
  families here when there is no padding.)
* Tokens before the subject never see the noise (attention is causal), so their clean and
  corrupted states are the same and restoring one changes nothing: those cells are the
  corrupted probability, without a run.
* Only the last position's logits are needed: a pre-hook on ``lm_head`` keeps that position
  only (a fifth of SmolLM2's compute is its 49,152-way output head at every position).

Every restoration of a pass uses the same ``samples`` noise draws (drawn once from ``seed``),
as the reference does, so differences between cells are not noise-draw differences.

References:
    - Meng, Bau, Andonian & Belinkov 2022, "Locating and Editing Factual Associations in GPT"
      (arXiv 2202.05262), §2.1 and Figure 1; reference code kmeng01/rome
      (``experiments/causal_trace.py``: ``trace_with_patch``, ``trace_important_window``).
    - Docs: chapter 19, "Model editing".

This module is long because one batched, hook-based pass serves all three kinds of state, and
its plot reads the same results.
"""

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from groundwork.edit.layers import attention, decoder_blocks, mlp, token_embedding
from groundwork.edit.request import check_fits, subject_last_token
from groundwork.errors import ConfigError
from groundwork.tokenize.base import Tokenizer

Kind = Literal["hidden", "mlp", "attn"]
KINDS: tuple[Kind, ...] = ("hidden", "mlp", "attn")
"""What a restoration puts back: a block's output residual stream (``"hidden"``), or the output
of its MLP (``"mlp"``) or attention (``"attn"``) sublayer."""

DEFAULT_WINDOW: dict[str, int] = {"hidden": 1, "mlp": 10, "attn": 10}
"""Layers restored together per cell (the paper's: one hidden state; ten sublayer outputs)."""

NOISE_FACTOR = 3.0
"""The paper's noise scale: :math:`\\nu = 3\\sigma` of the embeddings."""


@dataclass(frozen=True)
class TraceResult:
    """One causal trace of one prompt for one kind of state.

    Attributes:
        scores: ``(T, L)``: p(answer) with the state at (token ``t``, layer ``l``) restored
            (for ``"mlp"``/``"attn"``: the window of layers :func:`restored_layers` gives).
        clean_p: p(answer) on the clean prompt.
        corrupted_p: p(answer) with the subject's embeddings corrupted, nothing restored.
        tokens: The prompt's ``T`` tokens as text.
        token_ids: Their ids.
        subject_range: ``(start, stop)``: the subject's tokens are ``start .. stop - 1``.
        answer: The answer token's text.
        answer_id: Its id.
        kind: ``"hidden"``, ``"mlp"`` or ``"attn"``.
        window: Layers restored together per cell.
        noise: The noise's standard deviation :math:`\\nu`.
        samples: Noise draws averaged over.
    """

    scores: torch.Tensor
    clean_p: float
    corrupted_p: float
    tokens: list[str]
    token_ids: list[int]
    subject_range: tuple[int, int]
    answer: str
    answer_id: int
    kind: str
    window: int
    noise: float
    samples: int

    @property
    def indirect_effect(self) -> torch.Tensor:
        """``(T, L)``: score minus the corrupted probability."""
        return self.scores - self.corrupted_p

    @property
    def subject_last(self) -> int:
        """Index of the subject's last token."""
        return self.subject_range[1] - 1

    def peak(self) -> tuple[int, int]:
        """``(token, layer)`` of the largest score."""
        flat = int(self.scores.argmax())
        L = self.scores.shape[1]
        return flat // L, flat % L

    def best_layer(self, token: int | None = None) -> int:
        """The layer with the largest score at ``token`` (default: the subject's last token,
        where ROME reads the MLP trace to choose the layer it edits)."""
        t = self.subject_last if token is None else token
        return int(self.scores[t].argmax())


def restored_layers(layer: int, n_layers: int, window: int) -> range:
    """The layers a cell centred on ``layer`` restores: ``window`` consecutive layers from
    ``layer - window // 2``, clipped to ``0 .. n_layers - 1`` (the reference's window).

    >>> restored_layers(15, 30, 10), restored_layers(2, 30, 10), restored_layers(7, 30, 1)
    (range(10, 20), range(0, 7), range(7, 8))
    """
    return range(max(0, layer - window // 2), min(n_layers, layer + (window + 1) // 2))


def noise_scale(
    model: nn.Module, token_ids: Sequence[int] | None = None, factor: float = NOISE_FACTOR
) -> float:
    """``factor`` times the standard deviation of the token embedding's entries: over the rows
    ``token_ids`` (e.g. the tokens of many subjects, as the reference measures it), or over the
    whole matrix (the default :func:`causal_trace` uses)."""
    weight = token_embedding(model).weight.detach()  # (V, d)
    if token_ids is not None:
        weight = weight[torch.as_tensor(list(token_ids), dtype=torch.long, device=weight.device)]
    return factor * float(weight.double().std())


def corruption_noise(
    samples: int, n_tokens: int, d_model: int, scale: float, *, seed: int
) -> torch.Tensor:
    """The ``(samples, n_tokens, d_model)`` Gaussian noise of standard deviation ``scale``
    added to the subject's embeddings, drawn on the CPU from ``seed`` (the same on any
    device)."""
    generator = torch.Generator().manual_seed(seed)
    return scale * torch.randn(samples, n_tokens, d_model, generator=generator)


def subject_range(tokenizer: Tokenizer, prompt: str, subject: str) -> tuple[int, int]:
    """``(start, stop)`` of the tokens of ``subject``'s first occurrence in the tokenised prompt:
    the first token whose text reaches the subject's first character, up to the subject's last
    token (:func:`~groundwork.edit.request.subject_last_token`). The first token is found from
    the decoded text of the prompt's leading tokens (so ``" Eiffel"``'s leading space, which
    byte-level BPE attaches to the word, is counted in the subject's token).

    Raises:
        ConfigError: the subject is not in the prompt.
    """
    stop = subject_last_token(tokenizer, prompt, subject) + 1
    char_start = prompt.find(subject)
    ids = tokenizer.encode(prompt)
    start = stop - 1
    for i in range(stop):
        if len(tokenizer.decode(ids[: i + 1])) > char_start:
            start = i
            break
    return start, stop


# The three runs ---------------------------------------------------------------------------


def _sublayer(model: nn.Module, kind: str, layer: int) -> nn.Module:
    """The module whose output a ``kind`` restoration at ``layer`` replaces."""
    if kind == "hidden":
        return decoder_blocks(model)[layer]
    return mlp(model, layer) if kind == "mlp" else attention(model, layer)


def _last_position_head(model: nn.Module) -> Callable[[nn.Module, tuple[Any, ...]], Any] | None:
    """A pre-hook for ``model.lm_head`` that keeps only the last position (``None`` when the
    model has no linear ``lm_head``; every position's logits are then computed)."""
    if not isinstance(getattr(model, "lm_head", None), nn.Linear):
        return None

    def last_only(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (args[0][:, -1:], *args[1:])  # (B, 1, d)

    return last_only


def _clean_run(
    model: nn.Module, ids: torch.Tensor, kinds: Sequence[str]
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Run ``ids`` ``(T,)`` once; return each kind's states ``(L, T, d)`` and the next-token
    probabilities ``(V,)`` at the last position."""
    L = len(decoder_blocks(model))
    states: dict[str, list[torch.Tensor | None]] = {k: [None] * L for k in kinds}
    handles: list[RemovableHandle] = []

    def recorder(kind: str, layer: int) -> Callable[[nn.Module, Any, torch.Tensor], None]:
        def record(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            states[kind][layer] = output[0].detach().clone()  # (T, d)

        return record

    try:
        for kind in kinds:
            for layer in range(L):
                module = _sublayer(model, kind, layer)
                handles.append(module.register_forward_hook(recorder(kind, layer)))
        logits = model(ids[None])  # (1, T, V)
    finally:
        for handle in handles:
            handle.remove()
    stacked = {k: torch.stack(cast(list[torch.Tensor], v)) for k, v in states.items()}
    return stacked, torch.softmax(logits[0, -1].float(), dim=-1)


def _restored_runs(
    model: nn.Module,
    ids: torch.Tensor,
    span: tuple[int, int],
    noise: torch.Tensor,
    answer_id: int,
    kind: str,
    clean: torch.Tensor,
    cells: Sequence[tuple[int, range]],
) -> tuple[float, list[float]]:
    """One forward pass: the corrupted run and, for each cell ``(token, layers)``, the corrupted
    run with ``kind``'s clean states ``clean`` ``(L, T, d)`` restored at ``token`` in
    ``layers``. ``cells`` must be sorted by their first layer. Returns p(answer) of the
    corrupted run and of each cell, each averaged over the noise draws ``noise``
    ``(S, n_subject, d)``.

    Rows of the batch: ``0..S-1`` the corrupted spine, then ``S`` rows per cell in order; a
    cell's rows are appended at the input of its first restored block."""
    S = noise.shape[0]
    blocks = decoder_blocks(model)
    branch_at = Counter(layers.start for _, layers in cells)  # block -> cells starting there
    restore_at: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # layer -> (rows, tokens)
    for layer in range(len(blocks)):
        mine = [(i, t) for i, (t, layers) in enumerate(cells) if layer in layers]
        if mine:
            rows = torch.cat([S * (i + 1) + torch.arange(S) for i, _ in mine])  # (n * S,)
            tokens = torch.tensor([t for _, t in mine]).repeat_interleave(S)  # (n * S,)
            restore_at[layer] = (rows.to(ids.device), tokens.to(ids.device))
    start, stop = span

    def corrupt(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        out = output.clone()  # (S, T, d)
        out[:, start:stop] += noise.to(out.device, out.dtype)
        return out

    def grow(layer: int) -> Callable[[nn.Module, tuple[Any, ...]], tuple[Any, ...]]:
        def add_rows(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
            x = args[0]  # (rows so far, T, d)
            return (torch.cat([x, x[:S].repeat(branch_at[layer], 1, 1)]), *args[1:])

        return add_rows

    def restorer(layer: int) -> Callable[[nn.Module, Any, torch.Tensor], torch.Tensor]:
        rows, tokens = restore_at[layer]

        def restore(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
            out = output.clone()  # (B, T, d)
            out[rows, tokens] = clean[layer][tokens].to(out.dtype)
            return out

        return restore

    handles = [token_embedding(model).register_forward_hook(corrupt)]
    try:
        for layer in branch_at:
            handles.append(blocks[layer].register_forward_pre_hook(grow(layer)))
        for layer in restore_at:
            module = _sublayer(model, kind, layer)
            handles.append(module.register_forward_hook(restorer(layer)))
        head_hook = _last_position_head(model)
        if head_hook is not None:
            handles.append(cast(nn.Module, model.lm_head).register_forward_pre_hook(head_hook))
        logits = model(ids[None].expand(S, -1))  # (S * (1 + cells), 1 or T, V)
    finally:
        for handle in handles:
            handle.remove()
    assert logits.shape[0] == S * (1 + len(cells)), "a block was run twice or not at all"
    probs = torch.softmax(logits[:, -1].float(), dim=-1)[:, answer_id]  # (B,)
    means = probs.reshape(1 + len(cells), S).mean(dim=1).tolist()
    return means[0], means[1:]


def _trace_kind(
    model: nn.Module,
    ids: torch.Tensor,
    span: tuple[int, int],
    noise: torch.Tensor,
    answer_id: int,
    kind: str,
    clean: torch.Tensor,
    window: int,
    batch_size: int,
) -> torch.Tensor:
    """The ``(T, L)`` scores of one kind, in passes of at most ``batch_size`` sequences. Cells
    at tokens before the subject are left 0: the noise cannot reach them (attention is
    causal), so their clean and corrupted states are the same and restoring one changes
    nothing; the caller fills in the corrupted probability."""
    T, L, S = ids.shape[0], len(decoder_blocks(model)), noise.shape[0]
    cells = sorted(
        ((t, layer) for t in range(span[0], T) for layer in range(L)),
        key=lambda cell: (restored_layers(cell[1], L, window).start, cell[1], cell[0]),
    )
    per_pass = max(1, batch_size // S - 1)  # the corrupted spine takes S rows of every pass
    scores = torch.zeros(T, L)
    for first in range(0, len(cells), per_pass):
        chunk = cells[first : first + per_pass]
        _, chunk_scores = _restored_runs(
            model,
            ids,
            span,
            noise,
            answer_id,
            kind,
            clean,
            [(t, restored_layers(layer, L, window)) for t, layer in chunk],
        )
        for (t, layer), score in zip(chunk, chunk_scores, strict=True):
            scores[t, layer] = score
    return scores


def _token_text(tokenizer: Tokenizer, token_id: int) -> str:
    """A token's text (``<id N>`` for an id past the tokenizer, in a model with a padded
    vocabulary)."""
    return tokenizer.decode([token_id]) if token_id < tokenizer.vocab_size else f"<id {token_id}>"


# The public API ---------------------------------------------------------------------------


def causal_traces(
    model: nn.Module,
    tokenizer: Tokenizer,
    prompt: str,
    subject: str,
    *,
    kinds: Sequence[str] = KINDS,
    target: str | None = None,
    samples: int = 10,
    noise: float | None = None,
    window: int | None = None,
    seed: int = 0,
    batch_size: int = 256,
) -> dict[str, TraceResult]:
    """Causal-trace ``prompt`` for several kinds of state, sharing one clean run.

    Args:
        model: A decoder LM (Llama, SmolLM2 or GPT); it is run in eval mode, unchanged.
        tokenizer: Its tokenizer.
        prompt: The text whose next token is the fact's object.
        subject: The entity whose embeddings are corrupted (its first occurrence).
        kinds: Any of ``"hidden"``, ``"mlp"``, ``"attn"``.
        target: The answer's text (its first token is traced; mind the leading space,
            ``" Paris"``); default the model's greedy next token on the clean prompt.
        samples: Noise draws averaged over.
        noise: The noise's standard deviation :math:`\\nu`; default :func:`noise_scale`
            (3 times the embedding matrix's standard deviation). 0 corrupts nothing.
        window: Layers restored together per cell; default 1 for ``"hidden"``, 10 for
            ``"mlp"`` and ``"attn"``.
        seed: Seed of the noise draws.
        batch_size: The most sequences one forward pass holds (each cell takes ``samples``).

    Returns:
        ``{kind: TraceResult}`` in the order of ``kinds``.

    Raises:
        ConfigError: the subject is not in the prompt, the prompt is longer than the model's
            context, an unknown kind, ``samples``, ``window`` or ``batch_size`` below 1, a
            negative ``noise``, or a target with no tokens.
    """
    for kind in kinds:
        if kind not in KINDS:
            raise ConfigError(f"unknown kind {kind!r}: trace one of {', '.join(KINDS)}")
    if not kinds:
        raise ConfigError(f"no kinds to trace: give some of {', '.join(KINDS)}")
    for name, value in (("samples", samples), ("window", window), ("batch_size", batch_size)):
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")
    if noise is not None and noise < 0:
        raise ConfigError(f"noise is a standard deviation and must be >= 0, got {noise}")
    span = subject_range(tokenizer, prompt, subject)  # raises if the subject is absent
    token_ids = tokenizer.encode(prompt)
    max_seq_len = getattr(getattr(model, "config", None), "max_seq_len", None)
    if max_seq_len is not None:
        check_fits(len(token_ids), max_seq_len, "the prompt")
    answer_id: int | None = None
    if target is not None:
        target_ids = tokenizer.encode(target)
        if not target_ids:
            raise ConfigError(f"the target {target!r} has no tokens: give the answer's text")
        answer_id = target_ids[0]
    scale = noise_scale(model) if noise is None else float(noise)

    device = next(model.parameters()).device
    ids = torch.tensor(token_ids, device=device)  # (T,)
    d_model = token_embedding(model).embedding_dim
    draws = corruption_noise(samples, span[1] - span[0], d_model, scale, seed=seed)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            clean_states, clean_probs = _clean_run(model, ids, kinds)
            if answer_id is None:
                answer_id = int(clean_probs.argmax())
            corrupted_p, _ = _restored_runs(
                model, ids, span, draws, answer_id, kinds[0], clean_states[kinds[0]], []
            )
            results: dict[str, TraceResult] = {}
            for kind in kinds:
                w = DEFAULT_WINDOW[kind] if window is None else window
                scores = _trace_kind(
                    model, ids, span, draws, answer_id, kind, clean_states[kind], w, batch_size
                )
                scores[: span[0]] = corrupted_p  # untouched by the noise: nothing to restore
                results[kind] = TraceResult(
                    scores=scores,
                    clean_p=float(clean_probs[answer_id]),
                    corrupted_p=corrupted_p,
                    tokens=tokenizer.pieces(token_ids),
                    token_ids=list(token_ids),
                    subject_range=span,
                    answer=_token_text(tokenizer, answer_id),
                    answer_id=answer_id,
                    kind=kind,
                    window=w,
                    noise=scale,
                    samples=samples,
                )
    finally:
        model.train(was_training)
    return results


def causal_trace(
    model: nn.Module,
    tokenizer: Tokenizer,
    prompt: str,
    subject: str,
    *,
    kind: str = "hidden",
    target: str | None = None,
    samples: int = 10,
    noise: float | None = None,
    window: int | None = None,
    seed: int = 0,
    batch_size: int = 256,
) -> TraceResult:
    """Causal-trace ``prompt`` for one kind of state: p(answer) with each (token, layer)
    restored. The arguments are :func:`causal_traces`'s, with one ``kind``.

    Example (the paper's Figure 1 on SmolLM2)::

        pre = pretrained.load("smollm2-135m-instruct")
        r = causal_trace(pre.model, pre.tokenizer, "The Eiffel Tower is located in the city of",
                         "Eiffel Tower", kind="mlp")
        r.best_layer()  # the layer whose MLPs matter most at "Tower"
    """
    return causal_traces(
        model,
        tokenizer,
        prompt,
        subject,
        kinds=[kind],
        target=target,
        samples=samples,
        noise=noise,
        window=window,
        seed=seed,
        batch_size=batch_size,
    )[kind]


# The figure -------------------------------------------------------------------------------

_COLOURS = {"hidden": "Purples", "mlp": "Greens", "attn": "Reds"}
_NAMES = {"hidden": "hidden-state", "mlp": "MLP", "attn": "attention"}


def plot_traces(
    results: TraceResult | Sequence[TraceResult] | Mapping[str, TraceResult],
    path: str | Path,
    *,
    title: str | None = None,
) -> Path:
    """Write heat maps of one or several traces side by side to the PNG ``path`` (the paper's
    Figure 1): tokens down the side, the subject's marked ``*``, layers along the bottom, and
    colour the probability of the answer after restoring (from the corrupted probability
    up)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if isinstance(results, TraceResult):
        items = [results]
    elif isinstance(results, Mapping):
        items = list(results.values())
    else:
        items = list(results)
    if not items:
        raise ConfigError("no traces to plot")
    T = items[0].scores.shape[0]
    fig, axes = plt.subplots(
        1, len(items), figsize=(1.5 + 3.6 * len(items), 1.2 + 0.28 * T), dpi=120, squeeze=False
    )
    for ax, r in zip(axes[0], items, strict=True):
        labels = [repr(tok)[1:-1] for tok in r.tokens]
        for i in range(*r.subject_range):
            labels[i] += "*"
        mesh = ax.pcolormesh(r.scores.numpy(), cmap=_COLOURS[r.kind], vmin=r.corrupted_p)
        ax.invert_yaxis()
        ax.set_yticks([i + 0.5 for i in range(len(labels))], labels, fontsize=8)
        step = 5 if r.scores.shape[1] > 10 else 1
        ticks = list(range(0, r.scores.shape[1], step))
        ax.set_xticks([x + 0.5 for x in ticks], [str(x) for x in ticks], fontsize=8)
        if r.window == 1:
            ax.set_xlabel("restored layer", fontsize=9)
        else:
            ax.set_xlabel(f"centre of {r.window} restored {_NAMES[r.kind]} layers", fontsize=9)
        ax.set_title(f"restoring {_NAMES[r.kind]} outputs", fontsize=9)
        bar = fig.colorbar(mesh, ax=ax)
        bar.ax.tick_params(labelsize=7)
        bar.set_label(f"p({r.answer.strip()!r})", fontsize=8)
    first = items[0]
    fig.suptitle(
        title
        or f"Causal trace: clean p = {first.clean_p:.3f}, corrupted p = {first.corrupted_p:.3f}",
        fontsize=10,
    )
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
