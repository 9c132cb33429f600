r"""Calibration data for post-training quantisation, and the hooks that read a model's activations.

GPTQ and AWQ do not train: they look at what flows *into* each linear layer on a few hundred
real sequences and choose the rounding (GPTQ) or a per-channel scale (AWQ) that keeps the layer's
*output* close. This module supplies the three things both need:

* **Real text, tokenised.** :func:`calibration_batches` cuts windows of ``seq_len`` tokens at
  random places of random documents of a text source's *train* split (the ``wiki-sample``
  Wikipedia articles by default), as GPTQ's reference code does with C4;
  :func:`heldout_tokens` concatenates the *validation* split's documents (joined by a blank
  line, as GPTQ's WikiText-2 evaluation) and cuts it into consecutive rows. The splits are
  disjoint by document (:mod:`groundwork.corpus.splits`), so a quantiser is never scored on
  the text it was calibrated on. :func:`perplexity` scores such rows with
  :func:`groundwork.evaluate.perplexity.token_nll` (each row one window, its first token
  unscored).
* **Linear-layer statistics.** :class:`LinearInputs` hooks a set of ``nn.Linear`` layers and
  accumulates, over every token :math:`x \in \mathbb{R}^{d_{in}}` fed to each,

  .. math:: H = \frac{2}{N}\sum_{n=1}^{N} x_n x_n^\top = \frac{2}{N} X X^\top \qquad
     \text{(GPTQ's Hessian of } \lVert W X - \hat W X\rVert_2^2\text{)},
     \qquad \bar{s}_j = \frac{1}{N}\sum_n |x_{n,j}| \qquad \text{(AWQ's channel magnitude)},

  and optionally keeps the inputs themselves (:func:`capture_inputs`).
* **Block-by-block replay.** Both methods quantise one decoder block at a time, running the
  calibration set through that block only. :func:`decoder_blocks` finds the stack of blocks
  and :func:`block_inputs` records what enters the first one (hidden states and the keyword
  arguments: RoPE tables, mask), so each block can be rerun on its own with
  :func:`run_block`.

References:
    - Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for Generative
      Pre-trained Transformers" (calibration: 128 random 2048-token segments of C4).
    - Lin et al. 2023, "AWQ: Activation-aware Weight Quantization for LLM Compression and
      Acceleration" (128 samples of the Pile validation set).
    - Docs: chapter 18, "Efficient inference and compression".
"""

import contextlib
import math
import random
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from groundwork.errors import ConfigError, DataError
from groundwork.evaluate.perplexity import token_nll
from groundwork.runtime import eval_mode
from groundwork.tokenize.base import Tokenizer

BlockInput = tuple[torch.Tensor, dict[str, Any]]
"""What one calibration batch looks like at a block's entrance: hidden states ``(B, T, d)`` and
the keyword arguments the block is called with."""


def _check_sizes(n_sequences: int, seq_len: int) -> None:
    if n_sequences < 1:
        raise ConfigError(f"n_sequences must be at least 1, got {n_sequences}")
    if seq_len < 2:
        raise ConfigError(f"seq_len must be at least 2 tokens, got {seq_len}")


def calibration_batches(
    tokenizer: Tokenizer,
    n_sequences: int = 128,
    seq_len: int = 512,
    source: str = "wiki-sample",
    seed: int = 0,
    *,
    batch_size: int = 1,
) -> list[torch.Tensor]:
    """Random windows of real text from the train split of ``source``, as token ids.

    Each window is ``seq_len`` consecutive tokens of one document, at a random offset of a
    random document long enough to hold it (GPTQ's C4 sampler); windows may overlap.

    Args:
        tokenizer: Encodes the documents.
        n_sequences: Number of windows.
        seq_len: Tokens per window.
        source: A text source (``groundwork data list``); fetched on first use.
        seed: Seeds the choice of documents and offsets.
        batch_size: Windows stacked per returned tensor (the last may hold fewer).

    Returns:
        ``ceil(n_sequences / batch_size)`` tensors of shape ``(batch_size, seq_len)`` (int64).

    Raises:
        ConfigError: a non-positive size.
        DataError: no document of the split has ``seq_len`` tokens.
    """
    from groundwork import corpus

    _check_sizes(n_sequences, seq_len)
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    docs = corpus.load_documents(source, split="train")
    rng = random.Random(seed)
    encoded: dict[int, list[int]] = {}
    windows: list[list[int]] = []
    tries = 0
    while len(windows) < n_sequences:
        tries += 1
        if tries > 100 * n_sequences + 1000:
            raise DataError(
                f"no document of {source!r} (train split) has {seq_len} tokens: "
                "choose a shorter seq_len"
            )
        i = rng.randrange(len(docs))
        if i not in encoded:
            encoded[i] = tokenizer.encode(docs[i].text)
        ids = encoded[i]
        if len(ids) < seq_len:
            continue
        start = rng.randrange(len(ids) - seq_len + 1)
        windows.append(ids[start : start + seq_len])
    rows = torch.tensor(windows, dtype=torch.long)  # (n_sequences, seq_len)
    return list(rows.split(batch_size))


def heldout_tokens(
    tokenizer: Tokenizer,
    n_sequences: int = 64,
    seq_len: int = 512,
    source: str = "wiki-sample",
) -> torch.Tensor:
    """The first ``n_sequences * seq_len`` tokens of the validation split of ``source`` (its
    documents joined by ``"\\n\\n"``), as ``n_sequences`` consecutive rows: text disjoint from
    :func:`calibration_batches`' (the splits are disjoint by document).

    Returns:
        ``(n_sequences, seq_len)`` int64 token ids.

    Raises:
        ConfigError: a non-positive size.
        DataError: the split holds fewer tokens than asked for.
    """
    from groundwork import corpus

    _check_sizes(n_sequences, seq_len)
    docs = corpus.load_documents(source, split="val")
    ids = tokenizer.encode("\n\n".join(d.text for d in docs))
    needed = n_sequences * seq_len
    if len(ids) < needed:
        raise DataError(
            f"the val split of {source!r} holds {len(ids)} tokens, fewer than the "
            f"{n_sequences} x {seq_len} = {needed} asked for"
        )
    return torch.tensor(ids[:needed], dtype=torch.long).view(n_sequences, seq_len)  # (N, T)


def perplexity(model: nn.Module, tokens: torch.Tensor, *, batch_size: int = 8) -> float:
    """Perplexity of ``model`` on the rows of ``tokens`` ``(N, T)``, each scored as one window
    (its first token has no context and is not scored): ``exp`` of the mean NLL over the
    ``N (T - 1)`` predicted tokens. This is GPTQ's evaluation protocol (disjoint windows of a
    concatenated test set), computed by :func:`groundwork.evaluate.perplexity.token_nll`."""
    if tokens.dim() != 2 or tokens.shape[1] < 2:
        raise ConfigError(f"tokens must be (N, T) with T >= 2, got shape {tuple(tokens.shape)}")
    T = tokens.shape[1]
    with eval_mode(model):
        total, count = token_nll(
            model, tokens.reshape(-1).tolist(), window=T, stride=T, batch_size=batch_size
        )
    return math.exp(total / count)


def check_calibration(batches: Sequence[torch.Tensor]) -> None:
    """Raise :class:`DataError` unless ``batches`` holds at least one non-empty ``(B, T)``
    tensor of token ids."""
    if len(batches) == 0 or all(b.numel() == 0 for b in batches):
        raise DataError(
            "no calibration data: give at least one (B, T) batch of token ids "
            "(see groundwork.compress.calibration.calibration_batches)"
        )
    for b in batches:
        if b.dim() != 2:
            raise DataError(f"calibration batches must be (B, T) token ids, got {tuple(b.shape)}")


class LinearInputs:
    """Accumulates statistics of the inputs of some ``nn.Linear`` layers while active.

    ``with LinearInputs(layers) as stats: model(x)`` leaves, for each layer name,
    ``stats.hessian[name]`` :math:`= \\frac{2}{N} X X^\\top` ``(d_in, d_in)`` (float32),
    ``stats.abs_mean[name]`` the mean :math:`|x_j|` per input channel ``(d_in,)``,
    ``stats.n_tokens[name]`` :math:`N`, and, with ``keep_inputs=True``, ``stats.inputs[name]``
    the inputs themselves as a list of ``(..., d_in)`` tensors (one per call).

    With ``sink_weight`` :math:`\\omega \\ne 1`, the first position of every sequence (inputs
    shaped ``(B, T, d_in)``) counts :math:`\\omega` times in :math:`H`:
    :math:`H = 2 \\sum_n \\omega_n x_n x_n^\\top / \\sum_n \\omega_n`. A window's first token
    becomes the model's *attention sink* (Xiao et al. 2023): every later token attends to it,
    so an error in its keys and values reaches every output, although it is only one token in
    ``T`` of the plain average. (Not part of GPTQ; see :func:`groundwork.compress.gptq.
    quantize_model_gptq`.)

    Args:
        layers: The layers to watch, by name.
        hessian: Accumulate :math:`H` (``d_in^2`` memory per layer).
        keep_inputs: Keep every input (detached).
        sink_weight: Weight of each sequence's first token in :math:`H`.
    """

    def __init__(
        self,
        layers: dict[str, nn.Linear],
        *,
        hessian: bool = True,
        keep_inputs: bool = False,
        sink_weight: float = 1.0,
    ) -> None:
        if sink_weight <= 0:
            raise ConfigError(f"sink_weight must be positive, got {sink_weight}")
        self.layers = layers
        self.want_hessian, self.keep_inputs = hessian, keep_inputs
        self.sink_weight = sink_weight
        self.hessian: dict[str, torch.Tensor] = {}
        self.abs_mean: dict[str, torch.Tensor] = {}
        self.n_tokens: dict[str, int] = {}
        self.inputs: dict[str, list[torch.Tensor]] = {}
        self._weight: dict[str, float] = {}  # sum of the token weights in H so far
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook(self, name: str) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0].detach()
            if self.keep_inputs:
                self.inputs.setdefault(name, []).append(x)
            omega = torch.ones(x.shape[:-1], device=x.device)  # (B, T) or (n,) token weights
            if self.sink_weight != 1.0 and x.dim() == 3:
                omega[:, 0] = self.sink_weight
            x = x.reshape(-1, x.shape[-1]).float()  # (n, d_in)
            omega = omega.reshape(-1, 1)  # (n, 1)
            n, seen = x.shape[0], self.n_tokens.get(name, 0)
            total = seen + n
            # Running means, so H stays (2/N) X X^T however many batches come.
            mean_abs = x.abs().sum(0) / total  # (d_in,)
            if name in self.abs_mean:
                mean_abs += self.abs_mean[name] * (seen / total)
            self.abs_mean[name] = mean_abs
            if self.want_hessian:
                weight_seen = self._weight.get(name, 0.0)
                weight_total = weight_seen + float(omega.sum())
                h = (2.0 / weight_total) * ((x * omega).T @ x)  # (d_in, d_in)
                if name in self.hessian:
                    h += self.hessian[name] * (weight_seen / weight_total)
                self.hessian[name] = h
                self._weight[name] = weight_total
            self.n_tokens[name] = total

        return hook

    def __enter__(self) -> "LinearInputs":
        for name, layer in self.layers.items():
            self._handles.append(layer.register_forward_pre_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


@torch.no_grad()
def capture_inputs(
    model: nn.Module, layer_names: Iterable[str], batches: Sequence[torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The inputs each named linear layer of ``model`` receives on ``batches``, as one
    ``(N, d_in)`` matrix per layer (``N`` = tokens over all batches).

    Raises:
        ConfigError: a name that is not an ``nn.Linear`` of ``model``.
        DataError: no calibration data.
    """
    check_calibration(batches)
    modules = dict(model.named_modules())
    layers: dict[str, nn.Linear] = {}
    for name in layer_names:
        module = modules.get(name)
        if not isinstance(module, nn.Linear):
            raise ConfigError(f"{name!r} is not an nn.Linear of the model")
        layers[name] = module
    with eval_mode(model), LinearInputs(layers, hessian=False, keep_inputs=True) as stats:
        for ids in batches:
            model(ids.to(_device(model)))
    return {
        name: torch.cat([x.reshape(-1, x.shape[-1]) for x in stats.inputs[name]])  # (N, d_in)
        for name in layers
    }


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def decoder_blocks(model: nn.Module) -> nn.ModuleList:
    """The stack of decoder blocks: the ``nn.ModuleList`` named ``layers`` (Llama:
    ``model.layers``), ``blocks`` (GPT) or ``h``.

    Raises:
        ConfigError: the model has no such list.
    """
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and name.split(".")[-1] in ("layers", "blocks", "h"):
            return module
    raise ConfigError(
        f"{type(model).__name__} has no list of decoder blocks (an nn.ModuleList named "
        "'layers', 'blocks' or 'h'): block-wise quantisation cannot find its blocks"
    )


class _StopForward(Exception):
    """Raised by the capture hook once the first block's input is recorded."""


@torch.no_grad()
def block_inputs(model: nn.Module, batches: Sequence[torch.Tensor]) -> list[BlockInput]:
    """What enters the first decoder block for each calibration batch: hidden states
    ``(B, T, d)`` and the block's keyword arguments (RoPE tables, mask, ...). The forward pass
    stops there (as GPTQ's ``Catcher``), so the rest of the model is not run.

    Raises:
        DataError: no calibration data.
    """
    check_calibration(batches)
    first = decoder_blocks(model)[0]
    captured: list[BlockInput] = []

    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        captured.append((args[0].detach(), dict(kwargs)))
        raise _StopForward

    handle = first.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with eval_mode(model):
            for ids in batches:
                with contextlib.suppress(_StopForward):
                    model(ids.to(_device(model)))
    finally:
        handle.remove()
    return captured


@torch.no_grad()
def run_block(block: nn.Module, inputs: Sequence[BlockInput]) -> list[BlockInput]:
    """``block`` applied to every recorded input; the outputs, with the same keyword arguments,
    are what enters the next block."""
    outputs = []
    for x, kwargs in inputs:
        y = block(x, **kwargs)
        outputs.append((y[0] if isinstance(y, tuple) else y, kwargs))
    return outputs


def iterate_linears(
    block: nn.Module, include: dict[str, nn.Linear], prefix: str
) -> Iterator[tuple[str, nn.Linear]]:
    """The linear layers of ``block`` that are in ``include`` (keyed by their qualified name in
    the whole model; ``prefix`` is the block's), in module order."""
    for name, module in block.named_modules():
        full = f"{prefix}.{name}" if name else prefix
        if full in include and isinstance(module, nn.Linear):
            yield full, module
