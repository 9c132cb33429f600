r"""Beam search: keep the ``num_beams`` most likely partial sequences instead of one.

Greedy decoding commits to the single most likely next token; a token that looks worse now may
lead to a much more likely sequence later. Beam search (as used for sequence transduction by
Graves 2012, "Sequence Transduction with Recurrent Neural Networks", and for translation by
Sutskever et al. 2014) keeps the $W$ best prefixes ("beams") by total log-probability
$\log p(y_{1:t} \mid x) = \sum_{s \le t} \log p(y_s \mid y_{<s}, x)$. At each step it scores all
$W \cdot V$ one-token extensions and keeps the best.

Sums of log-probabilities only go down as a sequence grows, so beam search favours short
hypotheses. Finished hypotheses (those that emitted an end-of-sequence id, or reached
``max_new_tokens``) are therefore ranked by a length-normalised score (Wu et al. 2016, "Google's
Neural Machine Translation System", use a smoothed variant of the same idea):

$$\mathrm{score}(y) = \frac{\sum_{s=1}^{L} \log p(y_s \mid y_{<s}, x)}{L^{\alpha}}$$

where $L$ counts the *generated* tokens (the end-of-sequence token included, the prompt not) and
$\alpha$ is ``length_penalty``: $\alpha = 0$ ranks by raw log-probability, $\alpha = 1$ by the
mean log-probability per token, $\alpha > 1$ favours longer sequences even more.

The bookkeeping (which candidates may finish, when to stop) follows Hugging Face
``transformers``' ``_beam_search`` exactly, and the tests check token-for-token equality with
``generate(num_beams=...)``. Chapter 10 (Decoding) of the docs.
"""

import torch
import torch.nn.functional as F

from groundwork.errors import ConfigError
from groundwork.generate.config import GenerationConfig
from groundwork.generate.decode import check_prompts, context_window
from groundwork.models import GPT, Llama
from groundwork.nn.kv_cache import KVCache


def reorder_kv_cache(cache: KVCache, rows: torch.Tensor) -> None:
    """Make row ``i`` of ``cache`` a copy of its old row ``rows[i]`` (in place).

    Beam search calls this after each step: the surviving beams descend from some of the old ones
    (a beam may have several children, or none), so their cached keys and values must follow.
    The number of rows may change (one prompt row becomes ``num_beams`` rows after the prefill).

    Args:
        cache: The cache to reorder; its ``k`` and ``v`` are ``(n_layers, B, n_kv_heads, S, d)``.
        rows: ``(B_new,)`` int64 indices into the old batch dimension.

    >>> cache = KVCache(batch=2, n_layers=1, n_kv_heads=1, max_seq_len=1, d_head=1)
    >>> cache.k[0, :, 0, 0, 0] = torch.tensor([10.0, 20.0])
    >>> reorder_kv_cache(cache, torch.tensor([1, 1, 0]))
    >>> cache.k[0, :, 0, 0, 0].tolist()
    [20.0, 20.0, 10.0]
    """
    rows = rows.to(cache.k.device)
    cache.k = cache.k.index_select(1, rows)  # (n_layers, B_new, n_kv_heads, S, d)
    cache.v = cache.v.index_select(1, rows)  # (n_layers, B_new, n_kv_heads, S, d)


class FinishedBeams:
    """The ``num_beams`` best finished hypotheses seen so far, best first."""

    def __init__(self, num_beams: int, length_penalty: float) -> None:
        self.num_beams = num_beams
        self.length_penalty = length_penalty
        self.hypotheses: list[tuple[list[int], float]] = []

    def add(self, tokens: list[int], sum_log_probs: float) -> None:
        # score = sum log p / L ** alpha, L = generated tokens (end-of-sequence included)
        score = sum_log_probs / len(tokens) ** self.length_penalty
        self.hypotheses.append((tokens, score))
        self.hypotheses.sort(key=lambda h: h[1], reverse=True)  # stable: earlier wins ties
        del self.hypotheses[self.num_beams :]

    @property
    def full(self) -> bool:
        return len(self.hypotheses) == self.num_beams

    @property
    def worst_score(self) -> float:
        return self.hypotheses[-1][1]


# --8<-- [start:beam_search]
class Beams:
    """One input's beam search: its running beams and its finished hypotheses."""

    def __init__(self, config: GenerationConfig, ends: set[int], device: torch.device) -> None:
        self.config, self.ends = config, ends
        self.tokens: list[list[int]] = [[]]  # new tokens of each running beam; one at first
        self.scores = torch.zeros(1, device=device)  # (beams,) summed log-probabilities
        self.finished = FinishedBeams(config.num_beams, config.length_penalty)
        self.active = True

    def step(self, log_probs: torch.Tensor, step: int) -> list[int]:
        """Extend the running beams by one token, given their log-probabilities ``(beams, V)``.

        ``step`` is the generated length after it. Returns the parent (index among the previous
        beams) of each new running beam, or ``[]`` once the search has stopped (``active`` is
        then ``False``). Steps 1 to 5 of :func:`beam_search`.
        """
        c, W = self.config, self.config.num_beams
        V = log_probs.shape[-1]
        K = max(2, 1 + len(self.ends)) * W  # candidates kept per step
        # 1. every extension of every beam: s(y_1..t) = s(y_1..t-1) + log p(y_t | y_<t)
        scores = self.scores[:, None] + log_probs  # (beams, V)
        # 2. the K best over all beams, read back as (parent beam, token)
        top_scores, flat = scores.view(-1).topk(min(K, scores.numel()))  # (K,)
        parents, tokens = flat // V, flat % V
        # 3./4. split into finished hypotheses and the next running beams
        next_tokens: list[list[int]] = []
        next_parents: list[int] = []
        next_scores: list[float] = []
        for rank, (s, parent, token) in enumerate(
            zip(top_scores.tolist(), parents.tolist(), tokens.tolist(), strict=True)
        ):
            seq = self.tokens[parent] + [token]
            if token in self.ends or step == c.max_new_tokens:
                if rank < W:  # only the top W candidates may finish (as in transformers)
                    self.finished.add(seq, s)
            elif len(next_tokens) < W:
                next_tokens.append(seq)
                next_parents.append(parent)
                next_scores.append(s)
        # 5. stop?
        done = step == c.max_new_tokens or not next_tokens
        if not done and self.finished.full:  # HF's heuristic: see beam_search
            best_now = next_scores[0] / step**c.length_penalty
            done = c.early_stopping or best_now <= self.finished.worst_score
        if done:
            self.active = False
            return []
        self.tokens = next_tokens
        self.scores = torch.tensor(next_scores, device=self.scores.device)  # (beams,)
        return next_parents


@torch.no_grad()
def beam_search(
    model: GPT | Llama,
    prompt_ids: list[int],
    config: GenerationConfig,
    *,
    eos_ids: tuple[int, ...] | list[int] = (),
    pad_id: int = 0,
    use_cache: bool = True,
) -> list[tuple[list[int], float]]:
    r"""The ``config.num_return_sequences`` best continuations of ``prompt_ids`` by beam search.

    With $W$ = ``num_beams`` and $E$ end-of-sequence ids, each step:

    1. scores every extension of every running beam: $s(y_{1:t}) = s(y_{1:t-1}) +
       \log \mathrm{softmax}(z_t)_{y_t}$, a ``(beams, V)`` table;
    2. keeps the $K = \max(2, E + 1) \cdot W$ best of those candidates (enough that at least $W$
       of them do not end, since each beam has at most $E$ ending extensions);
    3. a candidate *finishes* if it ends with an end-of-sequence id or reaches
       ``max_new_tokens``; among the top $W$ candidates, finished ones join the finished set
       (which keeps the $W$ best by length-normalised score $s / L^{\alpha}$);
    4. the $W$ best unfinished candidates become the next running beams, and the KV cache rows
       are reordered to follow their parents;
    5. search stops when all candidates finish (``max_new_tokens``) or, once $W$ hypotheses
       are finished, when ``early_stopping`` is set, or (``early_stopping=False``) when the best
       running beam normalised at its current length, $s_{\mathrm{best}} / t^{\alpha}$, does
       not beat the worst finished score. That is Hugging Face's heuristic: it assumes a
       running beam's normalised score will not improve, exact for $\alpha = 0$ (sums of
       log-probabilities only decrease) but not always for $\alpha > 0$.

    The prompt is run once (one KV-cache row), then its cache row is copied to the beams. Past
    the model's context the window slides, as in :func:`~groundwork.generate.decode.generate`:
    each beam's last ``max_seq_len`` tokens are run again into an emptied cache.

    Args:
        model: ``GPT`` or ``Llama`` (``forward(idx, kv_cache=...) -> (B, T, V)`` logits).
        prompt_ids: The prompt's token ids (at least one).
        config: ``num_beams``, ``length_penalty``, ``early_stopping``,
            ``num_return_sequences``, ``max_new_tokens``; its ``stop_ids`` also end hypotheses.
            Sampling settings (temperature, top-k, ...) do not apply to beam search and are
            ignored, as in ``transformers`` without ``do_sample``.
        eos_ids: End-of-sequence ids; a hypothesis that emits one is finished.
        pad_id: Unused: running beams always have equal lengths and results are lists, so
            nothing needs padding. Accepted so every decoder takes the same keywords.
        use_cache: Decode with a KV cache (default) or rerun the whole sequence each step.

    Returns:
        ``[(new_tokens, score), ...]``, best first, ``num_return_sequences`` entries. The new
        tokens include the end-of-sequence id that finished them; the score is
        $\sum \log p / L^{\alpha}$ over them.

    Raises:
        ConfigError: Empty prompt, a prompt longer than the model's context, or more beams than
            vocabulary entries.
    """
    del pad_id  # see Args
    check_prompts(model, [prompt_ids])
    W = config.num_beams
    ends = set(eos_ids) | set(config.stop_ids)
    device = next(model.parameters()).device
    prompt = torch.tensor([prompt_ids], dtype=torch.long, device=device)  # (1, T0)
    total = len(prompt_ids) + config.max_new_tokens
    window = context_window(model) or total  # the most tokens one forward pass reads
    cache = model.new_kv_cache(1, min(total, window)) if use_cache else None
    logits = model(prompt, kv_cache=cache)[:, -1].float()  # (1, V)
    V = logits.shape[-1]
    if W > V:
        raise ConfigError(f"num_beams ({W}) is larger than the vocabulary ({V} tokens)")
    search = Beams(config, ends, device)
    for step in range(1, config.max_new_tokens + 1):  # step = generated length L after it
        parents = search.step(F.log_softmax(logits, dim=-1), step)  # steps 1 to 5
        if not search.active:
            break
        beams = search.tokens
        last = torch.tensor([[b[-1]] for b in beams], device=device)  # (beams, 1)
        slid = len(prompt_ids) + step > window
        if cache is not None and not slid:
            reorder_kv_cache(cache, torch.tensor(parents))
            logits = model(last, kv_cache=cache)[:, -1].float()  # (beams, V)
        else:  # the whole sequences, or their last `window` tokens into a fresh cache
            if cache is not None:
                cache = model.new_kv_cache(len(beams), window)
            seqs = [(prompt_ids + b)[-window:] for b in beams]
            logits = model(torch.tensor(seqs, device=device), kv_cache=cache)[:, -1].float()
    return search.finished.hypotheses[: config.num_return_sequences]


# --8<-- [end:beam_search]
