r"""Hinton distillation (chapter 18): the loss equals its direct computation with ``kl_div`` and
``cross_entropy`` (ignored positions included), the soft term's gradient is
:math:`\tau (p_S^\tau - p_T^\tau) / N`, its high-temperature limit is logit matching, alpha 0 is
plain cross-entropy, the teacher is never trained nor saved, an engine run's loss falls, and bad
settings are refused."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

from groundwork.corpus import Document, TokenShards, prepare_shards
from groundwork.errors import ConfigError
from groundwork.models.llama import Llama, LlamaConfig
from groundwork.train import TrainConfig, read_metrics, train_causal_lm
from groundwork.train.distill import (
    HintonDistillationObjective,
    check_same_vocabulary,
    distillation_loss,
)
from groundwork.train.objectives import IGNORE_INDEX, causal_lm_loss

V = 11


def logits_and_targets(
    seed: int = 0, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Student and teacher logits ``(3, 5, V)`` and targets ``(3, 5)`` with 4 ignored."""
    g = torch.Generator().manual_seed(seed)
    student = (2 * torch.randn(3, 5, V, generator=g)).to(dtype)
    teacher = (3 * torch.randn(3, 5, V, generator=g)).to(dtype)
    targets = torch.randint(0, V, (3, 5), generator=g)
    targets[0, 0] = targets[1, 3] = targets[2, 4] = targets[2, 2] = IGNORE_INDEX
    return student, teacher, targets


def reference(
    student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor, tau: float, alpha: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The loss written with PyTorch's own ``kl_div`` and ``cross_entropy``."""
    keep = targets != IGNORE_INDEX
    n = int(keep.sum())
    log_p_s = F.log_softmax(student[keep] / tau, dim=-1)
    log_p_t = F.log_softmax(teacher[keep] / tau, dim=-1)
    soft = tau**2 * F.kl_div(log_p_s, log_p_t, log_target=True, reduction="sum") / n
    hard = F.cross_entropy(student.reshape(-1, V), targets.reshape(-1), ignore_index=IGNORE_INDEX)
    return alpha * soft + (1 - alpha) * hard, soft, hard


@pytest.mark.parametrize("tau", [1.0, 2.0, 5.0])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_loss_equals_kl_div_and_cross_entropy(tau: float, alpha: float) -> None:
    student, teacher, targets = logits_and_targets()
    out = distillation_loss(student, teacher, targets, temperature=tau, alpha=alpha)
    total, soft, hard = reference(student, teacher, targets, tau, alpha)
    assert out.tokens == 11
    torch.testing.assert_close(out.soft, soft, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.hard, hard, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.loss, total, rtol=1e-5, atol=1e-5)


def test_ignored_positions_count_for_nothing() -> None:
    student, teacher, targets = logits_and_targets()
    student.requires_grad_(True)
    out = distillation_loss(student, teacher, targets, temperature=2.0, alpha=0.5)
    out.loss.backward()
    assert student.grad is not None
    ignored = targets == IGNORE_INDEX
    assert bool((student.grad[ignored] == 0).all())
    assert bool((student.grad[~ignored] != 0).any())
    changed_s, changed_t = student.detach().clone(), teacher.clone()
    changed_s[ignored] = 100.0
    changed_t[ignored] = -50.0
    again = distillation_loss(changed_s, changed_t, targets, temperature=2.0, alpha=0.5)
    torch.testing.assert_close(again.loss, out.loss.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0, 4.0])
def test_soft_gradient_is_tau_times_the_difference_of_the_softened_distributions(
    tau: float,
) -> None:
    r"""d/dz_S of tau^2 KL(p_T^tau || p_S^tau), averaged over N tokens, is
    tau (p_S^tau - p_T^tau) / N (derived in the module docstring)."""
    student, teacher, targets = logits_and_targets(seed=1)
    student.requires_grad_(True)
    out = distillation_loss(student, teacher, targets, temperature=tau, alpha=1.0)
    (grad,) = torch.autograd.grad(out.loss, student)
    keep = targets != IGNORE_INDEX
    p_s = F.softmax(student.detach() / tau, dim=-1)
    p_t = F.softmax(teacher / tau, dim=-1)
    expected = tau * (p_s - p_t) / out.tokens * keep[..., None]
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-6)


def test_high_temperature_limit_is_logit_matching() -> None:
    r"""Hinton et al. (section 2.1): for large tau, with zero-mean logits,
    p^tau ~ (1 + z/tau) / V, so the tau^2-scaled gradient tends to (z_S - z_T) / V per token,
    whatever tau (unscaled, it would vanish as 1/tau^2); the error shrinks as 1/tau."""
    student, teacher, targets = logits_and_targets(seed=2, dtype=torch.float64)
    student = student - student.mean(-1, keepdim=True)
    teacher = teacher - teacher.mean(-1, keepdim=True)
    student.requires_grad_(True)
    keep = (targets != IGNORE_INDEX)[..., None]
    errors = []
    for tau in (100.0, 1000.0):
        out = distillation_loss(student, teacher, targets, temperature=tau, alpha=1.0)
        (grad,) = torch.autograd.grad(out.loss, student)
        limit = (student.detach() - teacher) / V / out.tokens * keep
        errors.append(float((grad - limit).norm() / limit.norm()))
        assert errors[-1] < 3 / tau
    assert errors[1] < errors[0] / 8


def test_alpha_zero_is_plain_cross_entropy() -> None:
    student, teacher, targets = logits_and_targets()
    teacher.requires_grad_(True)
    out = distillation_loss(student, teacher, targets, temperature=3.0, alpha=0.0)
    torch.testing.assert_close(out.loss, causal_lm_loss(student, targets), rtol=1e-6, atol=1e-6)
    assert not out.loss.requires_grad  # nothing flows to the teacher's logits, even if asked


def test_no_real_token_gives_zero_attached_to_the_graph() -> None:
    student, teacher, _ = logits_and_targets()
    student.requires_grad_(True)
    targets = torch.full((3, 5), IGNORE_INDEX)
    out = distillation_loss(student, teacher, targets, temperature=2.0, alpha=0.5)
    assert out.tokens == 0 and float(out.loss.detach()) == 0.0
    out.loss.backward()
    assert student.grad is not None and bool((student.grad == 0).all())


def test_bf16_logits_are_computed_in_fp32() -> None:
    student, teacher, targets = logits_and_targets()
    out = distillation_loss(
        student.bfloat16(), teacher.bfloat16(), targets, temperature=2.0, alpha=0.5
    )
    total, _, _ = reference(student.bfloat16().float(), teacher.bfloat16().float(), targets, 2, 0.5)
    assert out.loss.dtype == torch.float32
    torch.testing.assert_close(out.loss, total, rtol=1e-5, atol=1e-5)


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("tau", [0.0, -1.0, float("nan"), float("inf")])
def test_temperature_must_be_positive(tau: float) -> None:
    student, teacher, targets = logits_and_targets()
    with pytest.raises(ConfigError, match="temperature must be a positive number"):
        distillation_loss(student, teacher, targets, temperature=tau, alpha=0.5)
    with pytest.raises(ConfigError, match="temperature"):
        HintonDistillationObjective(tiny_llama(), temperature=tau)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan")])
def test_alpha_must_be_in_unit_interval(alpha: float) -> None:
    student, teacher, targets = logits_and_targets()
    with pytest.raises(ConfigError, match=r"alpha .* must be in \[0, 1\]"):
        distillation_loss(student, teacher, targets, temperature=2.0, alpha=alpha)
    with pytest.raises(ConfigError, match="alpha"):
        HintonDistillationObjective(tiny_llama(), alpha=alpha)


def test_vocabularies_must_match() -> None:
    student, _, targets = logits_and_targets()
    with pytest.raises(ConfigError, match="the teacher has 12 token ids, the student 11"):
        distillation_loss(student, torch.randn(3, 5, 12), targets, temperature=2.0, alpha=0.5)
    with pytest.raises(ConfigError, match="vocabularies differ"):
        check_same_vocabulary(tiny_llama(vocab_size=64), tiny_llama(vocab_size=97))
    check_same_vocabulary(tiny_llama(), 97)  # same: fine
    objective = HintonDistillationObjective(tiny_llama(vocab_size=64))
    x = torch.randint(0, 64, (2, 8))
    with pytest.raises(ConfigError, match="the teacher has 64 token ids, the student 97"):
        objective(tiny_llama(), (x, x))


def test_shapes_must_match() -> None:
    student, teacher, targets = logits_and_targets()
    with pytest.raises(ConfigError, match="shapes differ"):
        distillation_loss(student, teacher[:, :4], targets, temperature=2.0, alpha=0.5)
    with pytest.raises(ConfigError, match="shapes differ"):
        distillation_loss(student, teacher, targets[:, :4], temperature=2.0, alpha=0.5)


def test_the_teacher_cannot_be_the_student() -> None:
    teacher = tiny_llama()
    x = torch.randint(0, 97, (2, 8))
    with pytest.raises(ConfigError, match="the teacher is the model being trained"):
        HintonDistillationObjective(teacher)(teacher, (x, x))


# --- the objective and the engine ---------------------------------------------------------------


def tiny_llama(seed: int = 0, **overrides: object) -> Llama:
    torch.manual_seed(seed)
    fields: dict[str, object] = {"vocab_size": 97, "n_heads": 4, "n_kv_heads": 2, **overrides}
    return Llama(LlamaConfig.from_name("tiny", **fields))


def test_objective_runs_the_teacher_frozen_in_eval_mode() -> None:
    from groundwork.models.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    teacher = GPT(GPTConfig.from_name("tiny", vocab_size=97, dropout=0.5))  # dropout: must be off
    teacher.train()
    objective = HintonDistillationObjective(teacher, temperature=2.0, alpha=0.5)
    assert not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    student = tiny_llama(seed=1).train()
    x = torch.randint(0, 97, (2, 16), generator=torch.Generator().manual_seed(0))
    y = x.roll(-1, dims=1)
    teacher.train()  # e.g. a caller switching every module to training mode
    out = objective(student, (x, y))
    out.loss.backward()
    assert not teacher.training
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters())
    first = objective.teacher_logits(x)
    torch.testing.assert_close(objective.teacher_logits(x), first, rtol=0, atol=0)
    expected = distillation_loss(student(x), first, y, temperature=2.0, alpha=0.5)
    torch.testing.assert_close(out.loss, expected.loss, rtol=1e-6, atol=1e-6)
    assert out.items == y.numel() and out.tokens == x.numel()
    assert set(out.metrics) == {"soft_loss", "hard_loss"}
    torch.testing.assert_close(out.metrics["soft_loss"], expected.soft.detach())


TEXT = (
    "Shall I compare thee to a summer's day? Thou art more lovely and more temperate: "
    "Rough winds do shake the darling buds of May, And summer's lease hath all too short a date. "
)


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    docs = {
        "train": [Document(id=f"t{i}", text=TEXT * 3, source="test") for i in range(8)],
        "val": [Document(id="v", text=TEXT * 2, source="test")],
    }
    prepare_shards(docs, lambda s: list(s.encode()), 256, out, eot_id=None, progress=False)
    return out


def config(**kw: object) -> TrainConfig:
    base: dict[str, object] = dict(
        max_steps=30,
        batch_size=4,
        seq_len=32,
        lr=3e-3,
        warmup_steps=2,
        eval_every=10,
        eval_batches=2,
        log_every=1,
        progress=False,
        tensorboard=False,
        device="cpu",
    )
    return TrainConfig(**{**base, **kw})  # type: ignore[arg-type]


def test_engine_distils_and_never_trains_or_saves_the_teacher(shards: Path, tmp_path: Path) -> None:
    train, val = TokenShards(shards, "train"), TokenShards(shards, "val")
    teacher = tiny_llama(vocab_size=256, d_model=64)
    train_causal_lm(teacher, train, val, config(lr=1e-2), tmp_path / "teacher")  # a trained one
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = tiny_llama(seed=1, vocab_size=256, d_model=32, d_ff=64, n_layers=1)
    run = tmp_path / "student"
    objective = HintonDistillationObjective(teacher, temperature=2.0, alpha=0.5)
    result = train_causal_lm(student, train, val, config(), run, objective=objective)
    assert result.stopped == "finished"

    rows = [r for r in read_metrics(run / "metrics.jsonl") if "soft_loss" in r]
    first, last = rows[:5], rows[-5:]
    for key in ("loss", "soft_loss", "hard_loss"):
        assert sum(r[key] for r in last) < 0.8 * sum(r[key] for r in first), key
    vals = [r["val_loss"] for r in read_metrics(run / "metrics.jsonl") if "val_loss" in r]
    assert vals[-1] < vals[0]

    for k, v in teacher.state_dict().items():  # not trained
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert all(p.grad is None for p in teacher.parameters())
    student_params = {id(p): p.numel() for p in student.parameters()}  # tied: counted once
    saved = load_file(str(run / "model.safetensors"))  # the student alone (the tied head once)
    assert set(saved) <= set(student.state_dict())
    assert sum(v.numel() for v in saved.values()) == sum(student_params.values())
    with safe_open(str(run / "optimizer.safetensors"), "pt") as f:
        names = f.keys()
        moments = [f.get_tensor(k).numel() for k in names if k.endswith(".exp_avg")]
    assert sum(moments) == sum(student_params.values())
    assert len(moments) == len(student_params)
