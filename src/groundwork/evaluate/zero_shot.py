"""Scoring a contrastive image-text model: zero-shot classification by text prompts, and
image-text retrieval recall@k.

**Zero-shot classification** (Radford et al. 2021, §3.1). A CLIP model was never trained to
classify, but every class can be *described*: the prompt ``"a handwritten seven"`` is embedded
by the text encoder, once per class, and an image is given the class whose prompt embedding has
the highest cosine with the image's embedding. The text encoder has in effect written the
weights of a linear classifier: row :math:`c` of :math:`W` is the normalised embedding of prompt
:math:`c`, and the logits are :math:`W \\hat{v}` (scaled by the learned temperature, which changes
the probabilities but not the prediction). With several templates per class (``"a photo of a
{}"``, ...) their normalised embeddings are averaged (prompt ensembling, §3.1.4).

**Retrieval.** Given the embeddings of images and of captions, image→text recall@k is the
fraction of images for which a correct caption is among the k captions of highest cosine, and
text→image the converse. Captions built from a digit's class and attributes repeat (many
images are "a thin handwritten one"), so retrieval runs over the *distinct* captions: an image's
correct caption is its own string, and a caption's correct images are all those it describes.

Chapter 20.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["recall_at_k", "zero_shot_classifier", "zero_shot_predict"]


# --8<-- [start:zero_shot]
def zero_shot_classifier(text_embeds: torch.Tensor, n_templates: int = 1) -> torch.Tensor:
    """The classifier weights ``(n_classes, P)`` from prompt embeddings ``(n_classes *
    n_templates, P)`` (class-major: the templates of class 0 first): each prompt normalised,
    the templates of a class averaged, the mean normalised again."""
    if len(text_embeds) % n_templates:
        raise ValueError(f"{len(text_embeds)} prompts are not {n_templates} per class")
    per_class = F.normalize(text_embeds, dim=-1).view(-1, n_templates, text_embeds.shape[-1])
    return F.normalize(per_class.mean(dim=1), dim=-1)  # (n_classes, P)


def zero_shot_predict(
    image_embeds: torch.Tensor, classifier: torch.Tensor, scale: float | torch.Tensor = 1.0
) -> torch.Tensor:
    """Class probabilities ``(N, n_classes)``: the softmax of the cosines of each image
    ``(N, P)`` with each class's prompt embedding, times ``scale`` (the model's learned
    ``1 / temperature``); ``argmax`` is the prediction, whatever the scale."""
    cosines = F.normalize(image_embeds, dim=-1) @ classifier.T  # (N, n_classes)
    return (scale * cosines).softmax(dim=-1)


# --8<-- [end:zero_shot]


# --8<-- [start:recall]
def recall_at_k(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    captions: Sequence[str],
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Image→text and text→image recall@k over the distinct captions.

    Args:
        image_embeds: ``(N, P)``, one per image.
        text_embeds: ``(N, P)``, the embedding of image ``i``'s caption in row ``i``.
        captions: The N caption strings (equal strings are one caption).
        ks: The cut-offs.

    Returns:
        ``{"image_to_text_r@k": ..., "text_to_image_r@k": ...}`` as fractions in [0, 1].
    """
    if not len(image_embeds) == len(text_embeds) == len(captions):
        raise ValueError("need one caption (and one caption embedding) per image")
    distinct = sorted(set(captions))
    index = {c: j for j, c in enumerate(distinct)}
    first = [captions.index(c) for c in distinct]  # a row holding each distinct caption
    truth = torch.tensor([index[c] for c in captions])  # (N,): each image's caption
    sims = F.normalize(image_embeds, dim=-1) @ F.normalize(text_embeds[first], dim=-1).T  # (N, M)
    out: dict[str, float] = {}
    for k in ks:
        top_texts = sims.topk(min(k, sims.shape[1]), dim=1).indices  # (N, k)
        hit = (top_texts == truth[:, None]).any(dim=1)
        out[f"image_to_text_r@{k}"] = hit.float().mean().item()
        top_images = sims.topk(min(k, sims.shape[0]), dim=0).indices  # (k, M)
        found = (truth[top_images] == torch.arange(len(distinct))[None, :]).any(dim=0)
        out[f"text_to_image_r@{k}"] = found.float().mean().item()
    return out


# --8<-- [end:recall]
