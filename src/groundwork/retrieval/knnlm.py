r"""kNN-LM: a language model interpolated with a nearest-neighbour search over its training text.

Khandelwal et al. 2020, "Generalization through Memorization: Nearest Neighbor Language Models".
Run the trained model over a text (the training split) once and store, for every predicted token,
(key, value) = (the final hidden state $f(c_t)$ of its context, the token $w_t$): the *datastore*.
At test time the context's hidden state $q$ is the query; its $k$ nearest keys $\mathcal{N}$
under squared L2 distance $d$ vote for their tokens, and the two distributions are mixed:

$$ p_{\mathrm{kNN}}(y \mid c) \propto \sum_{(k_i, v_i) \in \mathcal{N}} \mathbb{1}[v_i = y]
   e^{-d(k_i, q) / \tau}, \qquad
   p = \lambda\, p_{\mathrm{kNN}} + (1 - \lambda)\, p_{\mathrm{LM}}. $$

Nothing is trained: memorised contexts sharpen the model on what recurs, and $\lambda$ is tuned on
validation text. Windows follow :func:`~groundwork.evaluate.perplexity.sliding_windows`, batched
as :func:`~groundwork.evaluate.perplexity.token_nll` batches them, so $\lambda = 0$ reproduces its
perplexity bit for bit. Search is exact (torch) or FAISS (``faiss-cpu``, the extra
``groundwork[retrieval]``): flat, or an inverted file (IVF) for large datastores. Evaluating on the
datastore's own text is no test: each query's nearest key is itself, at distance 0.
Chapter 15 (Prompting, agents and retrieval).
"""

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from groundwork.checks import in_range, positive_int, positive_number
from groundwork.errors import ConfigError, DataError, EmptyCorpusError
from groundwork.evaluate.perplexity import model_max_len, sliding_windows
from groundwork.models.gpt import GPT
from groundwork.models.llama import Llama
from groundwork.runtime import eval_mode

Backend = Literal["exact", "faiss", "faiss-ivf"]
FAISS_MISSING = "FAISS is not installed: pip install 'groundwork[retrieval]' (faiss-cpu)"


def _decoder(model: nn.Module) -> GPT | Llama:
    if not isinstance(model, GPT | Llama):
        raise ConfigError(f"kNN-LM needs a GPT or Llama model, got {type(model).__name__}")
    return model


def context_vectors(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """The final hidden states ``(B, T, d_model)`` of ``ids`` ``(B, T)``, what ``lm_head`` reads:
    GPT's :meth:`~groundwork.models.gpt.GPT.hidden_states` (after ``ln_f``), Llama's decoder
    stack ``model.model`` (after the final RMSNorm). Any other model: ``ConfigError``."""
    lm = _decoder(model)
    if isinstance(lm, GPT):
        return lm.hidden_states(ids)  # (B, T, d)
    return lm.model(ids, attention_mask=None, position_ids=None, kv_cache=None)  # (B, T, d)


@dataclass
class Datastore:
    """The kNN-LM memory: key ``i`` is a context's final hidden state, value ``i`` the token
    that followed it."""

    keys: torch.Tensor
    """``(N, d_model)`` float32 (or float16 to halve the memory)."""
    values: torch.Tensor
    """``(N,)`` int64 next-token ids."""

    def __post_init__(self) -> None:
        k, v = tuple(self.keys.shape), tuple(self.values.shape)
        if len(k) != 2 or len(v) != 1 or k[0] != v[0]:
            raise ConfigError(f"a datastore needs keys (N, d) and values (N,), got {k} and {v}")

    def __len__(self) -> int:
        return int(self.values.shape[0])

    @property
    def dim(self) -> int:  # the model's d_model
        return int(self.keys.shape[1])


def _prepare(
    model: nn.Module, ids: torch.Tensor, context_len: int | None, stride: int | None, batch: int
) -> tuple[GPT | Llama, torch.Tensor, tuple[int, int]]:
    """Check the arguments: the model, the ids ``(N,)`` (on the CPU), ``(window, stride)``."""
    lm = _decoder(model)
    limit = model_max_len(lm)
    window = limit if context_len is None else positive_int("context_len", context_len)
    if not 2 <= window <= limit:
        raise ConfigError(f"context_len must be in [2, max_seq_len {limit}], got {window}")
    stride = window if stride is None else positive_int("stride", stride)
    if stride > window:
        raise ConfigError(f"stride must be between 1 and context_len ({window}), got {stride}")
    positive_int("batch_size", batch)
    if not isinstance(ids, torch.Tensor) or ids.dim() != 1 or ids.is_floating_point():
        raise ConfigError("token_ids must be a 1-D tensor of integer token ids")
    if ids.numel() < 2:
        raise EmptyCorpusError(f"need a stream of at least two tokens, got {ids.numel()}")
    low, high, vocab = int(ids.min()), int(ids.max()), lm.config.vocab_size
    if low < 0 or high >= vocab:
        raise DataError(f"token id {high if high >= vocab else low} outside [0, {vocab})")
    return lm, ids.long().cpu(), (window, stride)


# --8<-- [start:scored_states]
def _scored_states(
    model: GPT | Llama,
    ids: torch.Tensor,
    window: tuple[int, int],
    batch_size: int,
    device: torch.device | str | None,
    progress: bool,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per batch of windows, batched as :func:`~groundwork.evaluate.perplexity.token_nll` batches
    them (right-padded): the hidden states ``(B, T, d)``, the mask ``(B*T,)`` of the scored
    positions (row-major, as cross-entropy reads them) and their targets ``(n,)``."""
    device = next(model.parameters()).device if device is None else torch.device(device)
    windows = sliding_windows(len(ids), *window)
    batches = range(0, len(windows), batch_size)
    with torch.no_grad(), eval_mode(model):
        for i in tqdm(batches, desc="windows", unit="batch", disable=not progress):
            chunk = windows[i : i + batch_size]
            longest = max(end - begin for begin, end, _ in chunk)
            x = torch.zeros(len(chunk), longest, dtype=torch.long)  # (B, T)
            y = torch.full((len(chunk), longest), -100, dtype=torch.long)  # (B, T)
            for row, (begin, end, n_new) in enumerate(chunk):
                x[row, : end - begin] = ids[begin:end]
                # the hidden state at position j predicts token j + 1: the key of that target
                y[row, end - begin - 1 - n_new : end - begin - 1] = ids[end - n_new : end]
            mask = (y != -100).reshape(-1)  # (B*T,)
            yield context_vectors(model, x.to(device)), mask, y.reshape(-1)[mask]


# --8<-- [end:scored_states]


# --8<-- [start:build_datastore]
def build_datastore(
    model: nn.Module,
    token_ids: torch.Tensor,
    *,
    context_len: int | None = None,
    stride: int | None = None,
    batch_size: int = 8,
    max_entries: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> Datastore:
    """One (hidden state, next token) pair for every token the sliding windows score.

    Args:
        model: A GPT or Llama (see :func:`context_vectors`).
        token_ids: The stream ``(N,)``, e.g. the training split's documents each followed by
            the end-of-text token, as ``groundwork data prepare`` joins them.
        context_len: Tokens per window; default the model's ``max_seq_len``.
        stride: Tokens each window moves by; default ``context_len`` (disjoint chunks, whose
            first tokens get no key). A smaller stride gives each key more context.
        batch_size: Windows per forward pass.
        max_entries: Keep at most this many pairs (the stream's first ones).
        dtype: Of the keys: ``torch.float32``, or ``torch.float16`` for half the memory.
        device, progress: Where the model runs (default its device); a progress bar.

    Raises:
        ConfigError: a bad window, stride or model. EmptyCorpusError: fewer than two tokens.
    """
    lm, ids, window = _prepare(model, token_ids, context_len, stride, batch_size)
    limit = math.inf if max_entries is None else positive_int("max_entries", max_entries)
    keys: list[torch.Tensor] = []
    values: list[torch.Tensor] = []
    for h, mask, target in _scored_states(lm, ids, window, batch_size, device, progress):
        keys.append(h.reshape(-1, h.shape[-1])[mask.to(h.device)].to("cpu", dtype))  # (n, d)
        values.append(target)  # (n,)
        if sum(len(v) for v in values) >= limit:
            break
    n = min(sum(len(v) for v in values), limit)
    return Datastore(torch.cat(keys)[:n].clone(), torch.cat(values)[:n].clone())


# --8<-- [end:build_datastore]


# --8<-- [start:exact_search]
class ExactSearch:
    """Brute force: every query against every key, in chunks of ``chunk_size`` keys.

    $\\lVert q - k \\rVert^2 = \\lVert q \\rVert^2 - 2\\, q \\cdot k + \\lVert k \\rVert^2$: one
    matrix product per chunk, then the running top-k of the negated distance.
    """

    def __init__(self, keys: torch.Tensor, *, chunk_size: int = 8192) -> None:
        self.keys = keys
        self.chunk_size = positive_int("chunk_size", chunk_size)

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        k = _check_query(queries, self.keys.shape[0], self.keys.shape[1], k)
        q = queries.float()  # (B, d)
        q_sq = (q * q).sum(-1, keepdim=True)  # (B, 1)
        best_d, best_i = torch.empty(len(q), 0), torch.empty(len(q), 0, dtype=torch.long)  # (B, 0)
        for start in range(0, len(self.keys), self.chunk_size):
            kc = self.keys[start : start + self.chunk_size].float()  # (C, d)
            d = q_sq - 2 * q @ kc.T + (kc * kc).sum(-1)[None]  # (B, C) squared L2
            d = d.clamp_min_(0.0)  # rounding can make a zero distance slightly negative
            top = torch.topk(-d, min(k, d.shape[1]), dim=1)  # nearest of this chunk
            cand_d = torch.cat([best_d, -top.values], dim=1)  # (B, <= 2k)
            cand_i = torch.cat([best_i, top.indices + start], dim=1)
            keep = torch.topk(-cand_d, min(k, cand_d.shape[1]), dim=1).indices  # (B, k)
            best_d, best_i = cand_d.gather(1, keep), cand_i.gather(1, keep)
        return best_d, best_i


# --8<-- [end:exact_search]


class FaissSearch:
    """FAISS on the CPU: ``IndexFlatL2`` (exact, squared L2) or, with ``nlist``, ``IndexIVFFlat``
    (k-means into ``nlist`` cells; a query searches its ``nprobe`` nearest cells: approximate,
    much faster on large datastores)."""

    def __init__(
        self, keys: torch.Tensor, *, nlist: int | None = None, nprobe: int = 8, seed: int = 0
    ) -> None:
        try:
            import faiss  # type: ignore[import-not-found,import-untyped,unused-ignore]
        except ImportError as e:
            raise ConfigError(FAISS_MISSING) from e
        self.size, self.dim = int(keys.shape[0]), int(keys.shape[1])
        x = keys.float().contiguous().numpy()  # (N, d) float32, what FAISS takes
        self.index: Any
        if nlist is None:
            self.index = faiss.IndexFlatL2(self.dim)
        else:
            if positive_int("nlist", nlist) > self.size:
                raise ConfigError(f"nlist {nlist} is more than the {self.size} keys")
            quantizer = faiss.IndexFlatL2(self.dim)
            self.index = faiss.IndexIVFFlat(quantizer, self.dim, nlist)
            self.index.cp.seed = seed
            self.index.train(x)
            self.index.nprobe = positive_int("nprobe", nprobe)
        self.index.add(x)

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        k = _check_query(queries, self.size, self.dim, k)
        d, i = self.index.search(queries.float().contiguous().numpy(), k)  # (B, k) each
        d, i = torch.from_numpy(d), torch.from_numpy(i).long()
        missing = i < 0  # IVF: fewer than k keys in the probed cells
        return d.masked_fill(missing, math.inf), i.masked_fill(missing, 0)


def _check_query(queries: torch.Tensor, size: int, dim: int, k: int) -> int:
    if queries.dim() != 2 or queries.shape[1] != dim:
        raise ConfigError(f"queries must be (B, {dim}) like the keys, got {tuple(queries.shape)}")
    k = positive_int("k", k)
    if k > size:
        raise ConfigError(f"k = {k} neighbours asked of a datastore of {size} keys")
    return k


Searcher = ExactSearch | FaissSearch
"""A nearest-neighbour index over a datastore's keys: ``search(queries (B, d), k)`` returns the
squared L2 distances ``(B, k)``, ascending, and the indices ``(B, k)`` of the nearest keys."""


def make_searcher(
    datastore: Datastore, backend: Backend = "exact", *, nlist: int = 1024, nprobe: int = 8
) -> Searcher:
    """An index over ``datastore.keys``: ``"exact"`` (torch), ``"faiss"`` (flat) or
    ``"faiss-ivf"`` (``nlist`` cells, ``nprobe`` searched). ``ConfigError`` for an unknown
    backend, or FAISS not installed."""
    if backend == "exact":
        return ExactSearch(datastore.keys)
    if backend == "faiss":
        return FaissSearch(datastore.keys)
    if backend == "faiss-ivf":
        return FaissSearch(datastore.keys, nlist=min(nlist, len(datastore)), nprobe=nprobe)
    raise ConfigError(f"backend must be 'exact', 'faiss' or 'faiss-ivf', got {backend!r}")


# --8<-- [start:knn_log_probs]
def knn_log_probs(
    distances: torch.Tensor, neighbour_values: torch.Tensor, vocab_size: int, temperature: float
) -> torch.Tensor:
    r"""$\log p_{\mathrm{kNN}}$ ``(B, vocab_size)`` from each query's ``k`` neighbours.

    $p_{\mathrm{kNN}}(y) = \sum_{i: v_i = y} w_i$, $w = \mathrm{softmax}(-d / \tau)$: neighbours
    with the same token add up; a token no neighbour holds gets $-\infty$.

    >>> knn_log_probs(torch.tensor([[0.0, 0.0, 1e9]]), torch.tensor([[2, 2, 0]]), 3, 1.0).exp()
    tensor([[0., 0., 1.]])

    ``distances`` ``(B, k)`` are squared L2 distances, ``neighbour_values`` ``(B, k)`` the
    neighbours' tokens, ``vocab_size`` the size of the output; a larger $\tau$ (``temperature``)
    flattens the weights.
    """
    positive_number("temperature", temperature)
    if distances.dim() != 2 or (shape := distances.shape) != neighbour_values.shape:
        raise ConfigError(f"distances {shape}, neighbour_values {neighbour_values.shape}")
    log_w = torch.log_softmax(-distances.float() / temperature, dim=-1)  # (B, k)
    p = torch.zeros(distances.shape[0], vocab_size, device=distances.device)  # (B, V)
    p.scatter_add_(1, neighbour_values.long(), log_w.exp())  # sum the w_i of each token
    return p.log()  # (B, V); log 0 = -inf


# --8<-- [end:knn_log_probs]


def _knn_target_log_probs(
    distances: torch.Tensor, values: torch.Tensor, targets: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``knn_log_probs(...)[b, targets[b]]`` ``(B,)`` without the ``(B, V)`` matrix: the
    log-sum-exp of the scores of the neighbours holding the target, minus that of all."""
    scores = -distances.float() / temperature  # (B, k)
    hit = values == targets[:, None]  # (B, k)
    return torch.logsumexp(scores.masked_fill(~hit, -math.inf), -1) - torch.logsumexp(scores, -1)


# --8<-- [start:interpolate]
def interpolate(
    lm_log_probs: torch.Tensor, knn_log_probs: torch.Tensor, lam: float
) -> torch.Tensor:
    r"""$\log\big(\lambda\, p_{\mathrm{kNN}} + (1 - \lambda)\, p_{\mathrm{LM}}\big)$ in log
    space: $\mathrm{logsumexp}(\log(1 - \lambda) + \log p_{\mathrm{LM}},
    \log\lambda + \log p_{\mathrm{kNN}})$. ``lam == 0`` returns (a copy of) ``lm_log_probs``
    bit for bit, ``lam == 1`` ``knn_log_probs``; ``ConfigError`` for ``lam`` outside ``[0, 1]``
    or different shapes."""
    lam = in_range("lam", lam, 0.0, 1.0)
    if (shape := lm_log_probs.shape) != knn_log_probs.shape:
        raise ConfigError(f"log-probs of different shapes: {shape}, {knn_log_probs.shape}")
    if lam == 0.0:
        return lm_log_probs.clone()
    if lam == 1.0:
        return knn_log_probs.clone()
    lm = lm_log_probs + math.log1p(-lam)  # log((1 - lam) p_LM)
    knn = knn_log_probs.to(lm.dtype) + math.log(lam)  # log(lam p_kNN)
    return torch.logaddexp(lm, knn)


# --8<-- [end:interpolate]


@dataclass
class KNNLMResult:
    """One ``(lam, k, temperature)`` over the scored ``tokens``: the mean negative log-likelihood
    (``nats_per_token``), its exponential (``perplexity``) and ``bits_per_token``."""

    lam: float
    k: int
    temperature: float
    tokens: int
    nats_per_token: float
    perplexity: float
    bits_per_token: float


@dataclass
class KNNLMScores:
    """What one pass of the model and the search over a stream leaves, enough to score any
    ``lam``, any ``k`` up to the searched one and any temperature without running either again:
    per scored token its ``lm_log_probs`` ``(n,)``, the ``distances`` ``(n, k)`` (ascending) and
    tokens ``neighbour_values`` ``(n, k)`` of its neighbours, its ``targets`` ``(n,)``; and per
    batch of windows the ``layout``: the ``(B*T,)`` mask of the scored positions, to sum a batch
    as :func:`~groundwork.evaluate.perplexity.token_nll` does (cross-entropy's reduction)."""

    lm_log_probs: torch.Tensor
    distances: torch.Tensor
    neighbour_values: torch.Tensor
    targets: torch.Tensor
    layout: list[torch.Tensor]

    # --8<-- [start:knnlm_results]
    def results(
        self, lambdas: Sequence[float], *, k: int | None = None, temperature: float = 1.0
    ) -> dict[float, KNNLMResult]:
        """Perplexity of the interpolated model for every ``lam`` of ``lambdas``, with the
        ``k`` (default all searched) nearest neighbours."""
        k = self.distances.shape[1] if k is None else positive_int("k", k)
        if k > self.distances.shape[1]:
            raise ConfigError(f"k = {k} but only {self.distances.shape[1]} neighbours searched")
        positive_number("temperature", temperature)
        knn = _knn_target_log_probs(
            self.distances[:, :k], self.neighbour_values[:, :k], self.targets, temperature
        )  # (n,)
        out = {}
        for lam in lambdas:
            log_p = interpolate(self.lm_log_probs, knn, lam)  # (n,)
            total, start = 0.0, 0
            for mask in self.layout:  # one batch of windows at a time, summed as token_nll does
                n = int(mask.sum())
                rows = torch.zeros(len(mask), 1)  # (B*T, 1): "logits" of one class
                rows[mask, 0] = log_p[start : start + n]
                target = torch.where(mask, 0, -100)  # (B*T,)
                total += F.nll_loss(rows, target, ignore_index=-100, reduction="sum").item()
                start += n
            nats = total / (n := len(self.targets))
            out[lam] = KNNLMResult(lam, k, temperature, n, nats, math.exp(nats), nats / math.log(2))
        return out

    # --8<-- [end:knnlm_results]


def knnlm_scores(
    model: nn.Module,
    datastore: Datastore,
    token_ids: torch.Tensor,
    *,
    k: int = 16,
    searcher: Searcher | None = None,
    context_len: int | None = None,
    stride: int | None = None,
    batch_size: int = 8,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> KNNLMScores:
    """Run the model over ``token_ids`` in sliding windows and look up each scored token's
    context: the LM's log-probability of the token and its ``k`` nearest keys.

    Args:
        model, datastore, token_ids: A GPT or Llama, a :func:`build_datastore`, ids ``(N,)``.
        k: Neighbours per query.
        searcher: An index over ``datastore.keys`` (:func:`make_searcher`); default exact.
        context_len, stride, batch_size, device, progress: As in :func:`build_datastore`.

    Raises:
        ConfigError: keys whose dimension is not the model's, a bad ``k`` or window; and as
            :func:`build_datastore`.
    """
    lm, ids, window = _prepare(model, token_ids, context_len, stride, batch_size)
    if datastore.dim != (d_model := lm.config.d_model):
        raise ConfigError(f"datastore keys have dimension {datastore.dim}, the model {d_model}")
    searcher = ExactSearch(datastore.keys) if searcher is None else searcher
    lm_lp, dist, nbr, tgt, layout = [], [], [], [], []
    for h, mask, target in _scored_states(lm, ids, window, batch_size, device, progress):
        logits = lm.lm_head(h).float()  # (B, T, V): model(x).float(), as token_nll computes it
        log_p = F.log_softmax(logits.reshape(-1, logits.shape[-1]), dim=-1)  # (B*T, V)
        scored = mask.nonzero().squeeze(1).to(h.device)  # (n,)
        lm_lp.append(log_p[scored, target.to(h.device)].cpu())  # (n,)
        d, i = searcher.search(h.reshape(-1, h.shape[-1])[scored].float().cpu(), k)  # (n, k)
        dist.append(d)
        nbr.append(datastore.values[i])  # (n, k) the neighbours' tokens
        tgt.append(target)
        layout.append(mask)
    return KNNLMScores(torch.cat(lm_lp), torch.cat(dist), torch.cat(nbr), torch.cat(tgt), layout)


def knnlm_evaluate(
    model: nn.Module,
    datastore: Datastore,
    token_ids: torch.Tensor,
    *,
    lambdas: Sequence[float] = (0.0, 0.25),
    k: int = 16,
    temperature: float = 1.0,
    context_len: int | None = None,
    stride: int | None = None,
    batch_size: int = 8,
    backend: Backend = "exact",
    nlist: int = 1024,
    nprobe: int = 8,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> dict[float, KNNLMResult]:
    """Perplexity of the kNN-LM on ``token_ids`` for every ``lam`` of ``lambdas``.

    The model and the search run once; each ``lam`` only re-mixes the two log-probabilities of
    the scored tokens. ``lam = 0`` is the model alone and equals
    :func:`~groundwork.evaluate.perplexity.perplexity` with the same windows exactly.

    Args:
        datastore: From :func:`build_datastore` on other text than ``token_ids`` (on its own
            text each query retrieves itself, at distance 0).
        lambdas: Interpolation weights of the kNN distribution, each in ``[0, 1]``.
        temperature: Softmax temperature of the negated distances.
        backend, nlist, nprobe: The index (:func:`make_searcher`).
        model, token_ids, k, context_len, stride, batch_size, device, progress: As in
            :func:`knnlm_scores`.

    Raises:
        ConfigError: a bad ``lam``, temperature or backend, FAISS missing; as :func:`knnlm_scores`.

    Example:
        >>> store = build_datastore(model, train_ids)  # doctest: +SKIP
        >>> knnlm_evaluate(model, store, val_ids, lambdas=[0, 0.25])[0.25]  # doctest: +SKIP
    """
    for lam in lambdas:
        in_range("lam", lam, 0.0, 1.0)
    positive_number("temperature", temperature)  # before the long work
    scores = knnlm_scores(
        model,
        datastore,
        token_ids,
        k=k,
        searcher=make_searcher(datastore, backend, nlist=nlist, nprobe=nprobe),
        context_len=context_len,
        stride=stride,
        batch_size=batch_size,
        device=device,
        progress=progress,
    )
    return scores.results(lambdas, temperature=temperature)
