"""The causal LM loss against a direct computation, and bits per byte."""

import math

import torch
import torch.nn.functional as F

from groundwork.train import IGNORE_INDEX, bits_per_byte, causal_lm_loss, shift_for_causal_lm


def test_loss_is_mean_negative_log_likelihood() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    targets = torch.randint(0, 11, (2, 5))
    log_p = F.log_softmax(logits, dim=-1)
    expected = -log_p.gather(-1, targets.unsqueeze(-1)).mean()
    torch.testing.assert_close(causal_lm_loss(logits, targets), expected, rtol=1e-6, atol=1e-6)


def test_ignored_targets_do_not_count() -> None:
    torch.manual_seed(0)
    logits = torch.randn(1, 4, 7)
    targets = torch.tensor([[1, 2, IGNORE_INDEX, IGNORE_INDEX]])
    kept = causal_lm_loss(logits[:, :2], targets[:, :2])
    torch.testing.assert_close(causal_lm_loss(logits, targets), kept)


def test_uniform_model_has_loss_log_vocab() -> None:
    logits = torch.zeros(3, 8, 50)
    targets = torch.randint(0, 50, (3, 8))
    assert math.isclose(causal_lm_loss(logits, targets).item(), math.log(50), rel_tol=1e-6)


def test_bf16_logits_give_fp32_loss() -> None:
    logits = torch.randn(1, 3, 5).bfloat16()
    assert causal_lm_loss(logits, torch.tensor([[0, 1, 2]])).dtype == torch.float32


def test_shift_and_bits_per_byte() -> None:
    x, y = shift_for_causal_lm(torch.arange(6).view(1, 6))
    assert x.tolist() == [[0, 1, 2, 3, 4]] and y.tolist() == [[1, 2, 3, 4, 5]]
    # A byte-level model that is uniform over 256 values needs exactly 8 bits per byte.
    assert math.isclose(bits_per_byte(100 * math.log(256), 100), 8.0)
