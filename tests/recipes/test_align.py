"""`groundwork align`: each method runs end to end on a tiny Llama and real data, writes a run
that loads again, and moves its own metric the right way."""

import json
from pathlib import Path

import pytest

from groundwork.align import data as align_data
from groundwork.errors import ConfigError
from groundwork.recipes.align import align_sft, load_policy
from groundwork.runs import load_run
from helpers import tiny_llama_run, tiny_train


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts = [f"{q.question} {q.answer}" for q in align_data.load_qa("siqa,asdiv", "train", 200)]
    return tiny_llama_run(tmp_path_factory.mktemp("base"), texts, vocab_size=400)


def test_sft_lowers_the_held_out_answer_loss(base_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "sft"
    config = tiny_train(max_steps=30, eval_every=30, batch_size=8, seq_len=128, lr=3e-3)
    align_sft(
        str(base_run),
        train=config,
        sources="siqa,asdiv",
        limit=120,
        test_limit=16,
        max_tokens=96,
        out=out,
    )
    metrics = json.loads((out / "metrics.json").read_text())
    loss = metrics["test_answer_loss"]
    assert loss["after"] < loss["before"] - 0.5
    assert len(metrics["samples"]) == 3 and metrics["models_resident"] == 1
    _, _, config_yaml = load_run(out)
    assert config_yaml["align"]["method"] == "sft"
    assert load_policy(str(out)).own_template  # the chat template travels with the run


def test_sft_with_lora_writes_a_peft_adapter_and_merged_weights(
    base_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "lora"
    config = tiny_train(max_steps=2, eval_every=2, batch_size=4, seq_len=128)
    align_sft(
        str(base_run),
        train=config,
        sources="asdiv",
        limit=16,
        test_limit=4,
        max_tokens=96,
        method="lora",
        peft={"r": 4},
        out=out,
    )
    assert (out / "adapter" / "adapter_config.json").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["trainable_parameters"] < metrics["total_parameters"] / 5
    model, _, _ = load_run(out)  # a plain lm run: LoRA merged
    assert not any("lora" in name for name, _ in model.named_parameters())


def test_bad_method_is_refused(base_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"full.*lora"):
        align_sft(
            str(base_run),
            train=tiny_train(),
            method="prefix",
            out=tmp_path / "x",
            sources="asdiv",
            limit=8,
            test_limit=2,
        )
