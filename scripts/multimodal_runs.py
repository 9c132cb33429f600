"""Chapter 20's numbers and pictures: train the ViT, the CNN baseline and CLIP on the digits
(``configs/digits-*.yaml``), then draw the patch grid, the ViT's [CLS] attention, and CLIP's
joint embedding space.

Each run is ``groundwork pretrain --config configs/digits-X.yaml --out runs/digits-X`` (skipped
when the run already holds its test scores; ``--fresh`` retrains). Writes
``benchmarks/results/multimodal-cpu.json`` (scores, parameters, training seconds, machine),
``docs/results/multimodal.md`` (the table the chapter includes) and
``docs/chapters/img/{patches,vit-attention,clip-embeddings}.png``.

Usage: ``python scripts/multimodal_runs.py [--fresh] [--threads 2]``.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from groundwork.corpus import images as digits  # noqa: E402
from groundwork.recipes.pretrain_vision import encode_captions, prepare_images  # noqa: E402
from groundwork.runs import load_run  # noqa: E402
from machine import machine  # noqa: E402

RUNS = {"vit": "digits-vit", "cnn": "digits-cnn", "clip": "digits-clip"}
JSON = ROOT / "benchmarks" / "results" / "multimodal-cpu.json"
TABLE = ROOT / "docs" / "results" / "multimodal.md"
IMG = ROOT / "docs" / "chapters" / "img"
LABEL = {"vit": "ViT", "cnn": "CNN (baseline)", "clip": "CLIP, zero-shot"}


def train(name: str, fresh: bool) -> dict[str, Any]:
    run = ROOT / "runs" / RUNS[name]
    scores = run / "metrics.json"
    if fresh or not scores.is_file():
        config = ROOT / "configs" / f"{RUNS[name]}.yaml"
        command = [sys.executable, "-m", "groundwork", "pretrain", "--config", str(config)]
        command += ["--out", str(run), "--overwrite", "true", "--train.progress", "false"]
        subprocess.run(command, check=True, cwd=ROOT)
    return dict(json.loads(scores.read_text()))


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| model | test accuracy | parameters | training time (2 CPU threads) |",
        "|---|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {LABEL[name]} | {100 * r['accuracy']:.1f}% | {r['parameters']:,} | "
            f"{r['train_seconds']:.0f} s |"
        )
    clip = results["clip"]
    lines += [
        "",
        f"CLIP retrieval over the {clip['distinct_captions']} distinct captions of the "
        f"{clip['images']} test digits:",
        "",
        "| direction | recall@1 | recall@5 | recall@10 |",
        "|---|---:|---:|---:|",
    ]
    for d, label in (("image_to_text", "image → caption"), ("text_to_image", "caption → image")):
        cells = " | ".join(f"{100 * clip[f'{d}_r@{k}']:.1f}%" for k in (1, 5, 10))
        lines.append(f"| {label} | {cells} |")
    return "\n".join(lines) + "\n"


def plot_patches(out: Path) -> None:
    import matplotlib.pyplot as plt

    data = digits.load_digits("test")
    image = data.images[0].float()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), gridspec_kw={"width_ratios": [1, 2.2]})
    axes[0].imshow(image, cmap="gray_r", vmin=0, vmax=16)
    for k in range(1, 4):
        axes[0].axhline(2 * k - 0.5, color="tab:red", lw=1.5)
        axes[0].axvline(2 * k - 0.5, color="tab:red", lw=1.5)
    for i in range(16):
        r, c = divmod(i, 4)
        axes[0].text(2 * c - 0.3, 2 * r - 0.1, str(i + 1), color="tab:blue", fontsize=8)
    axes[0].set_title(f"a {digits.DIGIT_NAMES[int(data.labels[0])]}: 8x8 pixels, 16 patches")
    axes[0].axis("off")
    strip = torch.ones(2, 16 * 3 + 3) * float("nan")
    for i in range(16):  # the patches in raster order, as a sequence of tokens after [CLS]
        r, c = divmod(i, 4)
        strip[:, 3 + 3 * i : 3 + 3 * i + 2] = image[2 * r : 2 * r + 2, 2 * c : 2 * c + 2]
    axes[1].imshow(strip, cmap="gray_r", vmin=0, vmax=16)
    axes[1].text(0.5, 0.5, "CLS", ha="center", va="center", fontsize=7, color="tab:red")
    for i in range(16):
        axes[1].text(3.5 + 3 * i, 2.2, str(i + 1), ha="center", va="top", fontsize=7)
    axes[1].set_title("the sequence the encoder reads: [CLS], then patches 1..16")
    axes[1].axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=130)
    plt.close(fig)


@torch.no_grad()
def plot_attention(run: Path, out: Path, n: int = 8) -> None:
    import matplotlib.pyplot as plt

    net, _, config = load_run(run, device="cpu")
    net.eval()
    data = prepare_images(config, "test")
    maps = net.vit.attention_maps(data.pixels[:n])  # per layer (B, H, 17, 17)
    last = maps[-1][:, :, 0, 1:].mean(dim=1)  # (B, 16): [CLS] -> patches, mean over heads
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.6))
    for i in range(n):
        axes[0, i].imshow(data.pixels[i, 0], cmap="gray_r")
        axes[0, i].set_title(digits.DIGIT_NAMES[int(data.labels[i])], fontsize=9)
        grid = last[i].view(4, 4)
        axes[1, i].imshow(grid, cmap="viridis")
        for ax in axes[:, i]:
            ax.axis("off")
    axes[1, 0].set_title("[CLS] attention", fontsize=8, loc="left")
    fig.suptitle("The trained ViT's last layer: where [CLS] looks (mean over heads)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=130)
    plt.close(fig)


@torch.no_grad()
def plot_embeddings(run: Path, out: Path) -> None:
    import matplotlib.pyplot as plt

    net, tokenizer, config = load_run(run, device="cpu")
    net.eval()
    data = prepare_images(config, "test")
    images = torch.nn.functional.normalize(net.encode_image(data.pixels), dim=-1)  # (N, P)
    template = config["captions"]["template"]
    prompts = digits.class_prompts(template)
    ids, mask = encode_captions(tokenizer, prompts, int(config["model"]["max_seq_len"]))
    texts = torch.nn.functional.normalize(net.encode_text(ids, mask), dim=-1)  # (10, P)
    mean = images.mean(dim=0)
    _, _, v = torch.linalg.svd(images - mean, full_matrices=False)
    xy = (images - mean) @ v[:2].T  # (N, 2): the images' first two principal components
    txy = (texts - mean) @ v[:2].T  # (10, 2): the prompts in the same plane
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 5.8), gridspec_kw={"width_ratios": [1.2, 1]})
    colours = plt.get_cmap("tab10")
    for c in range(10):
        pts = xy[data.labels == c]
        ax.scatter(pts[:, 0], pts[:, 1], s=9, color=colours(c), alpha=0.6)
        ax.scatter(*txy[c].tolist(), s=220, marker="*", color=colours(c), edgecolor="black")
        ax.annotate(str(c), txy[c].tolist(), fontsize=9, xytext=(5, 5), textcoords="offset points")
    ax.set_title(
        "test images (dots) and the prompts 'a handwritten <digit>' (stars),\n"
        "on the images' first two principal components",
        fontsize=10,
    )
    cosines = images @ texts.T  # (N, 10)
    table = torch.stack([cosines[data.labels == c].mean(dim=0) for c in range(10)])  # (10, 10)
    shown = bx.imshow(table, cmap="viridis")
    bx.set_xticks(range(10), [str(c) for c in range(10)])
    bx.set_yticks(range(10), [str(c) for c in range(10)])
    bx.set_xlabel("prompt 'a handwritten <digit>'")
    bx.set_ylabel("test images of digit")
    bx.set_title("mean cosine of image and prompt", fontsize=10)
    fig.colorbar(shown, ax=bx, fraction=0.046)
    fig.suptitle("CLIP trained on digits and captions: the joint embedding space", fontsize=11)
    fig.tight_layout()
    fig.savefig(out, dpi=130)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fresh", action="store_true", help="retrain the runs")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {name: train(name, args.fresh) for name in RUNS}
    JSON.write_text(
        json.dumps({"runs": results, "machine": machine(threads=args.threads)}, indent=2) + "\n"
    )
    TABLE.write_text(table(results))
    plot_patches(IMG / "patches.png")
    plot_attention(ROOT / "runs" / RUNS["vit"], IMG / "vit-attention.png")
    plot_embeddings(ROOT / "runs" / RUNS["clip"], IMG / "clip-embeddings.png")
    print(TABLE.read_text())


if __name__ == "__main__":
    main()
