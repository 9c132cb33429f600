"""FT-L: the L-infinity constraint, that nothing but the one weight moves, the teacher-forced
loss it minimises, and bad input."""

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from groundwork.edit import finetune
from groundwork.edit.finetune import apply_ft, target_nll
from groundwork.edit.layers import mlp_out_proj
from groundwork.edit.request import EditRequest
from groundwork.errors import ConfigError
from groundwork.tokenize.char import CharTokenizer
from helpers import tiny_gpt, tiny_llama

TOKENIZER = CharTokenizer.train(["abcdefghijklmnopqrstuvwxyz ."], vocab_size=97)
FOX = EditRequest("the red fox lives in", "red fox", " rome")
OWL = EditRequest("an owl sleeps by day", "owl", " yes")


def model_of(family: str, **overrides: Any) -> nn.Module:
    """A seeded tiny model with its matrices scaled up 4x: at the initial scale its logits
    are too flat for any target to become likely."""
    fields: dict[str, Any] = {"vocab_size": TOKENIZER.vocab_size, **overrides}
    model = tiny_llama(**fields) if family == "llama" else tiny_gpt(**fields)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(4)
    return model


def greedy(model: nn.Module, prompt: str, n: int) -> str:
    ids = TOKENIZER.encode(prompt)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return TOKENIZER.decode(ids[-n:])


@pytest.mark.parametrize("family", ["llama", "gpt"])
def test_constraint_and_nothing_else_moves(family: str) -> None:
    model = model_of(family).train()
    model.lm_head.weight.requires_grad_(False)  # a mixed set of flags, to be restored as found
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    sentinel = torch.ones_like(mlp_out_proj(model, 1).weight)
    mlp_out_proj(model, 1).weight.grad = sentinel  # a gradient of the caller's, left alone
    before = {k: v.clone() for k, v in model.state_dict().items()}
    eps = 1e-3
    nll_before = target_nll(model, TOKENIZER, [FOX, OWL])
    edited, delta = apply_ft(
        model, TOKENIZER, [FOX, OWL], layer=1, steps=8, lr=1e-3, norm_constraint=eps
    )
    assert edited is model
    weight = mlp_out_proj(model, 1).weight
    key = next(name for name, p in model.named_parameters() if p is weight)
    after = model.state_dict()
    change = after[key].double() - before[key].double()
    ulp = torch.finfo(torch.float32).eps * (before[key].double().abs() + eps)  # W_0 +- eps
    assert bool((change.abs() <= eps + ulp).all())  # elementwise
    assert float(change.abs().max()) >= eps * 0.999  # 8 steps of ~1e-3: entries reach the bound
    assert torch.equal(delta, after[key] - before[key])
    for k, v in after.items():
        if k != key:
            assert torch.equal(v, before[k]), k  # bit-identical, the bias of down_proj too
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert model.training and mlp_out_proj(model, 1).weight.grad is sentinel
    nll_after = target_nll(model, TOKENIZER, [FOX, OWL])
    assert bool((nll_after < nll_before - 0.05).all())  # both targets more likely


@pytest.mark.parametrize("family", ["llama", "gpt"])
def test_unconstrained_fine_tuning_writes_the_fact(family: str) -> None:
    model = model_of(family)
    assert greedy(model, FOX.prompt, len(FOX.target)) != FOX.target
    apply_ft(model, TOKENIZER, FOX, layer=0, steps=25, lr=1e-2, norm_constraint=None)
    assert greedy(model, FOX.prompt, len(FOX.target)) == FOX.target  # all 5 tokens, greedily
    assert float(target_nll(model, TOKENIZER, FOX)[0]) < 0.5  # from 3.7-3.9


def test_a_loose_constraint_changes_nothing_and_the_loss_stops_early(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    free, loose = model_of("llama"), model_of("llama")
    _, d_free = apply_ft(free, TOKENIZER, FOX, layer=1, steps=5, lr=1e-3, norm_constraint=None)
    _, d_loose = apply_ft(loose, TOKENIZER, FOX, layer=1, steps=5, lr=1e-3, norm_constraint=1.0)
    assert torch.equal(d_free, d_loose)  # 5 steps of 1e-3 never reach a bound of 1
    # a target already learnt (mean NLL below STOP_LOSS) takes no step
    monkeypatch.setattr(finetune, "STOP_LOSS", 10.0)  # every NLL here is below 10
    _, delta = apply_ft(model_of("gpt"), TOKENIZER, [FOX, OWL], layer=0, norm_constraint=None)
    assert not delta.any()


def test_target_nll_is_teacher_forced_and_padding_free() -> None:
    model = model_of("gpt")
    prompt, target = TOKENIZER.encode(FOX.prompt), TOKENIZER.encode(FOX.target)
    with torch.no_grad():
        logp = F.log_softmax(model(torch.tensor([prompt + target])), dim=-1)[0]  # (T, V)
    first = len(prompt) - 1
    manual = -sum(float(logp[first + j, tok]) for j, tok in enumerate(target)) / len(target)
    together = target_nll(model, TOKENIZER, [FOX, OWL])  # different lengths: right-padded
    assert float(together[0]) == pytest.approx(manual, abs=1e-5)
    assert float(together[1]) == pytest.approx(
        float(target_nll(model, TOKENIZER, OWL)[0]), abs=1e-5
    )


@pytest.mark.parametrize(
    ("requests", "options", "message"),
    [
        ([], {}, "no edit requests"),
        (["the fox"], {}, "EditRequest"),
        (FOX, {"layer": 2}, "out of range"),
        (FOX, {"steps": 0}, "steps"),
        (FOX, {"lr": 0.0}, "lr"),
        (FOX, {"norm_constraint": 0.0}, "norm_constraint"),
        (FOX, {"norm_constraint": -1e-3}, "norm_constraint"),
        (EditRequest("the red fox lives in" * 3, "red fox", " rome"), {}, "context"),
    ],
)
def test_bad_input(requests: Any, options: dict[str, Any], message: str) -> None:
    model = model_of("llama", max_seq_len=40)
    before = mlp_out_proj(model, 0).weight.clone()
    with pytest.raises(ConfigError, match=message):
        apply_ft(model, TOKENIZER, requests, **{"layer": 0, **options})
    assert torch.equal(mlp_out_proj(model, 0).weight, before)


@pytest.mark.slow
def test_smollm2_moves_the_eiffel_tower() -> None:
    """A few constrained steps on the real model make " Rome" more likely after the prompt."""
    from groundwork import pretrained

    pre = pretrained.load("smollm2-135m-instruct")
    request = EditRequest("The Eiffel Tower is located in the city of", "Eiffel Tower", " Rome")
    before = float(target_nll(pre.model, pre.tokenizer, request)[0])
    _, delta = apply_ft(pre.model, pre.tokenizer, request, layer=0, steps=5)
    assert float(delta.abs().max()) <= 2e-3 * 1.01  # 2e-3 up to rounding next to |w| ~ 3
    assert float(target_nll(pre.model, pre.tokenizer, request)[0]) < before - 0.5
