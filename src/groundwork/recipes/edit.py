"""The model-editing commands: ``groundwork edit`` writes one fact into a model (ROME, MEMIT or
constrained fine-tuning) and saves the edited model as a run directory; ``groundwork trace``
draws where the model recalls a fact (causal tracing). Chapter 19 (Model editing).

The run directory of an edit is an ordinary ``kind: lm`` run (config, weights,
``tokenizer.json``, the chat template if the model has one), so ``groundwork generate DIR`` and
``groundwork evaluate DIR`` read it; its ``config.yaml`` has an ``edit`` section saying what was
written where, and ``edit.json`` the before/after probabilities of the target.
"""

import time
from pathlib import Path
from typing import Any, Literal

from groundwork.errors import ConfigError

__all__ = ["edit", "trace"]

Method = Literal["rome", "memit", "ft"]
EDIT_FILE = "edit.json"


def _load(model: str) -> tuple[Any, Any, str | None]:
    from groundwork.recipes.generate import load_model

    net, tokenizer, template = load_model(model)
    return net.eval(), tokenizer, template


def _target_probability(net: Any, tokenizer: Any, request: Any) -> float:
    """p(target | prompt): the product of the target tokens' probabilities, teacher forced."""
    import math

    from groundwork.edit.metrics import target_token_log_probs

    per_token = target_token_log_probs(net, tokenizer, [request.prompt], [request.target])[0]
    return math.exp(float(per_token.sum()))


def _greedy(net: Any, tokenizer: Any, prompt: str, n: int = 12) -> str:
    from groundwork.generate import GenerationConfig, generate_text

    return generate_text(net, tokenizer, prompt, GenerationConfig(max_new_tokens=n, temperature=0))


def _required(**values: Any) -> None:
    for name, value in values.items():
        if value is None:
            raise ConfigError(f"--{name} is required")


def edit(
    model: str,
    prompt: str | None = None,
    subject: str | None = None,
    target: str | None = None,
    out: Path | None = None,
    method: Method = "rome",
    layer: int | None = None,
    layers: list[int] | None = None,
    n_tokens: int | None = None,
    overwrite: bool = False,
) -> None:
    """Write a new fact into a model and save the edited model as a run directory.

    Example: ``groundwork edit smollm2-135m-instruct --prompt "The Eiffel Tower is located in"
    --subject "Eiffel Tower" --target " Rome" --out runs/edited``, then ``groundwork generate
    runs/edited --prompt "The Eiffel Tower is located in" --strategy greedy``.

    Args:
        model: A run directory or a named model (smollm2-135m-instruct).
        prompt: The text just before the fact's object; it must contain the subject.
        subject: The entity the fact is about (the edit is keyed on its last token).
        target: The new continuation, with its leading space (" Rome").
        out: The run directory to write.
        method: rome (one rank-one update of one MLP), memit (spread over several MLPs) or ft
            (fine-tune one MLP's output weights within a small L-infinity ball).
        layer: The edited layer for rome and ft (default: ROME's default for the model; ft: 0).
        layers: The edited layers for memit, as a list: --layers [3,4,5,6,7] (default: MEMIT's
            five).
        n_tokens: Tokens of wiki-sample the key statistics average over (rome, memit; cached
            under GROUNDWORK_HOME/edit-stats).
        overwrite: Replace an existing run at --out.
    """
    import torch

    from groundwork.edit.covariance import DEFAULT_N_TOKENS
    from groundwork.edit.request import EditRequest
    from groundwork.runs import TOKENIZER_FILE, check_writable, write_run

    _required(prompt=prompt, subject=subject, target=target, out=out)
    assert prompt is not None and subject is not None and target is not None and out is not None
    if method not in ("rome", "memit", "ft"):
        raise ConfigError(f"--method must be rome, memit or ft, got {method!r}")
    if layers is not None and method != "memit":
        raise ConfigError("--layers is for --method memit; give --layer for rome and ft")
    if layer is not None and method == "memit":
        raise ConfigError("--layer is for rome and ft; give --layers for memit")
    out = Path(out)
    check_writable(out, overwrite=overwrite, resume_hint=False)
    stats_tokens = DEFAULT_N_TOKENS if n_tokens is None else n_tokens
    request = EditRequest(prompt=prompt, subject=subject, target=target)  # checks the input
    net, tokenizer, template = _load(model)
    before = _target_probability(net, tokenizer, request)
    print(f"before: p({target!r}) = {before:.4f}; greedy: {_greedy(net, tokenizer, prompt)!r}")
    start = time.perf_counter()
    section: dict[str, Any] = {
        "method": method,
        "source_model": model,
        "prompt": prompt,
        "subject": subject,
        "target": target,
    }
    if method == "rome":
        from groundwork.edit.rome import RomeConfig, apply_rome, default_layer

        rome = RomeConfig(layer=layer, n_tokens=stats_tokens)
        apply_rome(net, tokenizer, request, rome)
        section["layers"] = [layer if layer is not None else default_layer(net)]
    elif method == "memit":
        from groundwork.edit.memit import MemitConfig, apply_memit, default_layers

        memit = MemitConfig(
            layers=tuple(layers) if layers is not None else None, n_tokens=stats_tokens
        )
        apply_memit(net, tokenizer, request, memit)
        section["layers"] = list(layers) if layers is not None else list(default_layers(net))
    else:
        from groundwork.edit.finetune import apply_ft

        apply_ft(net, tokenizer, [request], layer=0 if layer is None else layer)
        section["layers"] = [0 if layer is None else layer]
    seconds = time.perf_counter() - start
    with torch.no_grad():
        after = _target_probability(net, tokenizer, request)
    print(f"after:  p({target!r}) = {after:.4f}; greedy: {_greedy(net, tokenizer, prompt)!r}")
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(out / TOKENIZER_FILE)
    write_run(net, out, edit=section)
    if template is not None:
        from groundwork.align.runs import CHAT_TEMPLATE_FILE

        (out / CHAT_TEMPLATE_FILE).write_text(template, encoding="utf-8")
    from groundwork.fileio import write_json

    write_json(
        out / EDIT_FILE,
        {**section, "p_target_before": before, "p_target_after": after, "seconds": seconds},
    )
    print(f"edited layer(s) {section['layers']} in {seconds:.1f} s; wrote {out}")


def trace(
    model: str,
    prompt: str | None = None,
    subject: str | None = None,
    out: Path = Path("trace.png"),
    target: str | None = None,
    kinds: str = "hidden,mlp,attn",
    samples: int = 10,
    noise: float | None = None,
    seed: int = 0,
) -> None:
    """Causal tracing: corrupt the subject's embeddings with noise, restore one hidden state at a
    time, and plot how much of the answer's probability each state brings back.

    Args:
        model: A run directory or a named model (smollm2-135m-instruct).
        prompt: A prompt whose next token is the fact's object ("The Eiffel Tower is located in
            the city of").
        subject: The entity in the prompt whose embeddings are corrupted.
        out: The PNG to write (the numbers go beside it, as .json).
        target: The answer to trace, with its leading space (default: the model's greedy next
            token).
        kinds: Which states to restore, comma-separated: hidden (the residual stream), mlp,
            attn.
        samples: Noise draws averaged over.
        noise: The noise's standard deviation (default 3 times the embeddings' std).
        seed: Seed of the noise.
    """
    from groundwork.edit.tracing import causal_traces, plot_traces
    from groundwork.fileio import write_json

    _required(prompt=prompt, subject=subject)
    assert prompt is not None and subject is not None
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ConfigError(f"--out must name a .png file, got {out}")
    net, tokenizer, _ = _load(model)
    start = time.perf_counter()
    results = causal_traces(
        net,
        tokenizer,
        prompt,
        subject,
        kinds=tuple(k.strip() for k in kinds.split(",") if k.strip()),
        target=target,
        samples=samples,
        noise=noise,
        seed=seed,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    plot_traces(results, out, title=f"{prompt!r} -> {next(iter(results.values())).answer!r}")
    summary: dict[str, Any] = {"prompt": prompt, "subject": subject, "kinds": {}}
    for kind, r in results.items():
        token, layer = r.peak()
        summary["answer"] = r.answer
        summary["clean_p"] = r.clean_p
        summary["corrupted_p"] = r.corrupted_p
        summary["tokens"] = list(r.tokens)
        summary["kinds"][kind] = {
            "window": r.window,
            "scores": r.scores.tolist(),
            "peak_token": token,
            "peak_layer": layer,
            "peak_indirect_effect": float(r.indirect_effect[token, layer]),
        }
        print(
            f"{kind:>6}: peak at token {token} ({r.tokens[token]!r}), layer {layer}: "
            f"p = {float(r.scores[token, layer]):.3f} (clean {r.clean_p:.3f}, corrupted "
            f"{r.corrupted_p:.3f})"
        )
    write_json(out.with_suffix(".json"), summary)
    print(f"traced in {time.perf_counter() - start:.0f} s; wrote {out}")
