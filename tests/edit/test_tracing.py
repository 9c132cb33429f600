"""Causal tracing: against a hook-free forward pass written out per family, its exact
invariants (no noise, the last layer, tokens before the subject), batching and seeding, the
figure and bad input."""

import copy
from typing import Any

import pytest
import torch
from torch import nn

from groundwork.edit.layers import decoder_blocks, token_embedding
from groundwork.edit.tracing import (
    KINDS,
    TraceResult,
    causal_trace,
    causal_traces,
    corruption_noise,
    noise_scale,
    plot_traces,
    restored_layers,
    subject_range,
)
from groundwork.errors import ConfigError
from groundwork.models.gpt import GPT
from groundwork.models.llama import Llama
from groundwork.tokenize import train_tokenizer
from groundwork.tokenize.char import CharTokenizer
from helpers import tiny_gpt, tiny_llama

PROMPT, SUBJECT = "so red fox is", "red fox"  # 13 characters, the subject is tokens 3..9
TOKENIZER = CharTokenizer.train([PROMPT], vocab_size=97)
FAMILIES = ["llama", "gpt", "gpt-post"]


def sharp_model(family: str, n_layers: int = 4, **overrides: Any) -> nn.Module:
    """A seeded tiny model with its matrices scaled up 8x, so its next-token distribution is
    peaked and the noise moves it (at the default scale nothing the tests check would show)."""
    fields: dict[str, Any] = {"n_layers": n_layers, "vocab_size": TOKENIZER.vocab_size}
    if family == "gpt-post":
        fields["norm_position"] = "post"
    fields.update(overrides)
    model = tiny_llama(**fields) if family == "llama" else tiny_gpt(**fields)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(8)
    return model


def manual_forward(
    model: nn.Module,
    ids: torch.Tensor,
    noise: torch.Tensor,
    span: tuple[int, int],
    restore: tuple[str, int, range, dict[str, torch.Tensor]] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The model's forward pass written out block by block, without hooks: ``S`` copies of
    ``ids`` ``(T,)`` with ``noise`` ``(S, n, d)`` added to the subject's embeddings, and
    ``restore = (kind, token, layers, clean)`` putting clean states back. Returns the last
    position's probabilities ``(S, V)`` and row 0's states ``{kind: (L, T, d)}``."""
    S, T = noise.shape[0], ids.shape[0]
    states: dict[str, list[torch.Tensor]] = {k: [] for k in KINDS}

    def put(kind: str, layer: int, value: torch.Tensor) -> torch.Tensor:
        if restore is not None and restore[0] == kind and layer in restore[2]:
            value = value.clone()
            value[:, restore[1]] = restore[3][kind][layer, restore[1]]
        states[kind].append(value[0])
        return value

    emb = token_embedding(model)(ids).repeat(S, 1, 1)  # (S, T, d)
    emb[:, span[0] : span[1]] += noise
    positions = torch.arange(T)[None]  # (1, T)
    if isinstance(model, Llama):
        x, rope = emb, model.model.rotary(positions, dtype=emb.dtype)
        for j, layer in enumerate(model.model.layers):
            x = x + put("attn", j, layer.self_attn(layer.input_layernorm(x), rope=rope))
            x = put("hidden", j, x + put("mlp", j, layer.mlp(layer.post_attention_layernorm(x))))
        logits = model.lm_head(model.model.norm(x))
    else:
        assert isinstance(model, GPT)
        x = emb + model.wpe(positions)
        for j, b in enumerate(model.blocks):
            if b.norm_position == "pre":
                x = x + put("attn", j, b.attn(b.ln_1(x)))
                x = put("hidden", j, x + put("mlp", j, b.mlp(b.ln_2(x))))
            else:
                x = b.ln_1(x + put("attn", j, b.attn(x)))
                x = put("hidden", j, b.ln_2(x + put("mlp", j, b.mlp(x))))
        logits = model.lm_head(model.ln_f(x))
    probs = torch.softmax(logits[:, -1], dim=-1)  # (S, V)
    return probs, {k: torch.stack(v) for k, v in states.items()}


def test_restored_layers_is_the_references_window() -> None:
    # the reference: range(max(0, l - w // 2), min(L, l - (-w // 2)))
    for L in (1, 4, 30):
        for w in (1, 2, 3, 10, 61):
            for layer in range(L):
                expected = range(max(0, layer - w // 2), min(L, layer - (-w // 2)))
                assert restored_layers(layer, L, w) == expected
    assert restored_layers(15, 30, 10) == range(10, 20)  # ten layers, centred on 15
    assert restored_layers(0, 4, 10) == range(0, 4)


def test_subject_range_with_a_byte_level_bpe() -> None:
    texts = ["The Eiffel Tower is in Paris.", "The Space Needle is in Seattle."] * 20
    tok = train_tokenizer("bpe", texts, 300)
    for prompt, subject in [
        ("The Eiffel Tower is in", "Eiffel Tower"),
        ("The Space Needle is in", "Space Needle"),
        ("Eiffel Tower is in", "Eiffel Tower"),
        ("The Eiffel Tower is in", "The Eiffel"),
    ]:
        start, stop = subject_range(tok, prompt, subject)
        ids = tok.encode(prompt)
        assert tok.decode(ids[start:stop]).strip() == subject  # no more, no less
    assert subject_range(TOKENIZER, PROMPT, SUBJECT) == (3, 10)


@pytest.mark.parametrize("family", FAMILIES)
def test_matches_a_hook_free_forward_pass(family: str) -> None:
    """Every cell of every kind (windows 1 to 3 on 4 layers) against the forward pass written
    out with the restoration inline: catches a patch at the wrong token, layer, row or
    sublayer, noise in the wrong place, and the batch growing at the wrong block."""
    model = sharp_model(family)
    S, span = 3, subject_range(TOKENIZER, PROMPT, SUBJECT)
    ids = torch.tensor(TOKENIZER.encode(PROMPT))
    noise = corruption_noise(S, span[1] - span[0], 64, 1.0, seed=7)
    with torch.no_grad():
        clean_probs, clean = manual_forward(model, ids, torch.zeros(1, *noise.shape[1:]), span)
        answer = int(clean_probs[0].argmax())
        corrupted = float(manual_forward(model, ids, noise, span)[0][:, answer].mean())
        for kind, window in [("hidden", 1), ("mlp", 3), ("attn", 2)]:
            r = causal_trace(
                model,
                TOKENIZER,
                PROMPT,
                SUBJECT,
                kind=kind,
                samples=S,
                noise=1.0,
                seed=7,
                window=window,
            )
            assert r.answer_id == answer and r.subject_range == span
            assert r.clean_p == pytest.approx(float(clean_probs[0, answer]), abs=1e-6)
            assert r.corrupted_p == pytest.approx(corrupted, abs=1e-6)
            expected = torch.zeros(len(ids), 4)
            for t in range(len(ids)):
                for layer in range(4):
                    cell = (kind, t, restored_layers(layer, 4, window), clean)
                    probs, _ = manual_forward(model, ids, noise, span, cell)
                    expected[t, layer] = probs[:, answer].mean()
            torch.testing.assert_close(r.scores, expected, atol=1e-5, rtol=0)
            # not trivially flat: the noise matters and some restorations undo some of it
            assert abs(r.clean_p - r.corrupted_p) > 0.05
            assert float(r.indirect_effect.abs().max()) > 0.02


@pytest.mark.parametrize("family", FAMILIES)
def test_no_noise_means_no_indirect_effect(family: str) -> None:
    results = causal_traces(sharp_model(family), TOKENIZER, PROMPT, SUBJECT, samples=2, noise=0)
    for r in results.values():
        assert r.corrupted_p == pytest.approx(r.clean_p, abs=1e-6)
        assert float(r.indirect_effect.abs().max()) < 1e-6


@pytest.mark.parametrize("family", FAMILIES)
def test_exact_restorations(family: str) -> None:
    """The last block's output at the last token is all the head reads there: restoring it
    gives the clean probability; restoring any other token at the last layer (any kind,
    window 1) changes nothing, and neither does restoring a token before the subject."""
    model = sharp_model(family)
    results = causal_traces(model, TOKENIZER, PROMPT, SUBJECT, samples=4, noise=1.0, window=1)
    hidden = results["hidden"]
    assert abs(hidden.clean_p - hidden.corrupted_p) > 0.05
    assert float(hidden.scores[-1, -1]) == pytest.approx(hidden.clean_p, abs=1e-5)
    for r in results.values():
        assert float(r.indirect_effect[:-1, -1].abs().max()) < 1e-6
        assert float(r.indirect_effect[: r.subject_range[0]].abs().max()) < 1e-6


def test_passes_seeds_and_defaults() -> None:
    model = sharp_model("llama")
    one_cell = causal_traces(model, TOKENIZER, PROMPT, SUBJECT, samples=3, batch_size=1)
    many_cells = causal_traces(model, TOKENIZER, PROMPT, SUBJECT, samples=3, batch_size=10_000)
    for kind in KINDS:
        torch.testing.assert_close(
            one_cell[kind].scores, many_cells[kind].scores, atol=1e-6, rtol=0
        )
    r = one_cell["hidden"]
    again = causal_trace(model, TOKENIZER, PROMPT, SUBJECT, samples=3)  # one pass, as many_cells
    assert torch.equal(again.scores, many_cells["hidden"].scores)
    assert again.corrupted_p == r.corrupted_p
    other = causal_trace(model, TOKENIZER, PROMPT, SUBJECT, samples=3, seed=1)
    assert abs(other.corrupted_p - r.corrupted_p) > 1e-4
    weight = model.model.embed_tokens.weight.detach()
    assert r.noise == pytest.approx(3 * float(weight.std()), rel=1e-5) == noise_scale(model)
    assert noise_scale(model, [0, 1], factor=1.0) == pytest.approx(float(weight[:2].std()))
    assert (r.window, one_cell["mlp"].window, one_cell["attn"].window) == (1, 10, 10)
    assert r.tokens == list(PROMPT) and r.samples == 3 and r.kind == "hidden"
    assert r.subject_last == 9 and r.best_layer() == int(r.scores[9].argmax())


def test_target_and_model_left_as_found() -> None:
    model = sharp_model("gpt").train()
    before = copy.deepcopy(model.state_dict())
    r = causal_trace(model, TOKENIZER, PROMPT, SUBJECT, kind="mlp", target="x", samples=2)
    assert r.answer == "x" and r.answer_id == TOKENIZER.encode("x")[0]
    model.eval()
    with torch.no_grad():
        probs = torch.softmax(model(torch.tensor([TOKENIZER.encode(PROMPT)]))[0, -1], -1)
    assert r.clean_p == pytest.approx(float(probs[r.answer_id]), abs=1e-6)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
    model.train()
    causal_trace(model, TOKENIZER, PROMPT, SUBJECT, samples=1)
    assert model.training  # training mode restored (tracing itself runs in eval mode)


def test_plot(tmp_path: Any) -> None:
    results = causal_traces(sharp_model("llama"), TOKENIZER, PROMPT, SUBJECT, samples=2)
    for what, name in [(results["mlp"], "one.png"), (results, "three.png")]:
        path = plot_traces(what, tmp_path / "sub" / name)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert isinstance(results["attn"], TraceResult)
    with pytest.raises(ConfigError):
        plot_traces([], tmp_path / "none.png")


@pytest.mark.parametrize(
    ("prompt", "subject", "options", "message"),
    [
        (PROMPT, "blue fox", {}, "does not occur"),
        ("so red fox is " * 3, SUBJECT, {}, "context"),
        (PROMPT, SUBJECT, {"kind": "residual"}, "unknown kind"),
        (PROMPT, SUBJECT, {"window": 0}, "window"),
        (PROMPT, SUBJECT, {"samples": 0}, "samples"),
        (PROMPT, SUBJECT, {"batch_size": 0}, "batch_size"),
        (PROMPT, SUBJECT, {"noise": -1.0}, "noise"),
        (PROMPT, SUBJECT, {"target": ""}, "target"),
    ],
)
def test_bad_input(prompt: str, subject: str, options: dict[str, Any], message: str) -> None:
    model = sharp_model("llama", max_seq_len=32)
    with pytest.raises(ConfigError, match=message):
        causal_trace(model, TOKENIZER, prompt, subject, **options)


@pytest.mark.slow
def test_smollm2_knows_where_the_eiffel_tower_is() -> None:
    """On the real model (two noise draws, one kind, a short prompt: a few seconds): the
    corrupted subject loses " Paris", and the last layer's state at the last token brings it
    back exactly."""
    from groundwork import pretrained

    pre = pretrained.load("smollm2-135m-instruct")
    assert len(decoder_blocks(pre.model)) == 30
    r = causal_trace(
        pre.model, pre.tokenizer, "The Eiffel Tower is in", "Eiffel Tower", samples=2, seed=0
    )
    assert r.answer == " Paris" and r.subject_range == (1, 4) and r.clean_p > 0.2
    assert r.corrupted_p < r.clean_p / 3
    assert float(r.scores[-1, -1]) == pytest.approx(r.clean_p, abs=1e-4)
    assert float(r.indirect_effect.max()) > 0.5 * (r.clean_p - r.corrupted_p)


def test_docstring_examples() -> None:
    import doctest

    from groundwork.edit import tracing

    assert doctest.testmod(tracing).failed == 0
