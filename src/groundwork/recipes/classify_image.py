"""``groundwork classify-image``: classify handwritten digits with an image run — a ViT or CNN by
its trained head, a CLIP run *zero-shot*, by text prompts it was never trained to classify with.

For a CLIP run every class name is put into a template (``"a handwritten {}"`` by default,
``--template`` changes it: ``"a thick handwritten {}"``, ``"the digit {}"``), the prompts are
embedded by the text encoder, and each image goes to the class whose prompt embedding is
closest (:mod:`groundwork.evaluate.zero_shot`). The command prints the first ``--show`` images
of the split as text, with the prediction and its probability, then the accuracy per class and
overall. Chapter 20.
"""

from pathlib import Path
from typing import Literal

import torch

from groundwork.corpus.images import class_prompts, load_digits, render
from groundwork.errors import ConfigError
from groundwork.evaluate.zero_shot import zero_shot_classifier, zero_shot_predict
from groundwork.recipes.pretrain_vision import encode_captions, prepare_images
from groundwork.runs import load_run
from groundwork.runtime import eval_mode

__all__ = ["classify_image"]


def classify_image(
    run: Path,
    split: Literal["train", "val", "test"] = "test",
    template: str | None = None,
    show: int = 4,
    device: str = "auto",
) -> None:
    """Classify the digits of a split with an image run (vit, image-cnn, or clip zero-shot).

    Args:
        run: A run directory written by `groundwork pretrain --config configs/digits-*.yaml`.
        split: Which digits to classify.
        template: CLIP only: the prompt, with {} where the class name goes (default: the run's,
            "a handwritten {}").
        show: Print this many images with their predictions.
        device: cpu, cuda, or auto.
    """
    net, tokenizer, config = load_run(run, device=device)
    kind = config.get("kind")
    if kind not in ("image-classifier", "clip"):
        raise ConfigError(f"{run} is a {kind!r} run, not an image model (vit, image-cnn, clip)")
    if template is not None and kind != "clip":
        raise ConfigError("--template is for CLIP runs (zero-shot); this run has a trained head")
    if template is not None and template.count("{}") != 1:
        raise ConfigError(f"--template must hold {{}} once, where the class goes: {template!r}")
    labels: list[str] = list(config["labels"])
    data = prepare_images(config, split)
    dev = next(net.parameters()).device
    with eval_mode(net), torch.no_grad():
        if kind == "clip":
            template = template or config["captions"]["template"]
            prompts = class_prompts(template)
            ids, mask = encode_captions(tokenizer, prompts, int(config["model"]["max_seq_len"]))
            classifier = zero_shot_classifier(net.encode_text(ids.to(dev), mask.to(dev))).cpu()
            images = torch.cat([net.encode_image(p.to(dev)).cpu() for p in data.pixels.split(256)])
            scale = net.temperature_scale().cpu()  # the learned 1 / temperature
            probs = zero_shot_predict(images, classifier, scale)  # (N, classes)
            print(f"zero-shot by the prompts {prompts[0]!r} ... {prompts[-1]!r}")
        else:
            logits = torch.cat([net(p.to(dev)).cpu() for p in data.pixels.split(256)])
            probs = logits.softmax(-1)  # (N, classes)
    confidence, predicted = probs.max(-1)
    for i in range(min(show, len(predicted))):
        verdict = "right" if predicted[i] == data.labels[i] else "WRONG"
        print(
            f"\nimage {i}: a {labels[int(data.labels[i])]}, predicted "
            f"{labels[int(predicted[i])]} (p {confidence[i]:.2f}) {verdict}"
        )
        print(render(load_digits(split).images[i]))
    right = predicted == data.labels
    print()
    per_class = [
        f"{name} {100 * right[data.labels == c].float().mean():.0f}%"
        for c, name in enumerate(labels)
        if bool((data.labels == c).any())
    ]
    print("per class: " + ", ".join(per_class))
    print(
        f"accuracy on the {split} split: {100 * right.float().mean():.1f}% of {len(right)} images"
    )
