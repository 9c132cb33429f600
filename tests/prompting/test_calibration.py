"""Contextual calibration (Zhao et al. 2021): the content-free input is scored uniformly after
calibration, the arithmetic by hand, and p_cf is measured through the harness."""

import pytest
import torch

from groundwork.errors import ConfigError
from groundwork.evaluate.harness import score_multiple_choice
from groundwork.evaluate.task import Task
from groundwork.prompting.calibration import calibrate, content_free_probs, label_probs
from groundwork.tokenize.char import CharTokenizer
from helpers import tiny_gpt


def test_calibration_makes_the_content_free_input_uniform() -> None:
    p_cf = torch.tensor([0.9, 0.1], dtype=torch.float64)
    assert torch.allclose(
        calibrate(p_cf[None], p_cf), torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    )


def test_calibration_by_hand() -> None:
    probs = torch.tensor([[0.6, 0.4], [0.95, 0.05]])
    q = calibrate(probs, torch.tensor([0.8, 0.2]))
    # (0.6/0.8, 0.4/0.2) = (0.75, 2.0) -> (0.2727, 0.7273); (1.1875, 0.25) -> (0.826, 0.174)
    assert torch.allclose(
        q, torch.tensor([[0.75 / 2.75, 2.0 / 2.75], [1.1875 / 1.4375, 0.25 / 1.4375]])
    )
    assert q.argmax(1).tolist() == [1, 0]


def test_label_probs_are_a_softmax_over_the_choices() -> None:
    p = label_probs([[-1.0, -2.0, -3.0]])
    assert torch.allclose(
        p, torch.softmax(torch.tensor([[-1.0, -2.0, -3.0]], dtype=torch.float64), 1)
    )


def test_calibration_errors() -> None:
    with pytest.raises(ConfigError, match=r"probs \(N, C\) and content_free \(C,\)"):
        calibrate(torch.ones(2, 3), torch.ones(2))
    with pytest.raises(ConfigError, match="> 0"):
        calibrate(torch.ones(1, 2), torch.tensor([1.0, 0.0]))


def test_content_free_probs_are_the_mean_of_the_harness_scores() -> None:
    tok = CharTokenizer.train(["Text: abc N/A\nAnswer: no yes"], vocab_size=40)
    model = tiny_gpt(vocab_size=tok.vocab_size)
    task = Task(
        name="toy",
        docs=lambda: [],
        doc_to_text=lambda d: f"Text: {d['text']}\nAnswer:",
        doc_to_choices=lambda d: ["no", "yes"],
        doc_to_target=lambda d: 0,
    )
    shots = [{"text": "abc"}]
    cf = [{"text": "N/A"}, {"text": ""}]
    p_cf = content_free_probs(model, tok, task, shots, cf)
    scores = score_multiple_choice(model, tok, [task.render(d, shots) for d in cf])
    expected = label_probs([e["loglikelihoods"] for e in scores["examples"]]).mean(0)
    assert torch.allclose(p_cf, expected) and abs(float(p_cf.sum()) - 1) < 1e-9
    with pytest.raises(ConfigError, match="at least one content-free"):
        content_free_probs(model, tok, task, shots, [])
