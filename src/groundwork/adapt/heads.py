r"""Task heads over a pretrained backbone: one label per sequence (:class:`SequenceClassifier`),
one label per token (:class:`TokenClassifier`) or one of several candidate inputs
(:class:`MultipleChoiceClassifier`), for any transformer family :mod:`groundwork.adapt.features`
reads (GPT, Llama, BERT, the T5 encoder).

Fine-tuning (Devlin et al. 2019, §4; Radford et al. 2018, §3.2) adds one small layer on top of
the pretrained network and trains everything on the labelled task. A head reads the backbone's
final hidden states :math:`H \in \mathbb{R}^{T \times d}` and maps them to :math:`C` scores:

* a **sequence** label from one vector per sequence, :math:`\mathrm{logits} = W\,
  \mathrm{dropout}(\mathrm{pool}(H)) + b`, with ``pooling``

  - ``"cls"``: BERT's pooler on the first token, :math:`\tanh(W_p h_{[\mathrm{CLS}]} + b_p)`, as
    ``BertForSequenceClassification`` does (pretrained by next-sentence prediction to sum up
    the input; Devlin et al. 2019, §3.1). BERT only;
  - ``"last"``: the state of the last real token, the only one a causal decoder lets see the
    whole input: Radford et al. 2018's classifier on the final transformer activation, and
    ``GPT2ForSequenceClassification`` / ``LlamaForSequenceClassification``;
  - ``"mean"``: the mean of the real tokens' states (Reimers & Gurevych 2019), padding masked;

* a **token** label for every position (named entities, parts of speech), :math:`W\,
  \mathrm{dropout}(h_t) + b`, as ``BertForTokenClassification``;

* a **choice** among :math:`C` candidates (SWAG, HellaSwag, ARC: the question paired with each
  answer), each candidate pooled as a sequence and scored by one output,
  :math:`s_c = w^\top \mathrm{dropout}(\mathrm{pool}(H_c)) + b`, the :math:`C` scores being the
  logits of a softmax over the candidates, as ``BertForMultipleChoice`` (Devlin et al. 2019,
  §4.4; Radford et al. 2018, §3.3).

**Finding the last token.** ``transformers`` finds it from the *ids*: the rightmost token that is
not ``config.pad_token_id`` (and refuses a batch of several without a pad id). Ours reads the
*attention mask*: the rightmost position whose mask is 1 (the last when there is no mask). The
two agree whenever the pad id occurs only in padding. They differ when a real token equals the pad
id, as when GPT-2 is fine-tuned with ``pad = eos = <|endoftext|>`` and a text ends in it:
``transformers`` then reads the token before, ours the text's true end.

:func:`head_for` builds a head with each family's defaults (BERT: ``"cls"``, a biased
classifier and the encoder's dropout; GPT and Llama: ``"last"``, no bias and no dropout, as their
``transformers`` twins; T5: ``"mean"``). Converting ``transformers``' heads and weights is in
:mod:`groundwork.adapt.heads_hf`.

References:
    * Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional Transformers for Language
      Understanding" (§4: fine-tuning with ``[CLS]`` for sequences, every token for tagging).
    * Radford et al. 2018, "Improving Language Understanding by Generative Pre-Training" (§3.2:
      a linear layer on the last token's final activation; §3.3: multiple choice as one
      sequence per answer, scored and normalised with a softmax).
    * Zellers et al. 2018, "SWAG: A Large-Scale Adversarial Dataset for Grounded Commonsense
      Inference" (the multiple-choice task ``BertForMultipleChoice`` was written for).
    * Reimers & Gurevych 2019, "Sentence-BERT" (mean pooling).

Chapter 12 (Adaptation).
"""

from pathlib import Path
from typing import Literal

import torch
from torch import nn

from groundwork.adapt.features import encoder_of, hidden_size, last_hidden_state
from groundwork.errors import ConfigError, UnknownNameError, did_you_mean
from groundwork.models import registry
from groundwork.models.bert import init_bert_weights
from groundwork.models.t5 import T5, T5Encoder
from groundwork.pretrained import PRETRAINED, load
from groundwork.runs import is_run, load_run

__all__ = [
    "POOLINGS",
    "TASK_KINDS",
    "MultipleChoiceClassifier",
    "Pooling",
    "SequenceClassifier",
    "TaskKind",
    "TokenClassifier",
    "default_pooling",
    "head_for",
    "pool",
]

Pooling = Literal["cls", "mean", "last"]
POOLINGS: tuple[str, ...] = ("cls", "mean", "last")
"""How a sequence becomes one vector (see the module's docstring)."""
TaskKind = Literal["sequence", "token", "choice"]
TASK_KINDS: tuple[str, ...] = ("sequence", "token", "choice")
"""One label per sequence, one per token, or one of several candidate sequences."""

INIT_STD = 0.02
"""Standard deviation of a new classifier's weights (BERT's and GPT-2's ``initializer_range``)."""


def default_pooling(backbone: nn.Module) -> Pooling:
    """The family's usual pooling: ``"cls"`` for BERT, ``"mean"`` for the T5 encoder, ``"last"``
    for the decoders (GPT, Llama)."""
    if encoder_of(backbone) is not None:
        return "cls"
    if isinstance(backbone, T5 | T5Encoder):
        return "mean"
    return "last"


def _check_pooling(pooling: str, backbone: nn.Module) -> None:
    if pooling not in POOLINGS:
        raise ConfigError(f"unknown pooling {pooling!r}: {did_you_mean(pooling, POOLINGS)}")
    if pooling == "cls" and encoder_of(backbone) is None:
        raise ConfigError(
            f"pooling 'cls' reads BERT's [CLS] token through its pooler, and a "
            f"{type(backbone).__name__} has neither: use 'last' (decoders) or 'mean'"
        )


def _token_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """The attention mask as booleans ``(B, T)`` (all true without one); every row must have a
    token."""
    if attention_mask is None:
        return torch.ones_like(input_ids, dtype=torch.bool)
    mask = attention_mask.bool()  # (B, T)
    empty = ~mask.any(dim=1)  # (B,)
    if bool(empty.any()):
        row = int(empty.nonzero()[0, 0])
        raise ConfigError(f"row {row} of the batch is all padding (its attention_mask is all 0)")
    return mask


# --8<-- [start:pool]
def pool(
    hidden: torch.Tensor, mask: torch.Tensor, pooling: Literal["mean", "last"]
) -> torch.Tensor:
    """One vector per sequence from hidden states ``(B, T, d)`` and a token mask ``(B, T)``
    (true for real tokens): the mean of the real tokens, or the rightmost real token.

    >>> h = torch.arange(6.0).reshape(1, 3, 2)  # tokens (0, 1), (2, 3), (4, 5)
    >>> m = torch.tensor([[True, True, False]])
    >>> pool(h, m, "mean").tolist(), pool(h, m, "last").tolist()
    ([[1.0, 2.0]], [[2.0, 3.0]])
    """
    if pooling == "mean":
        weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1)  # (B, d)
    T = hidden.shape[1]
    positions = torch.arange(T, device=hidden.device)  # (T,)
    last = (positions * mask).argmax(dim=-1)  # (B,): the rightmost true position
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]  # (B, d)


# --8<-- [end:pool]


def _check_num_labels(num_labels: int) -> None:
    if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 2:
        raise ConfigError(
            f"num_labels must be an integer >= 2, got {num_labels!r} (a single-output "
            "regression head is not supported)"
        )


class _Head(nn.Module):
    """What every head shares: the backbone, dropout and the linear classifier, checked."""

    def __init__(self, backbone: nn.Module, num_labels: int, *, dropout: float, bias: bool):
        super().__init__()
        d_model = hidden_size(backbone)  # refuses a model we cannot read
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout!r}")
        self.num_labels = num_labels
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(d_model, num_labels, bias=bias)
        nn.init.normal_(self.classifier.weight, mean=0.0, std=INIT_STD)
        if self.classifier.bias is not None:
            nn.init.zeros_(self.classifier.bias)
        self.train(backbone.training)  # the head follows the backbone's mode

    def _hidden(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
    ) -> torch.Tensor:
        return last_hidden_state(
            self.backbone, input_ids, attention_mask, token_type_ids=token_type_ids
        )  # (B, T, d_model)


class _PooledHead(_Head):
    """A head that reads one vector per sequence: the pooling, checked, and BERT's pooler (the
    encoder's, or one of the head's own when the encoder has none)."""

    def __init__(
        self,
        backbone: nn.Module,
        num_labels: int,
        pooling: Pooling | None,
        *,
        dropout: float,
        bias: bool,
    ) -> None:
        pooling = default_pooling(backbone) if pooling is None else pooling
        _check_pooling(pooling, backbone)
        super().__init__(backbone, num_labels, dropout=dropout, bias=bias)
        self.pooling: Pooling = pooling
        encoder = encoder_of(backbone)
        self.pooler: nn.Linear | None = None  # a pooler of the head's own, when BERT has none
        if pooling == "cls" and encoder is not None and encoder.pooler is None:
            self.pooler = nn.Linear(encoder.config.d_model, encoder.config.d_model)
            init_bert_weights(self.pooler)

    def _pooled(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
    ) -> torch.Tensor:
        """One vector per sequence ``(B, d)`` from ``input_ids`` ``(B, T)``."""
        hidden = self._hidden(input_ids, attention_mask, token_type_ids)  # (B, T, d)
        if self.pooling == "cls":
            return self._cls(hidden)  # (B, d)
        return pool(hidden, _token_mask(input_ids, attention_mask), self.pooling)  # (B, d)

    def _cls(self, hidden: torch.Tensor) -> torch.Tensor:
        """BERT's pooled output, ``tanh(W h_[CLS] + b)``: ``(B, T, d) -> (B, d)``."""
        if self.pooler is not None:
            return torch.tanh(self.pooler(hidden[:, 0]))
        encoder = encoder_of(self.backbone)
        assert encoder is not None
        return encoder.pool(hidden)


# --8<-- [start:heads]
class SequenceClassifier(_PooledHead):
    """One label per sequence: ``classifier(dropout(pool(backbone(ids))))``.

    Args:
        backbone: A GPT, Llama, BERT (``Bert``, ``BertForMaskedLM``, ``BertForPreTraining``) or
            T5 encoder (``T5Encoder``, ``T5``) model; its own output head, if any, is unused.
        num_labels: Number of classes (>= 2).
        pooling: ``"cls"`` (BERT's pooler on ``[CLS]``; BERT only), ``"mean"`` or ``"last"``;
            ``None``: the family's default (:func:`default_pooling`).
        dropout: Dropout on the pooled vector (training only).
        bias: Give the classifier a bias (BERT's has one; GPT-2's and Llama's ``score`` none).

    With ``"cls"`` and a BERT encoder built without a pooler (``BertForMaskedLM``'s), the head
    gets a new pooler of its own (``pooler``), as ``transformers`` initialises one when a
    classifier is loaded from such a checkpoint.

    Raises:
        ConfigError: An unknown pooling, ``"cls"`` on a model that is not BERT, ``num_labels``
            < 2, a dropout outside ``[0, 1)``, or a backbone we cannot read.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_labels: int,
        pooling: Pooling | None = None,
        dropout: float = 0.1,
        *,
        bias: bool = True,
    ) -> None:
        _check_num_labels(num_labels)
        super().__init__(backbone, num_labels, pooling, dropout=dropout, bias=bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Class logits ``(B, num_labels)``.

        Args:
            input_ids: Token ids ``(B, T)``.
            attention_mask: ``(B, T)``, 1 for tokens and 0 for padding; ``None``: no padding.
            token_type_ids: BERT's segment ids ``(B, T)`` (sentence pairs); BERT only.

        Raises:
            ConfigError: Inputs of the wrong shape, or a row that is all padding.
        """
        pooled = self._pooled(input_ids, attention_mask, token_type_ids)  # (B, d)
        return self.classifier(self.dropout(pooled))  # (B, num_labels)


class TokenClassifier(_Head):
    """One label per token: ``classifier(dropout(backbone(ids)))`` at every position.

    Args:
        backbone: As for :class:`SequenceClassifier`.
        num_labels: Number of classes (>= 2).
        dropout: Dropout on the hidden states (training only).
        bias: Give the classifier a bias.

    Raises:
        ConfigError: ``num_labels`` < 2, a dropout outside ``[0, 1)``, or a backbone we cannot
            read.
    """

    def __init__(
        self, backbone: nn.Module, num_labels: int, dropout: float = 0.1, *, bias: bool = True
    ) -> None:
        _check_num_labels(num_labels)
        super().__init__(backbone, num_labels, dropout=dropout, bias=bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token logits ``(B, T, num_labels)`` (those of padding positions too: the loss
        ignores them by their label, -100); the arguments are
        :meth:`SequenceClassifier.forward`'s."""
        hidden = self._hidden(input_ids, attention_mask, token_type_ids)  # (B, T, d)
        return self.classifier(self.dropout(hidden))  # (B, T, num_labels)


class MultipleChoiceClassifier(_PooledHead):
    """One of ``C`` candidates: every candidate (the question with answer ``c``) is pooled as a
    sequence and scored by one output, ``classifier(dropout(pool(backbone(ids_c))))``; the ``C``
    scores are the logits of a softmax over the candidates. ``transformers``' twin:
    ``BertForMultipleChoice``.

    The candidates go through the backbone as one batch of ``B * C`` sequences, so one head fits
    any number of candidates (``num_labels`` is 1: one score per candidate).

    Args:
        backbone: As for :class:`SequenceClassifier`.
        pooling: As for :class:`SequenceClassifier` (``None``: the family's default).
        dropout: Dropout on each pooled vector (training only).
        bias: Give the classifier a bias.

    Raises:
        ConfigError: As for :class:`SequenceClassifier`.
    """

    def __init__(
        self,
        backbone: nn.Module,
        pooling: Pooling | None = None,
        dropout: float = 0.1,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__(backbone, 1, pooling, dropout=dropout, bias=bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Candidate logits ``(B, C)``; their cross-entropy with the right candidates' indices
        ``(B,)`` is the loss.

        Args:
            input_ids: Token ids ``(B, C, T)``: ``C`` candidates per example, padded to one
                length ``T``.
            attention_mask: ``(B, C, T)``, 1 for tokens and 0 for padding; ``None``: no padding.
            token_type_ids: BERT's segment ids ``(B, C, T)``; BERT only.

        Raises:
            ConfigError: ``input_ids`` not ``(B, C, T)``, a mask or segment ids of another
                shape, or a candidate that is all padding.
        """
        if input_ids.dim() != 3:
            raise ConfigError(
                "a multiple-choice head reads input_ids (batch, num_choices, seq_len), got shape "
                f"{tuple(input_ids.shape)}: stack each example's candidates on dimension 1"
            )
        for name, extra in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
            if extra is not None and extra.shape != input_ids.shape:
                raise ConfigError(
                    f"{name} must have the shape of input_ids {tuple(input_ids.shape)}, got "
                    f"{tuple(extra.shape)}"
                )
        B, C, T = input_ids.shape
        ids = input_ids.reshape(B * C, T)  # (B * C, T)
        mask = attention_mask.reshape(B * C, T) if attention_mask is not None else None
        types = token_type_ids.reshape(B * C, T) if token_type_ids is not None else None
        pooled = self._pooled(ids, mask, types)  # (B * C, d)
        scores = self.classifier(self.dropout(pooled))  # (B * C, 1)
        return scores.view(B, C)  # (B, C)


# --8<-- [end:heads]


def _backbone(name_or_model: str | Path | nn.Module) -> nn.Module:
    """A model, or one named: a pretrained model (``"all-minilm-l6-v2"``), a run directory, or
    ``"<arch>:<preset>"`` (``"bert:tiny"``, freshly initialised)."""
    if isinstance(name_or_model, nn.Module):
        return name_or_model
    name = str(name_or_model)
    if name in PRETRAINED:
        return load(name).model
    if is_run(Path(name)):
        model = load_run(name, device="cpu").model
        if not isinstance(model, nn.Module):
            raise ConfigError(f"the run {name} holds a {type(model).__name__}, not a network")
        return model
    arch, sep, preset = name.partition(":")
    if sep and arch in registry.ARCHITECTURES:
        return registry.build_model(registry.get(arch).config(preset))
    raise UnknownNameError(
        f"{name!r} is neither a pretrained model, a run directory nor '<arch>:<preset>' "
        f"(e.g. 'bert:tiny'): {did_you_mean(name, PRETRAINED)}"
    )


def head_for(
    backbone: str | Path | nn.Module,
    task_kind: TaskKind,
    num_labels: int,
    pooling: Pooling | None = None,
    *,
    dropout: float | None = None,
) -> SequenceClassifier | TokenClassifier | MultipleChoiceClassifier:
    """A task head over ``backbone`` with its family's defaults.

    ==========  ==========  ==========  ====================
    family      pooling     bias        dropout
    ==========  ==========  ==========  ====================
    BERT        ``"cls"``   yes         the encoder's
    GPT, Llama  ``"last"``  no          0
    T5 encoder  ``"mean"``  yes         0
    ==========  ==========  ==========  ====================

    (as ``transformers``' ``BertFor*``, ``GPT2For*``/``LlamaForSequenceClassification``).

    >>> head_for("bert:tiny", "choice", 1).pooling  # BertForMultipleChoice's
    'cls'


    Args:
        backbone: A model, or the name of one: a pretrained model (``"all-minilm-l6-v2"``,
            ``"smollm2-135m-instruct"``), a run directory, or ``"<arch>:<preset>"``
            (``"bert:tiny"``: a new, randomly initialised model).
        task_kind: ``"sequence"`` (one label per sequence: :class:`SequenceClassifier`),
            ``"token"`` (one per token: :class:`TokenClassifier`) or ``"choice"`` (one of ``C``
            candidate sequences: :class:`MultipleChoiceClassifier`).
        num_labels: Number of classes (>= 2); 1 for ``"choice"`` (one score per candidate).
        pooling: Sequences and choices: ``"cls"``, ``"mean"`` or ``"last"`` (default: the
            family's).
        dropout: Dropout before the classifier (default: the family's).

    Returns:
        The head, in the backbone's mode (a loaded model is in eval mode: call ``.train()`` to
        fine-tune).

    Raises:
        ConfigError: An unknown task kind or pooling, pooling given for tokens, or a bad
            ``num_labels`` (not 1 for ``"choice"``).
        UnknownNameError: A name that is no model.
    """
    if task_kind not in TASK_KINDS:
        raise ConfigError(f"unknown task kind {task_kind!r}: {did_you_mean(task_kind, TASK_KINDS)}")
    if task_kind == "token" and pooling is not None:
        raise ConfigError(
            "pooling applies to sequence labels only: a token head labels every token"
        )
    if task_kind == "choice" and num_labels != 1:
        raise ConfigError(
            f"a multiple-choice head scores each candidate with one output: num_labels must be 1, "
            f"got {num_labels!r} (the number of candidates is the input's dimension C)"
        )
    model = _backbone(backbone)
    hidden_size(model)  # refuses a model we cannot read before its defaults are looked up
    encoder = encoder_of(model)
    bias = encoder is not None or isinstance(model, T5 | T5Encoder)
    if dropout is None:
        dropout = encoder.config.dropout if encoder is not None else 0.0
    if task_kind == "token":
        return TokenClassifier(model, num_labels, dropout, bias=bias)
    if task_kind == "choice":
        return MultipleChoiceClassifier(model, pooling, dropout, bias=bias)
    return SequenceClassifier(model, num_labels, pooling, dropout, bias=bias)
