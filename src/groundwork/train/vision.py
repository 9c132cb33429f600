r"""Training on images: labelled images (and their captions) in epochs, and the two objectives
chapter 20 trains with, image classification and CLIP's contrastive loss.

**Data.** :class:`ImageData` holds images as one float tensor ``(N, C, H, W)`` with a class id
each and, for CLIP, a caption each, already encoded as ``(N, T)`` token ids with an attention
mask. Every epoch is a new shuffle drawn with the engine's generator (so a resumed run reads the
same batches), and with ``shift`` each training image is moved by up to that many pixels in
each direction, the empty border filled with the background value: the cheapest augmentation,
which a CNN hardly needs (its pooling is nearly shift-invariant already) and a ViT, with a
learned position for every patch, does. Batches are dicts with ``transformers``' key names:
``pixel_values``, ``labels`` and, with captions, ``input_ids`` and ``attention_mask``.

**Objectives** (:class:`~groundwork.train.objectives.Objective`s of the one engine):

* :class:`ImageClassificationObjective`: ``model(pixel_values)`` gives ``(B, C)`` logits; the
  mean cross-entropy against ``labels``, and the metric ``accuracy``.
* :class:`ContrastiveObjective`: ``model(pixel_values, input_ids, attention_mask)`` gives CLIP's
  similarity logits; the loss is the symmetric InfoNCE of
  :func:`~groundwork.models.clip.clip_loss`: within a batch of :math:`B` pairs each image must
  pick its own caption among the :math:`B` captions, and each caption its own image,

  $$ \mathcal{L} = \tfrac12\Big(-\tfrac1B\sum_i \log \frac{e^{s_{ii}/\tau}}{\sum_j e^{s_{ij}/\tau}}
     -\tfrac1B\sum_i \log \frac{e^{s_{ii}/\tau}}{\sum_j e^{s_{ji}/\tau}}\Big) $$

  with :math:`s_{ij}` the cosine of image :math:`i` and caption :math:`j` and :math:`\tau` the
  learned temperature. Metrics: ``accuracy`` (the image picks its own caption) and ``scale``
  (:math:`1/\tau`). Two images of the same digit with the same attributes get the same caption,
  so some "negatives" are in fact positives: a small batch keeps such collisions rare.

``items`` is the number of images (pairs). Chapter 20.
"""

from collections.abc import Iterator
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from groundwork.errors import ConfigError
from groundwork.models.clip import clip_loss
from groundwork.train.data import Batch, encode_rng_state, restore_rng_state
from groundwork.train.objectives import LossOutput

__all__ = ["ContrastiveObjective", "ImageClassificationObjective", "ImageData", "shift_images"]


def shift_images(
    images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, fill: float
) -> torch.Tensor:
    """Move each image ``(B, C, H, W)`` by ``(dy[b], dx[b])`` pixels (down and right for
    positive values), filling what is uncovered with ``fill``.

    >>> x = torch.arange(9.0).view(1, 1, 3, 3)
    >>> shift_images(x, torch.tensor([1]), torch.tensor([0]), fill=-1.0)[0, 0].tolist()
    [[-1.0, -1.0, -1.0], [0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    """
    B, C, H, W = images.shape
    rows = torch.arange(H).view(1, H, 1) - dy.view(B, 1, 1)  # (B, H, 1): the source row
    cols = torch.arange(W).view(1, 1, W) - dx.view(B, 1, 1)  # (B, 1, W): the source column
    inside = (rows >= 0) & (rows < H) & (cols >= 0) & (cols < W)  # (B, H, W)
    flat = (rows.clamp(0, H - 1) * W + cols.clamp(0, W - 1)).view(B, 1, H * W)  # (B, 1, H W)
    moved = images.reshape(B, C, H * W).gather(2, flat.expand(B, C, H * W)).view(B, C, H, W)
    return torch.where(inside.unsqueeze(1), moved, torch.full_like(moved, fill))


class ImageData:
    """Images with labels (and captions) for the engine, in shuffled epochs.

    Args:
        images: Training images ``(N, C, H, W)``, float, already normalised.
        labels: Their class ids ``(N,)``.
        batch_size: Images per training batch.
        val_images: Validation images (read in order, ``val_batch_size`` at a time).
        val_labels: Their class ids.
        captions: Token ids of each training image's caption ``(N, T)`` with
            ``caption_mask`` ``(N, T)`` (1 for tokens, 0 for padding); ``None`` for a classifier.
        val_captions: The validation captions and ``val_caption_mask``.
        shift: Move each training image by up to this many pixels (0: no augmentation).
        background: The value an empty pixel has after normalisation (what a shift fills in).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        batch_size: int,
        val_images: torch.Tensor | None = None,
        val_labels: torch.Tensor | None = None,
        captions: torch.Tensor | None = None,
        caption_mask: torch.Tensor | None = None,
        val_captions: torch.Tensor | None = None,
        val_caption_mask: torch.Tensor | None = None,
        val_batch_size: int = 256,
        shift: int = 0,
        background: float = 0.0,
    ) -> None:
        if images.dim() != 4 or len(images) == 0:
            raise ConfigError(f"images must be a non-empty (N, C, H, W) tensor, got {images.shape}")
        if len(labels) != len(images):
            raise ConfigError(f"{len(images)} images but {len(labels)} labels")
        for name, tokens in (("captions", captions), ("val_captions", val_captions)):
            if tokens is not None and tokens.dim() != 2:
                raise ConfigError(f"{name} must be (N, T) token ids, got {tuple(tokens.shape)}")
        if captions is not None and len(captions) != len(images):
            raise ConfigError(f"{len(images)} images but {len(captions)} captions")
        if shift < 0 or batch_size < 1:
            raise ConfigError(f"need shift >= 0 and batch_size >= 1, got {shift}, {batch_size}")
        self.images, self.labels, self.batch_size = images, labels, batch_size
        self.captions, self.caption_mask = captions, caption_mask
        self.val_images = images[:0] if val_images is None else val_images
        self.val_labels = labels[:0] if val_labels is None else val_labels
        self.val_captions, self.val_caption_mask = val_captions, val_caption_mask
        self.val_batch_size, self.shift, self.background = val_batch_size, shift, background
        self._order: torch.Tensor | None = None  # this epoch's permutation
        self._epoch_rng: torch.Tensor | None = None  # the generator's state at its start
        self._position = 0  # batches read in this epoch

    @property
    def steps_per_epoch(self) -> int:
        """Batches in one epoch (the last one may be short)."""
        return -(-len(self.images) // self.batch_size)

    def _batch(self, idx: torch.Tensor, *, train: bool, generator: Any = None) -> Batch:
        split = (
            (self.images, self.labels, self.captions, self.caption_mask)
            if train
            else (self.val_images, self.val_labels, self.val_captions, self.val_caption_mask)
        )
        images, labels, captions, mask = split
        pixels = images[idx]  # (B, C, H, W)
        if train and self.shift:
            dy, dx = torch.randint(-self.shift, self.shift + 1, (2, len(idx)), generator=generator)
            pixels = shift_images(pixels, dy, dx, self.background)
        batch: dict[str, torch.Tensor] = {"pixel_values": pixels, "labels": labels[idx]}
        if captions is not None:
            batch["input_ids"] = captions[idx]  # (B, T)
            batch["attention_mask"] = (
                torch.ones_like(captions[idx]) if mask is None else mask[idx]
            )  # (B, T)
        return batch

    def next_batch(self, generator: torch.Generator) -> Batch:
        if self._order is None or self._position * self.batch_size >= len(self._order):
            self._epoch_rng = generator.get_state()
            self._order = torch.randperm(len(self.images), generator=generator)
            self._position = 0
        start = self._position * self.batch_size
        self._position += 1
        return self._batch(
            self._order[start : start + self.batch_size], train=True, generator=generator
        )

    def val_batches(self) -> Iterator[Batch]:
        for start in range(0, len(self.val_images), self.val_batch_size):
            idx = torch.arange(start, min(start + self.val_batch_size, len(self.val_images)))
            yield self._batch(idx, train=False)

    @property
    def val_description(self) -> str:
        return f"{len(self.val_images)} validation images"

    def state_dict(self) -> dict[str, Any]:
        """Where in which epoch the data is (for exact resume)."""
        if self._epoch_rng is None:
            return {}
        return {"epoch_rng": encode_rng_state(self._epoch_rng), "position": self._position}

    def load_state_dict(self, state: dict[str, Any], generator: torch.Generator) -> None:
        """Go back to the saved position: redraw the epoch's permutation, then replay the
        batches read since (their shifts use the generator too)."""
        if not state:
            return
        restore_rng_state(generator, state["epoch_rng"])
        self._order, self._position = None, 0
        for _ in range(int(state["position"])):
            self.next_batch(generator)


# --8<-- [start:objectives]
class ImageClassificationObjective:
    """One class per image: ``model(pixel_values)`` gives ``(B, C)`` logits; mean cross-entropy."""

    def __call__(self, model: nn.Module, batch: Batch) -> LossOutput:
        logits = model(batch["pixel_values"])  # (B, C)
        labels = batch["labels"]  # (B,)
        loss = F.cross_entropy(logits.float(), labels)
        accuracy = (logits.detach().argmax(-1) == labels).float().mean()
        return LossOutput(loss=loss, items=labels.numel(), metrics={"accuracy": accuracy})


class ContrastiveObjective:
    """CLIP's symmetric InfoNCE over a batch of (image, caption) pairs."""

    def __call__(self, model: nn.Module, batch: Batch) -> LossOutput:
        out = model(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
        logits = out.logits_per_text.float()  # (B, B): caption i against image j
        targets = torch.arange(len(logits), device=logits.device)  # pair i is on the diagonal
        accuracy = (logits.detach().argmax(0) == targets).float().mean()  # image -> caption
        scale = cast(Any, model).temperature_scale().detach()  # 1 / temperature, <= 100
        return LossOutput(
            loss=clip_loss(logits),
            items=len(logits),
            tokens=int(batch["attention_mask"].sum()),
            metrics={"accuracy": accuracy, "scale": scale},
        )


# --8<-- [end:objectives]
