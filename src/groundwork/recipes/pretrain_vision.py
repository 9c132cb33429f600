"""Training the image models of chapter 20 from ``groundwork pretrain``: a ViT or a small CNN
classifying handwritten digits, and CLIP matching digit images with captions.

:mod:`groundwork.recipes.pretrain` dispatches here when ``--model.arch`` is ``vit``,
``image-cnn`` or ``clip``; the data source is ``digits`` (scikit-learn's 1,797 8x8 handwritten
digits, :mod:`groundwork.corpus.images`, split by a hash of the row into train, validation and
test). What this module does:

* **Pixels.** Grey levels 0-16 become ``x / 16``, then are standardised with the mean and
  standard deviation of the training images (two numbers, kept in the run's ``images`` section
  so that a loaded run normalises new images the same way). ``data.shift`` moves each training
  image by up to that many pixels (:class:`~groundwork.train.vision.ImageData`).
* **Captions** (CLIP). Each image gets a caption from its class and its measured attributes,
  ``"a thick, right-slanted handwritten seven"``: the thresholds (tertiles of ink and slant) come
  from the training split and are kept in the run's ``captions`` section. A byte-level BPE
  tokenizer is trained on the training captions; a caption is its tokens followed by the
  end-of-text token, whose final state is the text embedding, and padded with it.
* **Training** through the one engine with
  :class:`~groundwork.train.vision.ImageClassificationObjective` or
  :class:`~groundwork.train.vision.ContrastiveObjective`. Evaluations report ``val_loss`` and
  ``val_accuracy``: for a classifier its accuracy, for CLIP its *zero-shot* accuracy, each
  validation image classified by the prompts ``"a handwritten zero"`` ... ``"a handwritten
  nine"`` (:mod:`groundwork.evaluate.zero_shot`).
* **The test split** is scored once at the end (:func:`evaluate_vision_run`) into
  ``metrics.json``: accuracy, parameters and training time; for CLIP the zero-shot accuracy and
  image-text retrieval recall@1/5/10 over the test captions.

The run directory's ``kind`` is ``image-classifier`` or ``clip`` (``model_class`` names the
class), so :func:`groundwork.runs.load_run` rebuilds it. Chapter 20.
"""

import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from groundwork.corpus import images as digits
from groundwork.errors import ConfigError, did_you_mean
from groundwork.evaluate.zero_shot import recall_at_k, zero_shot_classifier, zero_shot_predict
from groundwork.fileio import read_json, write_json
from groundwork.models import registry
from groundwork.models.registry import ARCHITECTURES
from groundwork.runs import TOKENIZER_FILE, load_run, load_tokenizer, write_config
from groundwork.runtime import eval_mode
from groundwork.tokenize import train_tokenizer
from groundwork.train.config import TrainConfig
from groundwork.train.engine import Metrics, TrainResult, train
from groundwork.train.objectives import Objective
from groundwork.train.vision import ContrastiveObjective, ImageClassificationObjective, ImageData

__all__ = [
    "METRICS_FILE",
    "VISION_KINDS",
    "Prepared",
    "encode_captions",
    "evaluate_vision_run",
    "prepare_images",
    "pretrain_vision",
    "read_scores",
    "resume_vision",
    "summary_line",
]

VISION_KINDS: dict[str, str] = {
    arch.name: arch.extra["run_kind"]
    for arch in ARCHITECTURES.values()
    if arch.extra.get("task") in ("image-classification", "contrastive")
}
"""The run kind each image architecture writes (vit, image-cnn: ``image-classifier``; clip:
``clip``), from the registry entries' ``extra``."""
METRICS_FILE = "metrics.json"
"""The test-split scores a finished run keeps."""
SOURCES = ("digits",)
"""The image sources (``groundwork data list``)."""
SHARED_FIELDS = {"d_model", "n_layers", "n_heads", "d_ff"}
"""``--model.X`` overrides that CLIP applies to both towers (``vision_X`` and ``text_X``)."""


def model_config(arch: str, preset: str, overrides: Mapping[str, Any], **fixed: Any) -> Any:
    """The config of an image architecture: its preset, the command line's ``overrides`` (for
    CLIP, ``d_model``, ``n_layers``, ``n_heads`` and ``d_ff`` set both towers) and the ``fixed``
    fields the data decides (image size, channels, classes, vocabulary).

    Raises:
        ConfigError: an override that is not a field of the architecture.
    """
    entry = registry.get(arch)
    names = entry.field_names()
    fields: dict[str, Any] = {}
    for key, value in overrides.items():
        if arch == "clip" and key in SHARED_FIELDS:
            fields[f"vision_{key}"] = fields[f"text_{key}"] = value
        elif key in names:
            fields[key] = value
        else:
            raise ConfigError(f"model.{key} is not an option of {arch} models")
    return entry.config(preset, **{**fields, **{k: v for k, v in fixed.items() if k in names}})


# --8<-- [start:captions]
def encode_captions(
    tokenizer: Any, texts: list[str], max_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids ``(N, T)`` and attention mask ``(N, T)`` of captions: each caption's tokens,
    then the end-of-text token (the one CLIP pools), padded with end-of-text to the longest.

    Raises:
        ConfigError: the tokenizer has no end-of-text token, or a caption is too long.
    """
    eot = tokenizer.eot_id
    if eot is None:
        raise ConfigError("the caption tokenizer needs an end-of-text token (<|endoftext|>)")
    seqs = [[*tokenizer.encode(t), eot] for t in texts]
    longest = max(len(s) for s in seqs)
    if longest > max_len:
        raise ConfigError(
            f"a caption is {longest} tokens with end-of-text, longer than the text encoder's "
            f"max_seq_len ({max_len}): raise model.max_seq_len (or data.vocab_size, for a "
            "tokenizer with more merges)"
        )
    ids = torch.full((len(seqs), longest), eot, dtype=torch.long)  # (N, T)
    mask = torch.zeros(len(seqs), longest, dtype=torch.long)  # (N, T)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids, mask


# --8<-- [end:captions]


@dataclasses.dataclass
class Prepared:
    """The digits of one split, ready for a model: normalised pixels ``(N, 1, 8, 8)``, class
    ids, and (for CLIP) caption strings with their token ids and mask."""

    pixels: torch.Tensor
    labels: torch.Tensor
    captions: list[str] | None = None
    ids: torch.Tensor | None = None
    mask: torch.Tensor | None = None


def prepare_images(config: Mapping[str, Any], split: str, tokenizer: Any = None) -> Prepared:
    """Load ``split`` of a run's source and normalise it with the run's statistics; with a
    tokenizer also caption it with the run's thresholds and encode the captions."""
    images = config["images"]
    data = digits.load_digits(split)  # type: ignore[arg-type]
    x = data.images.float().div(16.0).unsqueeze(1)  # (N, 1, 8, 8) in [0, 1]
    pixels = (x - images["mean"]) / images["std"]
    prepared = Prepared(pixels=pixels, labels=data.labels)
    if tokenizer is not None:
        thresholds = digits.AttributeThresholds.from_dict(config["captions"]["thresholds"])
        prepared.captions = digits.captions(data, thresholds)
        max_len = int(config["model"]["max_seq_len"])
        prepared.ids, prepared.mask = encode_captions(tokenizer, prepared.captions, max_len)
    return prepared


def pretrain_vision(
    arch: str,
    preset: str,
    overrides: Mapping[str, Any],
    data: Any,
    cfg: TrainConfig,
    out: Path,
) -> TrainResult:
    """Train ``arch`` (vit, image-cnn or clip) on the ``data.source`` images into ``out``.

    Args:
        arch: The architecture.
        preset: Its preset (``digits``).
        overrides: Fields of the preset to change (``--model.X``).
        data: The recipe's data section (``source``, ``shift``, ``vocab_size`` of CLIP's
            caption tokenizer).
        cfg: The engine's settings.
        out: The run directory (checked writable by the caller).
    """
    if data.source not in SOURCES:
        raise ConfigError(
            f"{arch} trains on images: data.source {data.source!r} is not an image source "
            f"({did_you_mean(data.source, SOURCES)})"
        )
    train_split = digits.load_digits("train")
    x = train_split.images.float().div(16.0)
    mean, std = x.mean().item(), x.std().item()
    fixed: dict[str, Any] = dict(image_size=8, n_channels=1, n_classes=len(digits.DIGIT_NAMES))
    sections: dict[str, Any] = {}
    out.mkdir(parents=True, exist_ok=True)
    if arch == "clip":
        # per digit: "a right-slanted six" leans further right than most sixes
        thresholds = digits.thresholds(digits.measure(train_split.images), train_split.labels)
        texts = digits.captions(train_split, thresholds) + digits.class_prompts()
        tokenizer = train_tokenizer("bpe", texts, data.vocab_size)
        tokenizer.save(out / TOKENIZER_FILE)
        fixed.update(vocab_size=tokenizer.vocab_size, eos_id=tokenizer.eot_id)
        sections["captions"] = {
            "thresholds": thresholds.to_dict(),
            "template": digits.ZERO_SHOT_TEMPLATE,
        }
    config = model_config(arch, preset, overrides, **fixed)
    entry = registry.get(arch)
    if hasattr(config, "n_patches"):  # FLOPs per "token": a ViT reads [CLS] + the patches
        cfg = dataclasses.replace(cfg, seq_len=1 + config.n_patches)
    write_config(
        out,
        kind=VISION_KINDS[arch],
        model=config,
        model_class=entry.extra["model_class"],
        task=entry.extra["task"],
        labels=list(digits.DIGIT_NAMES),
        images={"source": data.source, "mean": mean, "std": std, "shift": data.shift},
        **sections,
        train=cfg,
    )
    torch.manual_seed(cfg.seed)
    net, _, run_config = load_run(out, device="cpu", weights=False)
    net.train()
    return _train(net, run_config, cfg, out, resume=False)


def resume_vision(run_dir: Path, config: Mapping[str, Any], cfg: TrainConfig) -> TrainResult:
    """Continue an image run from its last checkpoint (``groundwork pretrain --resume``)."""
    net, _, _ = load_run(run_dir, device="cpu", weights=False)  # the engine loads the weights
    net.train()
    return _train(net, config, cfg, run_dir, resume=True)


def _train(
    net: nn.Module, config: Mapping[str, Any], cfg: TrainConfig, out: Path, *, resume: bool
) -> TrainResult:
    tokenizer = load_tokenizer(out) if config["kind"] == "clip" else None
    train_set = prepare_images(config, "train", tokenizer)
    val_set = prepare_images(config, "val", tokenizer)
    images = config["images"]
    data = ImageData(
        train_set.pixels,
        train_set.labels,
        batch_size=cfg.batch_size,
        val_images=val_set.pixels,
        val_labels=val_set.labels,
        captions=train_set.ids,
        caption_mask=train_set.mask,
        val_captions=val_set.ids,
        val_caption_mask=val_set.mask,
        val_batch_size=cfg.batch_size,  # CLIP's loss depends on the batch size: train's
        shift=int(images.get("shift", 0)),
        background=-images["mean"] / images["std"],
    )
    objective: Objective = (
        ContrastiveObjective() if tokenizer is not None else ImageClassificationObjective()
    )
    prompts = _prompts(config, tokenizer)

    def evaluate(model: nn.Module) -> Metrics:
        total = items = 0.0
        for batch in data.val_batches():
            result = objective(model, _to(batch, _device(model)))
            total, items = total + float(result.loss) * result.items, items + result.items
        accuracy = _accuracy(model, val_set, prompts)
        return {"val_loss": total / items, "val_accuracy": accuracy}

    started = time.perf_counter()
    result = train(net, data, objective, cfg, out, resume=resume, evaluate=evaluate)
    if result.stopped != "signal":
        scores = evaluate_vision_run(out, device="cpu")
        scores["train_seconds"] = round(time.perf_counter() - started, 1)
        write_json(out / METRICS_FILE, scores)
    return result


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


def _to(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def _prompts(config: Mapping[str, Any], tokenizer: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
    """CLIP's zero-shot prompts, one per class, encoded; ``None`` for a classifier."""
    if tokenizer is None:
        return None
    template = config["captions"]["template"]
    texts = digits.class_prompts(template)
    return encode_captions(tokenizer, texts, int(config["model"]["max_seq_len"]))


@torch.no_grad()
def _embed_images(model: Any, pixels: torch.Tensor) -> torch.Tensor:
    device = _device(model)
    chunks = [model.encode_image(p.to(device)) for p in pixels.split(256)]
    return torch.cat(chunks).cpu()  # (N, P)


@torch.no_grad()
def _accuracy(
    model: Any, split: Prepared, prompts: tuple[torch.Tensor, torch.Tensor] | None
) -> float:
    """A classifier's accuracy on ``split``, or CLIP's zero-shot accuracy by ``prompts``."""
    device = _device(model)
    with eval_mode(model):
        if prompts is None:
            logits = torch.cat([model(p.to(device)).cpu() for p in split.pixels.split(256)])
            predicted = logits.argmax(-1)
        else:
            ids, mask = prompts
            classifier = zero_shot_classifier(model.encode_text(ids.to(device), mask.to(device)))
            predicted = zero_shot_predict(_embed_images(model, split.pixels), classifier.cpu())
            predicted = predicted.argmax(-1)
    return (predicted == split.labels).float().mean().item()


def evaluate_vision_run(run_dir: Path | str, *, device: str = "auto", split: str = "test") -> dict:
    """Score a finished image run on ``split``: accuracy (zero-shot for CLIP) and parameters;
    for CLIP also image-text retrieval recall@1/5/10 over the split's captions."""
    net, tokenizer, config = load_run(run_dir, device=device)
    kind = config["kind"]
    data = prepare_images(config, split, tokenizer if kind == "clip" else None)
    prompts = _prompts(config, tokenizer) if kind == "clip" else None
    scores: dict[str, Any] = {
        "arch": config["model"]["arch"],
        "split": split,
        "images": len(data.labels),
        "parameters": sum(p.numel() for p in net.parameters()),
        "accuracy": _accuracy(net, data, prompts),
    }
    if kind == "clip":
        assert data.ids is not None and data.mask is not None and data.captions is not None
        dev = _device(net)
        with eval_mode(net), torch.no_grad():
            texts = torch.cat(
                [
                    net.encode_text(i.to(dev), m.to(dev)).cpu()
                    for i, m in zip(data.ids.split(256), data.mask.split(256), strict=True)
                ]
            )
            scores.update(recall_at_k(_embed_images(net, data.pixels), texts, data.captions))
        scores["distinct_captions"] = len(set(data.captions))
    return scores


def read_scores(run_dir: Path | str) -> dict[str, Any] | None:
    """A finished image run's test scores (``metrics.json``), or ``None``."""
    path = Path(run_dir) / METRICS_FILE
    return read_json(path) if path.is_file() else None


def summary_line(scores: Mapping[str, Any]) -> str:
    """One line for the end of ``groundwork pretrain``."""
    what = "zero-shot accuracy" if "image_to_text_r@1" in scores else "accuracy"
    line = (
        f"{scores['split']} split ({scores['images']} images): {what} "
        f"{100 * scores['accuracy']:.1f}%, {scores['parameters']:,} parameters"
    )
    if "image_to_text_r@1" in scores:
        line += (
            f"; recall@1/5 image->text {100 * scores['image_to_text_r@1']:.1f}/"
            f"{100 * scores['image_to_text_r@5']:.1f}%, text->image "
            f"{100 * scores['text_to_image_r@1']:.1f}/{100 * scores['text_to_image_r@5']:.1f}%"
        )
    return line
