"""Pretraining the non-causal families from ``groundwork pretrain``: BERT (masked LM + next-sentence
prediction) and T5 (span corruption), through the same engine as the causal LMs.

:mod:`groundwork.recipes.pretrain` dispatches here when ``--model.arch`` is ``bert`` or ``t5``;
this module owns what differs:

* **BERT** reads *documents*, not token shards: each document of the source's train and val
  splits is encoded line by line and the lines are joined into segments of about
  ``(seq_len - 3) / 2`` tokens (:func:`~groundwork.train.pairs.chunk_segments`), so that a pair
  ``[CLS] A [SEP] B [SEP]`` fills ``seq_len``. :class:`~groundwork.train.encoder_data.
  BertPretrainingData` serves masked pairs (half of the ``B`` from another document), the model is
  :class:`~groundwork.models.bert.BertForPreTraining` and the loss
  :class:`~groundwork.train.objectives.PretrainingObjective`'s MLM + NSP. The tokenizer must hold
  ``[CLS] [SEP] [MASK] [PAD]``: one trained here gets BERT's special tokens whatever its kind
  (WordPiece by default in ``configs/shakespeare-bert.yaml``). With ``data.whole_word_masking``
  a WordPiece word's ``##`` pieces are masked together.
* **T5** reads the same token shards as a GPT (same tokenizer, same cache) through
  :class:`~groundwork.train.encoder_data.SpanCorruptionData` and
  :class:`~groundwork.train.objectives.Seq2SeqObjective`, encoder inputs of ``seq_len`` tokens.
  **Sentinels are reserved ids, not tokenizer entries**: the model's vocabulary is the
  tokenizer's plus :data:`NUM_SENTINELS` (100) ids above it, ``<extra_id_k>`` being
  ``tokenizer.vocab_size + 99 - k``, the highest id first, exactly where T5 puts its extra ids
  above its SentencePiece vocabulary. So any tokenizer works, the GPT shards are reused as they
  are, and the tokenizer never meets a sentinel in text. The end-of-text token of the tokenizer
  is T5's EOS, and also its decoder start and padding id (as BART starts its decoder with
  ``</s>``); a tokenizer without one is refused.

The run directory says what was trained, so :func:`groundwork.runs.load_run` rebuilds the right
class: ``kind: mlm`` or ``kind: seq2seq``, ``model_class`` (``BertForPreTraining``, ``T5``),
``task``, and an ``objective`` section with the ids above. Evaluations report ``val_loss`` (the
best-model metric) and ``val_mlm_accuracy``/``val_nsp_accuracy`` or ``val_token_accuracy``;
:func:`evaluate_encoder_run` scores the whole validation split at the end. Chapters 6 and 8.
"""

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from groundwork.errors import ConfigError
from groundwork.models.registry import ARCHITECTURES
from groundwork.runs import load_run, load_tokenizer
from groundwork.runtime import eval_mode
from groundwork.train.config import TrainConfig
from groundwork.train.data import TrainData, to_device
from groundwork.train.engine import Metrics, TrainResult, autocast, train
from groundwork.train.objectives import Objective, PretrainingObjective, Seq2SeqObjective

__all__ = [
    "BERT_SPECIAL_TOKENS",
    "KINDS",
    "NUM_SENTINELS",
    "bert_tokenizer",
    "decode_with_sentinels",
    "encode_with_sentinels",
    "encoder_fields",
    "evaluate_encoder_run",
    "run_sections",
    "summary_line",
    "train_encoder",
]

KINDS: dict[str, str] = {
    arch.name: arch.extra["run_kind"]
    for arch in ARCHITECTURES.values()
    if arch.extra.get("task") in ("mlm+nsp", "span-corruption")
}
"""The run kind each pretrainable non-causal architecture writes (``config.yaml``'s ``kind``),
from the registry entries' ``extra`` (bert: ``mlm``, t5: ``seq2seq``)."""
NUM_SENTINELS = 100
"""T5's sentinel ids (``<extra_id_0>`` .. ``<extra_id_99>``), reserved above the tokenizer's."""
OBJECTIVE_FIELDS: dict[str, str] = {
    "whole_word_masking": "bert",
    "mlm_probability": "bert",
    "noise_density": "t5",
    "mean_noise_span_length": "t5",
}
"""The data options (``--data.X``) that set one family's objective, and that family."""
BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
"""What a tokenizer trained for BERT is given (and what BERT needs, ``[UNK]`` aside)."""


@dataclass(frozen=True)
class BertSpecials:
    """The ids BERT's batches are made of."""

    cls: int
    sep: int
    mask: int
    pad: int


def check_objective_rates(data: Any) -> None:
    """The rates of a data section are in range: masking and noise in (0, 1), spans >= 1."""
    for name in ("mlm_probability", "noise_density"):
        value = getattr(data, name)
        if not 0.0 < value < 1.0:
            raise ConfigError(f"data.{name} must be in (0, 1), got {value}")
    if data.mean_noise_span_length < 1.0:
        raise ConfigError(
            f"data.mean_noise_span_length must be >= 1, got {data.mean_noise_span_length}"
        )


def check_objective_fields(data: Any, arch: str) -> None:
    """Refuse a data option of another family's objective than ``arch``'s, if it was changed."""
    defaults = type(data)()
    for name, family in OBJECTIVE_FIELDS.items():
        if family != arch and getattr(data, name) != getattr(defaults, name):
            raise ConfigError(f"data.{name} is for {family} only (this run is {arch})")


def bert_specials(tokenizer: Any, where: Path | str) -> BertSpecials:
    """``[CLS] [SEP] [MASK] [PAD]`` of ``tokenizer``, or a ``ConfigError`` naming the missing."""
    special = dict(getattr(tokenizer, "special_tokens", {}))
    names = ("[CLS]", "[SEP]", "[MASK]", "[PAD]")
    missing = [n for n in names if n not in special]
    if missing:
        raise ConfigError(
            f"BERT needs the special tokens {' '.join(names)}; the tokenizer {where} lacks "
            f"{' '.join(missing)} (leave data.tokenizer unset to train one with them)"
        )
    return BertSpecials(*(int(special[n]) for n in names))


def bert_tokenizer(
    source: str, *, tokenizer: str | None, kind: str, vocab_size: int, progress: bool
) -> Path:
    """The tokenizer a BERT run uses: ``tokenizer`` (a path) or one of ``kind`` trained on the
    source's train split with BERT's special tokens, cached under ``$GROUNDWORK_HOME`` (a
    WordPiece one is the same file ``groundwork pretrain`` caches for GPT models)."""
    from groundwork import __version__, corpus, tokenize

    if tokenizer == "gpt2":
        raise ConfigError("GPT-2's tokenizer has no [CLS] [SEP] [MASK] [PAD]: BERT cannot use it")
    if tokenizer is not None:
        path = Path(tokenizer)
    else:
        suffix = "" if kind == "wordpiece" else "-bert"  # wordpiece's defaults are BERT's
        name = f"{source}-{kind}-{vocab_size}{suffix}-v{__version__}"
        path = corpus.home() / "tokenizers" / f"{name}.json"
        if not path.exists():
            texts = [d.text for d in corpus.load_documents(source, split="train")]
            trained = tokenize.train_tokenizer(
                kind,  # type: ignore[arg-type]
                texts,
                vocab_size,
                special_tokens=BERT_SPECIAL_TOKENS,
                show_progress=progress,
            )
            path.parent.mkdir(parents=True, exist_ok=True)
            trained.save(path)
    bert_specials(tokenize.load_tokenizer(path), path)
    return path


def encoder_fields(arch: str, tokenizer: Any) -> dict[str, Any]:
    """The model config fields the tokenizer fixes: the vocabulary size and special ids."""
    if arch == "bert":
        return {"vocab_size": tokenizer.vocab_size, "pad_id": bert_specials(tokenizer, "").pad}
    eot = tokenizer.eot_id
    if eot is None:
        raise ConfigError(
            "T5 needs an end-of-text token in the tokenizer (its EOS, decoder start and padding)"
        )
    return {
        "vocab_size": tokenizer.vocab_size + NUM_SENTINELS,
        "eos_id": eot,
        "pad_id": eot,
        "decoder_start_id": eot,
    }


def run_sections(arch: str, tokenizer: Any, data: Any = None) -> dict[str, Any]:
    """The ``config.yaml`` sections beside ``model``: ``model_class``, ``task``, ``objective``
    (its rates from ``data``, a :class:`~groundwork.recipes.pretrain.DataConfig`, or the
    defaults of BERT and T5)."""
    objective: dict[str, Any]
    mlm = getattr(data, "mlm_probability", 0.15)
    density = getattr(data, "noise_density", 0.15)
    span = getattr(data, "mean_noise_span_length", 3.0)
    if arch == "bert":
        objective = {"nsp": True, "mlm_probability": mlm}
    else:
        eot = tokenizer.eot_id
        objective = {
            "num_sentinels": NUM_SENTINELS,
            "sentinel_start": tokenizer.vocab_size + NUM_SENTINELS - 1,
            "eos_id": eot,
            "decoder_start_id": eot,
            "pad_id": eot,
            "noise_density": density,
            "mean_noise_span_length": span,
        }
    extra = ARCHITECTURES[arch].extra
    return {"model_class": extra["model_class"], "task": extra["task"], "objective": objective}


_SENTINEL = re.compile(r"<extra_id_(\d+)>")


def encode_with_sentinels(tokenizer: Any, text: str, model_vocab: int) -> list[int]:
    """``text``'s ids, where each ``<extra_id_k>`` in it becomes sentinel ``k``
    (``model_vocab - 1 - k``): what a span-corruption T5 was trained to fill in.

    Raises:
        ConfigError: A sentinel number the model does not have.
    """
    ids: list[int] = []
    pieces = _SENTINEL.split(text)  # text, k, text, k, ..., text
    for i, piece in enumerate(pieces):
        if i % 2 == 0:
            ids += tokenizer.encode(piece) if piece else []
            continue
        k = int(piece)
        if k >= model_vocab - tokenizer.vocab_size:
            raise ConfigError(
                f"<extra_id_{k}>: the model has {model_vocab - tokenizer.vocab_size} sentinels"
            )
        ids.append(model_vocab - 1 - k)
    return ids


def decode_with_sentinels(tokenizer: Any, ids: Sequence[int], model_vocab: int) -> str:
    """The text of ``ids``, sentinels (ids above the tokenizer's) written ``<extra_id_k>``."""
    out, run = [], []
    for i in ids:
        if i < tokenizer.vocab_size:
            run.append(i)
            continue
        out.append(tokenizer.decode(run) if run else "")
        out.append(f"<extra_id_{model_vocab - 1 - i}>")
        run = []
    out.append(tokenizer.decode(run) if run else "")
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# data


def encode_documents(
    source: str, split: str, encode: Callable[[str], list[int]], segment_tokens: int
) -> list[list[list[int]]]:
    """The documents of a split, each as segments of about ``segment_tokens`` tokens (lines
    encoded one by one and joined, :func:`~groundwork.train.pairs.chunk_segments`)."""
    from groundwork import corpus
    from groundwork.train.pairs import chunk_segments

    docs = corpus.load_documents(source, split=split)  # type: ignore[arg-type]
    out = [
        chunk_segments([encode(line) for line in d.text.splitlines()], segment_tokens) for d in docs
    ]
    return [d for d in out if d]


def bert_data(
    run_config: dict[str, Any],
    tokenizer: Any,
    cfg: TrainConfig,
    *,
    eval_batches: int | None,
    training: bool = True,
) -> TrainData:
    """BERT's pretraining batches for a run: masked pairs of the source's train/val documents
    (``training=False``: for evaluation only, so the training documents are not encoded; the
    validation batches never read them)."""
    from groundwork.train.encoder_data import BertPretrainingData
    from groundwork.train.masking import TokenMasker, wordpiece_continuation_ids

    data = run_config["data"]
    specials = bert_specials(tokenizer, "of the run")
    segment = max(1, (cfg.seq_len - 3) // 2)
    continuation: Iterable[int] | None = None
    if data.get("whole_word_masking"):
        vocab = getattr(tokenizer, "vocab", None)
        if not isinstance(vocab, dict):
            raise ConfigError("data.whole_word_masking needs a WordPiece tokenizer")
        continuation = wordpiece_continuation_ids(vocab)
    masker = TokenMasker(
        mask_id=specials.mask,
        vocab_size=tokenizer.vocab_size,
        special_ids=set(tokenizer.special_tokens.values()),
        mlm_probability=float(run_config.get("objective", {}).get("mlm_probability", 0.15)),
    )
    source = str(data["source"])
    val = encode_documents(source, "val", tokenizer.encode, segment)
    return BertPretrainingData(
        encode_documents(source, "train", tokenizer.encode, segment) if training else val,
        val,
        batch_size=cfg.batch_size,
        max_len=cfg.seq_len,
        cls_id=specials.cls,
        sep_id=specials.sep,
        pad_id=specials.pad,
        masker=masker,
        nsp=True,
        continuation_ids=continuation,
        eval_batches=eval_batches,
        val_seed=cfg.seed,
    )


def t5_data(run_config: dict[str, Any], cfg: TrainConfig, *, eval_batches: int | None) -> TrainData:
    """T5's span-corrupted windows of the run's token shards (``data.shards``)."""
    from groundwork import corpus
    from groundwork.train.encoder_data import SpanCorruptionData

    shards = Path(run_config["data"]["shards"])
    meta = corpus.read_meta(shards)
    o = run_config["objective"]
    return SpanCorruptionData(
        corpus.TokenShards(shards, "train"),
        corpus.TokenShards(shards, "val") if "val" in meta["splits"] else None,
        batch_size=cfg.batch_size,
        inputs_length=cfg.seq_len,
        eos_id=int(o["eos_id"]),
        sentinel_start=int(o["sentinel_start"]),
        num_sentinels=int(o["num_sentinels"]),
        noise_density=float(o["noise_density"]),
        mean_noise_span_length=float(o["mean_noise_span_length"]),
        decoder_start_token_id=int(o["decoder_start_id"]),
        pad_id=int(o["pad_id"]),
        eval_batches=eval_batches,
        val_seed=cfg.seed,
    )


# ---------------------------------------------------------------------------------------------
# evaluation


def bert_metrics(
    net: nn.Module, batches: Iterable[Any], precision: str = "fp32"
) -> dict[str, float]:
    """MLM and NSP loss and accuracy over ``batches``: ``val_loss`` (their sum, the training
    loss), ``val_mlm_loss``, ``val_nsp_loss``, ``val_mlm_accuracy``, ``val_nsp_accuracy`` and
    ``val_pairs``; empty without batches. Call it in eval mode without gradients."""
    objective = PretrainingObjective()
    device = next(net.parameters()).device
    mlm_loss = mlm_right = masked = nsp_loss = nsp_right = pairs = 0.0
    for batch in batches:
        with autocast(device, precision):
            out = objective(net, to_device(batch, device))
        b = int(batch["next_sentence_label"].numel())
        mlm_loss += float(out.metrics["mlm_loss"]) * out.items
        mlm_right += float(out.metrics["mlm_accuracy"]) * out.items
        masked += out.items
        nsp_loss += float(out.metrics["nsp_loss"]) * b
        nsp_right += float(out.metrics["nsp_accuracy"]) * b
        pairs += b
    if not pairs:
        return {}
    mlm = mlm_loss / max(masked, 1)
    return {
        "val_loss": mlm + nsp_loss / pairs,
        "val_mlm_loss": mlm,
        "val_nsp_loss": nsp_loss / pairs,
        "val_mlm_accuracy": mlm_right / max(masked, 1),
        "val_nsp_accuracy": nsp_right / pairs,
        "val_pairs": pairs,
    }


def t5_metrics(net: nn.Module, batches: Iterable[Any], precision: str = "fp32") -> dict[str, float]:
    """Mean target-token loss and accuracy over ``batches``: ``val_loss``,
    ``val_token_accuracy`` and ``val_windows``; empty without batches."""
    objective = Seq2SeqObjective()
    device = next(net.parameters()).device
    loss = right = items = windows = 0.0
    for batch in batches:
        with autocast(device, precision):
            out = objective(net, to_device(batch, device))
        loss += float(out.loss) * out.items
        right += float(out.metrics["token_accuracy"]) * out.items
        items += out.items
        windows += int(batch["input_ids"].shape[0])
    if not items:
        return {}
    return {"val_loss": loss / items, "val_token_accuracy": right / items, "val_windows": windows}


def _metrics(arch: str) -> Callable[[nn.Module, Iterable[Any], str], dict[str, float]]:
    return bert_metrics if arch == "bert" else t5_metrics


def _data(
    arch: str,
    run_config: dict[str, Any],
    tokenizer: Any,
    cfg: TrainConfig,
    eval_batches: int | None,
    *,
    training: bool = True,
) -> TrainData:
    if arch == "bert":
        return bert_data(run_config, tokenizer, cfg, eval_batches=eval_batches, training=training)
    return t5_data(run_config, cfg, eval_batches=eval_batches)


# ---------------------------------------------------------------------------------------------
# training and the final summary


def train_encoder(
    net: nn.Module, run_config: dict[str, Any], cfg: TrainConfig, out: Path, *, resume: bool
) -> TrainResult:
    """Train a BERT or T5 run whose ``config.yaml`` (``run_config``) and ``tokenizer.json`` are
    in ``out``: fresh, or continued from its checkpoint with ``resume``."""
    arch = str(run_config["model"]["arch"])
    data = _data(arch, run_config, load_tokenizer(out), cfg, cfg.eval_batches)
    objective: Objective = PretrainingObjective() if arch == "bert" else Seq2SeqObjective()
    metrics = _metrics(arch)

    def evaluate(model: nn.Module) -> Metrics:
        found = metrics(model, data.val_batches(), cfg.precision)
        return {k: v for k, v in found.items() if k not in ("val_pairs", "val_windows")}

    return train(net, data, objective, cfg, out, resume=resume, evaluate=evaluate)


def evaluate_encoder_run(
    run_dir: Path, *, device: str = "auto", batch_size: int = 64, max_batches: int | None = None
) -> dict[str, float]:
    """The metrics of a BERT (``mlm``) or T5 (``seq2seq``) run's model over its whole
    validation split (BERT: every validation pair; T5: every window; or the first
    ``max_batches`` batches), masks and noise drawn from the run's seed as in training's
    evaluations."""
    net, tokenizer, config = load_run(run_dir, device=device)
    arch = str(config["model"]["arch"])
    fields = {**config["train"], "batch_size": batch_size, "progress": False}
    cfg = TrainConfig(**fields)
    data = _data(arch, config, tokenizer, cfg, max_batches, training=False)
    with eval_mode(net), torch.no_grad():
        return _metrics(arch)(net, data.val_batches(), "fp32")


def summary_line(arch: str, metrics: dict[str, float]) -> str:
    """``full validation split: mlm accuracy 0.1234, nsp accuracy 0.5678, loss 5.4321 (...)``."""
    if not metrics:
        return "full validation split: empty (the source has no validation documents)"
    if arch == "bert":
        return (
            f"full validation split: mlm accuracy {metrics['val_mlm_accuracy']:.4f}, "
            f"nsp accuracy {metrics['val_nsp_accuracy']:.4f}, loss {metrics['val_loss']:.4f} "
            f"(mlm {metrics['val_mlm_loss']:.4f} + nsp {metrics['val_nsp_loss']:.4f}; "
            f"{int(metrics['val_pairs']):,} pairs)"
        )
    return (
        f"full validation split: token accuracy {metrics['val_token_accuracy']:.4f}, "
        f"loss {metrics['val_loss']:.4f} nats/target token "
        f"({int(metrics['val_windows']):,} span-corrupted windows)"
    )
