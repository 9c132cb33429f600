r"""The second moment of an MLP's keys over real text: what ROME and MEMIT must not disturb.

**Why it is needed.** Read an MLP's output projection :math:`W_{out} \in \mathbb{R}^{d \times
d_{ff}}` as a linear associative memory: its input at a token, the hidden activation
:math:`k \in \mathbb{R}^{d_{ff}}`, is a *key*, and :math:`v = W_{out} k` the *value* written
into the residual stream (Geva et al. 2021). An edit changes :math:`W` so that one new key maps
to a new value, and should change the values of all *other* keys as little as possible. Those
other keys are the keys the model meets on ordinary text; stacked as the columns of
:math:`K_0` (one per token, :math:`N` of them), "as little as possible" is
:math:`\lVert \Delta K_0 \rVert_F^2 = N \operatorname{tr}(\Delta C \Delta^\top)` with the
uncentred second moment

.. math:: C = \frac{1}{N} K_0 K_0^\top = \mathbb{E}[k k^\top] \in \mathbb{R}^{d_{ff} \times
   d_{ff}}.

ROME uses :math:`C^{-1} k_*` as the direction of its rank-one update; MEMIT weighs
:math:`\lambda C` against the new keys (:mod:`groundwork.edit.rome`,
:mod:`groundwork.edit.memit`). ROME's reference estimates :math:`C` on Wikipedia text
(``mom2`` of ``layer_stats.py``, 100,000 samples); here every token of windows of ``window``
tokens of ``wiki-sample``'s train split, ``n_tokens`` of them (100,000 by default).

**How.** A forward hook on :func:`~groundwork.edit.layers.mlp_out_proj` of each wanted layer
receives its input :math:`(B, T, d_{ff})`; the rows of real (unpadded) tokens enter
:math:`\sum_n k_n k_n^\top`, formed per batch in float32 and summed across batches in float64,
then divided by :math:`N` and returned as float32. One forward pass serves every wanted layer
(MEMIT edits five), and the pass stops right after the deepest of them: the blocks above it and
the output head (a third of SmolLM2-135M's compute, at 49,152 vocabulary rows) would be wasted.

**Caching.** The statistic depends on the model, the tokenizer, the layer, the text and the
token count, and costs a minute or two on a CPU for SmolLM2-135M, so
:func:`cached_second_moments` stores each layer's matrix under
``<GROUNDWORK_HOME>/edit-stats/`` as a safetensors file whose metadata repeats the key
(model fingerprint, layer, ``n_tokens``, source, window), written atomically. The
fingerprint (:func:`model_fingerprint`) hashes every parameter's name and shape and a strided
sample of its values, *except the MLP output projections*: those are what ROME and MEMIT
write, and no layer's keys depend on its own output projection, so a model keeps its statistics
while it is being edited (the reference, too, uses the unedited model's statistics for every
edit).

References:
    - Meng, Bau, Andonian & Belinkov 2022, "Locating and Editing Factual Associations in GPT"
      (ROME, arXiv 2202.05262), section 3.1 and appendix; reference code kmeng01/rome
      (``rome/layer_stats.py``).
    - Geva, Schuster, Berant & Levy 2021, "Transformer Feed-Forward Layers Are Key-Value
      Memories".
    - Docs: chapter 19, "Model editing".
"""

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from groundwork import corpus
from groundwork.checks import positive_int
from groundwork.edit.layers import check_layer, mlp_out_proj
from groundwork.errors import ConfigError, DataError
from groundwork.fileio import atomic_path
from groundwork.runtime import eval_mode
from groundwork.tokenize.base import Tokenizer

DEFAULT_N_TOKENS = 100_000
"""Tokens of text the statistics average over by default (ROME's reference: 100,000 samples)."""

DEFAULT_SOURCE = "wiki-sample"
"""The text source (a :func:`~groundwork.corpus.load_documents` name) read by default."""

DEFAULT_WINDOW = 256
"""Tokens per window: each document is cut into windows of this length."""

STATS_DIR = "edit-stats"
"""Directory under :func:`~groundwork.corpus.home` holding the cached statistics."""

_FORMAT = "groundwork-edit-mom2-v1"
"""Version tag stored in every cached file's metadata; bump it when the estimate changes."""


class _StopForward(Exception):
    """Raised by the hook of the deepest wanted layer: nothing above it is needed."""


def text_windows(
    tokenizer: Tokenizer, texts: Iterable[str], *, n_tokens: int, window: int = DEFAULT_WINDOW
) -> list[list[int]]:
    """Exactly ``n_tokens`` token ids of ``texts``, as windows of at most ``window`` tokens.

    Each text is tokenised and cut into consecutive windows (its last may be shorter); texts are
    read in order until ``n_tokens`` are collected, and the last window is cut to make the total
    exact. Windows never cross texts.

    Raises:
        ConfigError: ``n_tokens`` or ``window`` is not a positive integer.
        DataError: the texts hold fewer than ``n_tokens`` tokens.
    """
    positive_int("n_tokens", n_tokens)
    positive_int("window", window)
    windows: list[list[int]] = []
    remaining = n_tokens
    for text in texts:
        ids = tokenizer.encode(text)
        for start in range(0, len(ids), window):
            piece = ids[start : start + window][:remaining]
            windows.append(piece)
            remaining -= len(piece)
            if remaining == 0:
                return windows
    raise DataError(
        f"the texts hold only {n_tokens - remaining} tokens, fewer than the {n_tokens} asked "
        "for: lower n_tokens or use a larger source"
    )


def mlp_keys(
    model: nn.Module, ids: torch.Tensor, mask: torch.Tensor | None, layers: Sequence[int]
) -> dict[int, torch.Tensor]:
    """The keys (inputs of each layer's :func:`~groundwork.edit.layers.mlp_out_proj`) of one
    forward pass ``(B, T, d_ff)`` per layer, detached. The pass stops after the deepest layer
    (an exception raised by its hook), so nothing above it runs."""
    layers = sorted(set(layers))
    deepest = layers[-1]
    captured: dict[int, torch.Tensor] = {}

    def hook_for(layer: int) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], None]:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            captured[layer] = args[0].detach()
            if layer == deepest:
                raise _StopForward

        return hook

    handles = [
        mlp_out_proj(model, layer).register_forward_pre_hook(hook_for(layer)) for layer in layers
    ]
    try:
        model(ids, attention_mask=mask)
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return captured


def pad_batch(
    seqs: Sequence[Sequence[int]], device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token-id lists with 0: ids ``(B, T)`` and attention mask ``(B, T)`` (1 for a
    real token, 0 for padding)."""
    T = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), T, dtype=torch.long)
    mask = torch.zeros(len(seqs), T, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(list(s), dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids.to(device), mask.to(device)


@torch.no_grad()
def second_moments(
    model: nn.Module,
    windows: Sequence[Sequence[int]],
    layers: Sequence[int],
    *,
    batch_size: int = 8,
) -> dict[int, torch.Tensor]:
    """:math:`C_l = \\mathbb{E}[k k^\\top]` of the keys (inputs of
    :func:`~groundwork.edit.layers.mlp_out_proj`) at every token of ``windows``, for each layer.

    Args:
        model: A decoder LM (:func:`~groundwork.edit.layers.decoder_blocks`).
        windows: Token-id lists (e.g. from :func:`text_windows`), each at most the model's
            context; batched with right padding, padding excluded from the average.
        layers: The layers to measure, all in one forward pass per batch.
        batch_size: Windows per forward pass.

    Returns:
        ``{layer: C}``, each ``(d_ff, d_ff)`` float32 on the model's device.

    Raises:
        ConfigError: no layers or windows, a layer out of range, an empty window, a window
            longer than the model's context, or a non-positive ``batch_size``.
    """
    positive_int("batch_size", batch_size)
    layers = sorted(set(layers))
    if not layers:
        raise ConfigError("no layers given: name the layers whose key statistics you want")
    for layer in layers:
        check_layer(model, layer)
    if not windows or any(len(w) == 0 for w in windows):
        raise ConfigError("the windows are empty: give token-id lists of at least one token")
    limit = getattr(getattr(model, "config", None), "max_seq_len", None)
    longest = max(len(w) for w in windows)
    if limit is not None and longest > limit:
        raise ConfigError(
            f"a window has {longest} tokens, more than the model's context of {limit}: "
            "use a smaller window"
        )
    device = next(model.parameters()).device
    sums = {
        layer: torch.zeros(
            mlp_out_proj(model, layer).in_features,
            mlp_out_proj(model, layer).in_features,
            dtype=torch.float64,
            device=device,
        )
        for layer in layers
    }
    count = 0
    with eval_mode(model):
        for start in range(0, len(windows), batch_size):
            ids, mask = pad_batch(windows[start : start + batch_size], device)  # (B, T)
            captured = mlp_keys(model, ids, mask, layers)
            real = mask.reshape(-1).bool()  # (B*T,)
            count += int(real.sum())
            for layer in layers:
                k = captured[layer].reshape(-1, captured[layer].shape[-1])[real].float()  # (n, f)
                sums[layer] += (k.T @ k).double()  # one batch in fp32, the total in fp64
    return {layer: (total / count).float() for layer, total in sums.items()}


def model_fingerprint(model: nn.Module, tokenizer: Tokenizer | None = None) -> str:
    """A short hash naming a model (and tokenizer) for the statistics cache.

    Hashes the class name, every parameter's name, shape and dtype, and up to 4,096 evenly
    strided values of each, except the MLP output projections (``mlp.down_proj``), which
    editing changes and which no layer's keys depend on. With a tokenizer, also its vocabulary
    size and the ids of a probe sentence.
    """
    digest = hashlib.sha256(type(model).__name__.encode())
    for name, param in model.named_parameters():
        digest.update(f"{name}:{tuple(param.shape)}:{param.dtype}".encode())
        if name.endswith("mlp.down_proj.weight") or name.endswith("mlp.down_proj.bias"):
            continue
        flat = param.detach().reshape(-1)
        step = max(1, flat.numel() // 4096)
        digest.update(flat[::step].float().cpu().numpy().tobytes())
    if tokenizer is not None:
        probe = "The quick brown fox jumps over the lazy dog, 1234."
        digest.update(json.dumps([tokenizer.vocab_size, tokenizer.encode(probe)]).encode())
    return digest.hexdigest()[:16]


def stats_path(
    cache_dir: Path, fingerprint: str, layer: int, *, source: str, n_tokens: int, window: int
) -> Path:
    """The cache file of one layer's statistics."""
    return cache_dir / f"{fingerprint}-{source}-w{window}-n{n_tokens}-layer{layer}.safetensors"


def _read_cached(path: Path, expected: dict[str, str]) -> torch.Tensor | None:
    """The cached matrix, or ``None`` if the file is missing or was written for another key."""
    if not path.exists():
        return None
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    if any(metadata.get(k) != v for k, v in expected.items()):
        return None
    return load_file(str(path))["mom2"]


def cached_second_moments(
    model: nn.Module,
    tokenizer: Tokenizer,
    layers: Sequence[int],
    *,
    n_tokens: int = DEFAULT_N_TOKENS,
    source: str = DEFAULT_SOURCE,
    window: int = DEFAULT_WINDOW,
    batch_size: int = 8,
    cache_dir: Path | None = None,
) -> dict[int, torch.Tensor]:
    """:func:`second_moments` over the first ``n_tokens`` tokens of ``source``'s train split,
    read from the cache when present and computed (all missing layers in one pass) otherwise.

    Args:
        model: The model to measure.
        tokenizer: Its tokenizer.
        layers: The layers wanted.
        n_tokens: How many tokens to average over.
        source: A text source of :func:`~groundwork.corpus.load_documents`.
        window: Tokens per window (cut to the model's context if that is shorter).
        batch_size: Windows per forward pass.
        cache_dir: Where the files live; default ``<GROUNDWORK_HOME>/edit-stats``.

    Returns:
        ``{layer: C}``, each ``(d_ff, d_ff)`` float32 on the model's device.

    Raises:
        ConfigError: bad arguments (see :func:`second_moments`, :func:`text_windows`).
        DataError: the source holds fewer than ``n_tokens`` tokens.
    """
    positive_int("n_tokens", n_tokens)
    positive_int("window", window)
    for layer in layers:
        check_layer(model, layer)
    limit = getattr(getattr(model, "config", None), "max_seq_len", None)
    if limit is not None:
        window = min(window, limit)  # a short-context model reads shorter windows
    cache_dir = cache_dir if cache_dir is not None else corpus.home() / STATS_DIR
    fingerprint = model_fingerprint(model, tokenizer)
    device = next(model.parameters()).device
    found: dict[int, torch.Tensor] = {}
    missing: list[int] = []
    for layer in sorted(set(layers)):
        key = _metadata(fingerprint, layer, source=source, n_tokens=n_tokens, window=window)
        path = stats_path(
            cache_dir, fingerprint, layer, source=source, n_tokens=n_tokens, window=window
        )
        cached = _read_cached(path, key)
        if cached is None:
            missing.append(layer)
        else:
            found[layer] = cached.to(device)
    if missing:
        texts = (doc.text for doc in corpus.load_documents(source, split="train"))
        windows = text_windows(tokenizer, texts, n_tokens=n_tokens, window=window)
        computed = second_moments(model, windows, missing, batch_size=batch_size)
        for layer, C in computed.items():
            key = _metadata(fingerprint, layer, source=source, n_tokens=n_tokens, window=window)
            path = stats_path(
                cache_dir, fingerprint, layer, source=source, n_tokens=n_tokens, window=window
            )
            with atomic_path(path) as tmp:
                save_file({"mom2": C.detach().cpu().contiguous()}, str(tmp), metadata=key)
            found[layer] = C
    return found


def _metadata(
    fingerprint: str, layer: int, *, source: str, n_tokens: int, window: int
) -> dict[str, str]:
    """What a cached file must say about itself to be used (safetensors metadata: strings)."""
    return {
        "format": _FORMAT,
        "model": fingerprint,
        "layer": str(layer),
        "source": source,
        "n_tokens": str(n_tokens),
        "window": str(window),
    }
