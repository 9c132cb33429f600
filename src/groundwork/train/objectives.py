r"""Training objectives: causal language modelling with teacher forcing (and, below, masked LM,
next-sentence prediction and sequence to sequence, for encoders and encoder-decoders).

A causal LM is trained to predict token ``t+1`` from tokens ``<= t``. With teacher forcing every
position of a sequence is a training example at once: the model reads the true prefix (never its own
samples), and the targets are the inputs shifted left by one. The loss is the mean cross-entropy

$$ \mathcal{L} = -\frac{1}{N} \sum_{t} \log p_\theta(x_{t+1} \mid x_{\le t}) $$

in nats per token; dividing the summed nats by ``ln 2`` and by the number of UTF-8 bytes of the
text gives bits per byte, which compares models with different tokenizers.

Chapter 8 (Training) derives this; chapter 1 (Language models) relates it to perplexity.

**Objectives for the engine.** The training engine (:func:`groundwork.train.engine.train`) knows
nothing of what is learned: it hands each batch to an *objective*, a callable
``objective(model, batch) -> LossOutput`` that runs the model and returns the mean loss (a scalar
tensor), how many items the mean is over, and optionally the input tokens read and extra metrics
to log. For decoders and classifiers:

* :class:`CausalLMObjective`: batches ``(x, y)`` of ``(B, T)`` token ids and next tokens; the
  model maps ``x`` to ``(B, T, V)`` logits; the loss is :func:`causal_lm_loss`.
* :class:`ClassificationObjective`: batches ``(ids (B, L), lengths (B,), labels (B,))``; the
  model is called as ``model(ids, lengths)`` and gives ``(B, C)`` logits; the loss is the mean
  cross-entropy over the examples.

**Encoder and encoder-decoder pretraining** (chapter 6). Their batches are dicts of ``(B, T)``
tensors with ``transformers``' key names, made by
:class:`~groundwork.train.encoder_data.BertPretrainingData` and
:class:`~groundwork.train.encoder_data.SpanCorruptionData`:

* :class:`MaskedLMObjective` (BERT's masked LM, :mod:`groundwork.train.masking`): batch keys
  ``input_ids``, ``attention_mask``, ``labels`` and optionally ``token_type_ids``; the model is
  called as ``model(input_ids, attention_mask=..., token_type_ids=...)`` (``token_type_ids``
  only when the batch has it) and returns the ``(B, T, V)`` MLM logits, or a tuple whose first
  element they are (a BERT with both heads). The loss is the mean cross-entropy over the
  labelled positions (:func:`masked_lm_loss`); metric ``mlm_accuracy``.
* :class:`PretrainingObjective` (BERT's MLM + next-sentence prediction,
  :mod:`groundwork.train.pairs`): the batch adds ``token_type_ids`` and ``next_sentence_label``
  ``(B,)`` (0 = IsNext); the model returns the pair ``(mlm_logits (B, T, V), nsp_logits (B, 2))``
  and the loss is their sum, :math:`\mathcal{L}_\text{MLM} + \mathcal{L}_\text{NSP}`, as
  ``transformers``' ``BertForPreTraining``; metrics ``mlm_loss``, ``nsp_loss``,
  ``mlm_accuracy``, ``nsp_accuracy``.
* :class:`Seq2SeqObjective` (T5's span corruption, :mod:`groundwork.train.span_corruption`, or
  any sequence-to-sequence task): batch keys ``input_ids``, ``attention_mask``,
  ``decoder_input_ids`` (the labels shifted right, :func:`shift_right`), ``labels`` (-100 on
  padding) and optionally ``decoder_attention_mask``; the model is called as
  ``model(input_ids, attention_mask=..., decoder_input_ids=...)`` and returns ``(B, T_dec, V)``
  logits (or a tuple starting with them); the loss is the mean cross-entropy over the labelled
  target tokens.

For all three, ``items`` is the number of labelled tokens.

**Task heads** (chapter 12, :mod:`groundwork.adapt.heads`) read dict batches too:
:class:`ClassificationObjective` takes ``input_ids``, ``attention_mask`` and ``labels`` ``(B,)``
(one class per sequence), and :class:`TokenClassificationObjective` ``labels`` ``(B, T)`` (one
class per token, -100 where there is none); metrics ``accuracy`` and ``token_accuracy``.

Adding an objective (SFT, a reward model, DPO, distillation, an MoE auxiliary loss) is one small
class with a ``__call__`` like these, plus, if its batches are of a new kind, a
:class:`groundwork.train.data.TrainData`; the loop itself is not copied. An objective that needs
more than the model (a frozen reference model for DPO, a teacher for distillation) holds it as an
attribute.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from groundwork.errors import ConfigError, TrainingError
from groundwork.nn.moe import router_aux_loss, router_z_loss
from groundwork.numerics import bits_per_byte

__all__ = [
    "IGNORE_INDEX",
    "CausalLMObjective",
    "ClassificationObjective",
    "LossOutput",
    "MaskedLMObjective",
    "Objective",
    "PretrainingObjective",
    "Seq2SeqObjective",
    "TokenClassificationObjective",
    "bits_per_byte",
    "causal_lm_loss",
    "masked_lm_loss",
    "shift_for_causal_lm",
    "shift_right",
]

IGNORE_INDEX = -100
"""Targets equal to this value (padding, masked prompt tokens) contribute nothing to the loss."""


# --8<-- [start:causal_lm_loss]
def causal_lm_loss(
    logits: torch.Tensor, targets: torch.Tensor, *, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Mean cross-entropy in nats per (non-ignored) target token.

    Args:
        logits: ``(B, T, V)`` scores for the next token at every position.
        targets: ``(B, T)`` the true next tokens (inputs shifted left by one), ``ignore_index``
            where no loss is wanted.
        ignore_index: Target value that is skipped.

    Returns:
        A scalar tensor, computed in fp32 whatever the logits' dtype.
    """
    B, T, V = logits.shape
    return F.cross_entropy(
        logits.reshape(B * T, V).float(),  # (B*T, V)
        targets.reshape(B * T),  # (B*T,)
        ignore_index=ignore_index,
    )


# --8<-- [end:causal_lm_loss]


def shift_for_causal_lm(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a ``(B, T+1)`` block of tokens into inputs ``[:, :-1]`` and targets ``[:, 1:]``.

    >>> x, y = shift_for_causal_lm(torch.tensor([[5, 6, 7, 8]]))
    >>> x.tolist(), y.tolist()
    ([[5, 6, 7]], [[6, 7, 8]])
    """
    return tokens[:, :-1], tokens[:, 1:]


@dataclass
class LossOutput:
    """What an objective returns for one batch."""

    loss: torch.Tensor
    """The mean loss over the batch's items, a scalar tensor (backpropagated by the engine)."""
    items: int
    """What the mean is over (predicted tokens, examples, pairs): weights validation means."""
    tokens: int | None = None
    """Input tokens read, for tokens/s and MFU (None: the same as ``items``)."""
    metrics: dict[str, torch.Tensor | float] = field(default_factory=dict)
    """Extra scalars to log with the training loss (e.g. an auxiliary loss, accuracy)."""


class Objective(Protocol):
    """A training objective: runs ``model`` on ``batch`` and returns the loss to minimise."""

    def __call__(self, model: nn.Module, batch: Any) -> LossOutput: ...


# --8<-- [start:objectives]
class CausalLMObjective:
    """Next-token prediction with teacher forcing: batches ``(x, y)`` of shape ``(B, T)``."""

    def __call__(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> LossOutput:
        x, y = batch
        logits = model(x)  # (B, T, V)
        return LossOutput(loss=causal_lm_loss(logits, y), items=y.numel())


class ClassificationObjective:
    """One label per sequence: batches ``(ids (B, L), lengths (B,), labels (B,))``, the model
    called as ``model(ids, lengths)`` giving ``(B, C)`` logits; mean cross-entropy.

    A dict batch (``input_ids``, ``attention_mask``, ``labels`` ``(B,)``, optionally
    ``token_type_ids``) is given to a task head
    (:class:`~groundwork.adapt.heads.SequenceClassifier`) as ``model(input_ids,
    attention_mask=..., token_type_ids=...)``, and adds the metric ``accuracy``.
    """

    def __call__(
        self,
        model: nn.Module,
        batch: "tuple[torch.Tensor, torch.Tensor, torch.Tensor] | Batch",
    ) -> LossOutput:
        if isinstance(batch, Mapping):
            return self._dict_batch(model, batch)
        ids, lengths, labels = batch
        logits = model(ids, lengths)  # (B, C)
        loss = F.cross_entropy(logits.float(), labels)
        return LossOutput(loss=loss, items=labels.numel(), tokens=int(lengths.sum()))

    @staticmethod
    def _dict_batch(model: nn.Module, batch: "Batch") -> LossOutput:
        logits = model(batch["input_ids"], **_encoder_kwargs(batch))  # (B, C)
        labels = batch["labels"]  # (B,)
        loss = F.cross_entropy(logits.float(), labels)
        accuracy = (logits.detach().argmax(-1) == labels).float().mean()
        return LossOutput(
            loss=loss,
            items=labels.numel(),
            tokens=_input_tokens(batch),
            metrics={"accuracy": accuracy},
        )


# --8<-- [end:objectives]


# --8<-- [start:moe_objective]
class MoECausalLMObjective:
    """Next-token prediction plus the routers' load-balancing loss, for models with
    mixture-of-experts layers (Switch, Mixtral): ``loss = lm + coef * aux``, ``aux`` the
    :func:`~groundwork.nn.moe.router_aux_loss` of every layer's
    :class:`~groundwork.nn.moe.RouterOutput` (``model.router_outputs``): pooled over the layers
    as ``transformers`` does, or per layer when the config's ``router_aux_loss_per_layer`` is
    set; ``coef`` the config's ``router_aux_loss_coef`` unless given. Plus ``z_coef`` times
    ST-MoE's router z-loss (the mean over layers), ``z_coef`` the config's
    ``router_z_loss_coef`` (0 if it has none) unless given.
    ``MixtralForCausalLM(..., output_router_logits=True)`` computes the same loss.

    Logs the language-model loss, the auxiliary loss (and the z-loss when used), the share of
    the assignments the most loaded expert received (1/E is perfect balance), the fraction of
    assignments dropped for lack of capacity, and ``expert_load/<layer>/<expert>``: each
    expert's share of its layer's assignments (the expert-load heat map of a run,
    :func:`~groundwork.train.metrics.plot_expert_load`)."""

    def __init__(
        self, aux_loss_coef: float | None = None, z_loss_coef: float | None = None
    ) -> None:
        self.aux_loss_coef = aux_loss_coef
        self.z_loss_coef = z_loss_coef

    def __call__(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> LossOutput:
        x, y = batch
        logits = model(x)  # (B, T, V); the MoE layers keep their routing
        outputs = getattr(model, "router_outputs", None)
        if not outputs:
            raise ConfigError(
                f"{type(model).__name__} reports no router outputs: MoECausalLMObjective is for "
                "models with mixture-of-experts layers (e.g. mixtral); use CausalLMObjective"
            )
        config = getattr(model, "config", None)
        coef = self.aux_loss_coef
        if coef is None:
            coef = float(getattr(config, "router_aux_loss_coef", 0.0))
        z_coef = self.z_loss_coef
        if z_coef is None:
            z_coef = float(getattr(config, "router_z_loss_coef", 0.0))
        lm = causal_lm_loss(logits, y)
        aux = router_aux_loss(
            outputs, per_layer=bool(getattr(config, "router_aux_loss_per_layer", False))
        )
        loss = lm + coef * aux
        metrics: dict[str, torch.Tensor | float] = {
            "lm_loss": lm.detach(),
            "aux_loss": aux.detach(),
        }
        if z_coef:
            z = torch.stack([router_z_loss(o.logits) for o in outputs]).mean()
            loss = loss + z_coef * z
            metrics["z_loss"] = z.detach()
        counts = torch.stack([o.tokens_per_expert for o in outputs]).float()  # (L, E)
        pooled = counts.sum(0)  # (E,)
        metrics["max_expert_share"] = float(pooled.max() / pooled.sum())
        assignments = sum(o.kept.numel() for o in outputs)
        metrics["dropped_fraction"] = sum(o.dropped for o in outputs) / assignments
        shares = (counts / counts.sum(-1, keepdim=True)).tolist()  # (L, E)
        for layer, row in enumerate(shares):
            for expert, share in enumerate(row):
                metrics[f"expert_load/{layer}/{expert}"] = share
        return LossOutput(loss=loss, items=int((y != IGNORE_INDEX).sum()), metrics=metrics)


# --8<-- [end:moe_objective]


# ---------------------------------------------------------------------------------------------
# encoders and encoder-decoders: masked LM, next-sentence prediction, sequence to sequence

Batch = Mapping[str, torch.Tensor]
"""A dict batch of tensors keyed by ``transformers``' names (``input_ids``, ``labels``, ...)."""


# --8<-- [start:masked_lm_loss]
def masked_lm_loss(
    logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = IGNORE_INDEX
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Mean cross-entropy over the labelled positions, with their accuracy and number.

    Only the labelled rows of the logits are upcast to fp32 (15% of them in BERT's masked LM),
    which equals ``F.cross_entropy(logits.view(-1, V), labels.view(-1), ignore_index=-100)``.

    Args:
        logits: ``(..., V)`` scores (``(B, T, V)`` for a masked LM or a decoder).
        labels: ``(...)`` the ids to predict, ``ignore_index`` where there is nothing to predict.

    Returns:
        ``(loss, accuracy, n)``: the mean loss (a scalar tensor; 0, still attached to the graph,
        when no position is labelled), the fraction of labelled positions whose argmax is the
        label (a detached scalar), and the number of labelled positions.
    """
    keep = labels != ignore_index  # (...)
    picked = logits[keep]  # (N, V)
    target = labels[keep]  # (N,)
    n = target.numel()
    if n == 0:
        zero = logits.sum() * 0.0
        return zero.float(), zero.detach().float(), 0
    loss = F.cross_entropy(picked.float(), target)
    accuracy = (picked.detach().argmax(-1) == target).float().mean()
    return loss, accuracy, n


# --8<-- [end:masked_lm_loss]


def shift_right(
    labels: torch.Tensor, *, decoder_start_token_id: int = 0, pad_id: int = 0
) -> torch.Tensor:
    """Decoder inputs for teacher forcing: ``labels`` shifted right by one, starting with
    ``decoder_start_token_id`` (T5 uses its pad id, 0), with -100 replaced by ``pad_id``
    (``transformers``' ``_shift_right``).

    >>> shift_right(torch.tensor([[5, 6, 1, -100]])).tolist()
    [[0, 5, 6, 1]]
    """
    out = labels.new_full(labels.shape, decoder_start_token_id)  # (B, T)
    out[:, 1:] = labels[:, :-1]
    return out.masked_fill(out == IGNORE_INDEX, pad_id)


def _split_logits(out: Any, what: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A model's output as ``(logits, second logits or None)``: a tensor, or a tuple of them."""
    if isinstance(out, torch.Tensor):
        return out, None
    if isinstance(out, tuple | list) and out and isinstance(out[0], torch.Tensor):
        second = out[1] if len(out) > 1 and isinstance(out[1], torch.Tensor) else None
        return out[0], second
    raise TrainingError(
        f"the model must return {what} logits as a tensor or a tuple of tensors, "
        f"got {type(out).__name__}"
    )


def _encoder_kwargs(batch: Batch) -> dict[str, torch.Tensor]:
    return {k: batch[k] for k in ("attention_mask", "token_type_ids") if k in batch}


def _input_tokens(batch: Batch) -> int:
    """Non-padding input tokens (all of them without an attention mask)."""
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else batch["input_ids"].numel()


# --8<-- [start:encoder_objectives]
class MaskedLMObjective:
    """BERT's masked LM: the mean cross-entropy over the masked positions (``labels != -100``).

    Batches: ``input_ids``, ``attention_mask``, ``labels`` (``(B, T)`` each) and optionally
    ``token_type_ids``. The model, called as ``model(input_ids, attention_mask=...,
    token_type_ids=...)``, returns ``(B, T, V)`` logits or a tuple starting with them.
    """

    def __call__(self, model: nn.Module, batch: Batch) -> LossOutput:
        out = model(batch["input_ids"], **_encoder_kwargs(batch))
        mlm_logits, _ = _split_logits(out, "masked-LM")  # (B, T, V)
        loss, accuracy, n = masked_lm_loss(mlm_logits, batch["labels"])
        return LossOutput(
            loss=loss, items=n, tokens=_input_tokens(batch), metrics={"mlm_accuracy": accuracy}
        )


class PretrainingObjective:
    """BERT's pretraining loss, masked LM plus next-sentence prediction.

    Batches: those of :class:`MaskedLMObjective` with ``token_type_ids`` and
    ``next_sentence_label`` ``(B,)`` (0 = B follows A). The model returns
    ``(mlm_logits (B, T, V), nsp_logits (B, 2))``. The loss is the sum of the two mean
    cross-entropies; ``items`` counts the masked tokens (the MLM term's).
    """

    def __call__(self, model: nn.Module, batch: Batch) -> LossOutput:
        out = model(batch["input_ids"], **_encoder_kwargs(batch))
        mlm_logits, nsp_logits = _split_logits(out, "masked-LM and next-sentence")
        if nsp_logits is None:
            raise TrainingError(
                "PretrainingObjective needs the model to return (mlm_logits, nsp_logits); "
                "use MaskedLMObjective for a model with a masked-LM head only"
            )
        mlm_loss, mlm_accuracy, n = masked_lm_loss(mlm_logits, batch["labels"])
        nsp_label = batch["next_sentence_label"]  # (B,)
        nsp_loss = F.cross_entropy(nsp_logits.float(), nsp_label)  # nsp_logits: (B, 2)
        nsp_accuracy = (nsp_logits.detach().argmax(-1) == nsp_label).float().mean()
        return LossOutput(
            loss=mlm_loss + nsp_loss,
            items=n,
            tokens=_input_tokens(batch),
            metrics={
                "mlm_loss": mlm_loss.detach(),
                "nsp_loss": nsp_loss.detach(),
                "mlm_accuracy": mlm_accuracy,
                "nsp_accuracy": nsp_accuracy,
            },
        )


class Seq2SeqObjective:
    """Sequence to sequence with teacher forcing (T5's span corruption, translation, ...): the
    mean cross-entropy of the decoder's logits over the labelled target tokens.

    Batches: ``input_ids``, ``attention_mask`` ``(B, S)``; ``decoder_input_ids``, ``labels``
    ``(B, T)`` (-100 on padding), optionally ``decoder_attention_mask``. The model is called as
    ``model(input_ids, attention_mask=..., decoder_input_ids=...)`` and returns ``(B, T, V)``
    logits or a tuple starting with them. ``tokens`` counts the encoder's non-padding tokens
    plus the labelled decoder tokens.
    """

    def __call__(self, model: nn.Module, batch: Batch) -> LossOutput:
        kwargs = {k: batch[k] for k in ("attention_mask", "decoder_attention_mask") if k in batch}
        out = model(batch["input_ids"], decoder_input_ids=batch["decoder_input_ids"], **kwargs)
        logits, _ = _split_logits(out, "decoder")  # (B, T, V)
        loss, accuracy, n = masked_lm_loss(logits, batch["labels"])
        return LossOutput(
            loss=loss,
            items=n,
            tokens=_input_tokens(batch) + n,
            metrics={"token_accuracy": accuracy},
        )


# --8<-- [end:encoder_objectives]


# --8<-- [start:token_classification]
class TokenClassificationObjective:
    """One label per token (named entities, parts of speech; chapter 12): the mean
    cross-entropy over the labelled tokens.

    Batches: ``input_ids``, ``attention_mask`` and ``labels`` (``(B, T)`` each; ``labels`` -100
    where there is nothing to predict: padding, and the continuation pieces of a word labelled
    on its first piece), optionally ``token_type_ids``. The model
    (:class:`~groundwork.adapt.heads.TokenClassifier`), called as ``model(input_ids,
    attention_mask=..., token_type_ids=...)``, returns ``(B, T, C)`` logits. ``items`` is the
    number of labelled tokens; metric ``token_accuracy``.
    """

    def __call__(self, model: nn.Module, batch: Batch) -> LossOutput:
        logits = model(batch["input_ids"], **_encoder_kwargs(batch))  # (B, T, C)
        loss, accuracy, n = masked_lm_loss(logits, batch["labels"])
        return LossOutput(
            loss=loss, items=n, tokens=_input_tokens(batch), metrics={"token_accuracy": accuracy}
        )


# --8<-- [end:token_classification]
