"""`groundwork align`: each method runs end to end on a tiny Llama and real data, writes a run
that loads again, and moves its own metric the right way."""

import json
import math
from pathlib import Path

import pytest

from groundwork.align import data as align_data
from groundwork.align.reward import RewardModel
from groundwork.errors import ConfigError
from groundwork.recipes.align import align_sft, load_policy
from groundwork.recipes.align_preference import align_dpo, align_reward
from groundwork.recipes.align_rl import align_grpo, align_ppo
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


@pytest.fixture(scope="module")
def reward_run(base_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reward") / "rm"
    config = tiny_train(max_steps=30, eval_every=30, batch_size=8, lr=3e-3)
    align_reward(
        str(base_run), train=config, sources="siqa", limit=200, test_limit=60, max_tokens=120,
        out=out,
    )  # fmt: skip
    return out


def test_reward_model_learns_and_its_run_loads(reward_run: Path) -> None:
    metrics = json.loads((reward_run / "metrics.json").read_text())
    accuracy = metrics["test_pairwise_accuracy"]
    assert set(accuracy["after"]) == {"all", "siqa"} and metrics["pairs"]["test"] > 30
    model, _, config = load_run(reward_run)
    assert isinstance(model, RewardModel) and config["kind"] == "reward-model"
    assert (reward_run / "chat_template.jinja").is_file()


def test_dpo_raises_the_held_out_margin(base_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "dpo"
    config = tiny_train(max_steps=20, eval_every=20, batch_size=8, lr=3e-3)
    align_dpo(
        str(base_run), train=config, sources="siqa", limit=120, test_limit=40, max_tokens=96,
        beta=0.5, kl_prompts=8, kl_new_tokens=6, out=out,
    )  # fmt: skip
    test = json.loads((out / "metrics.json").read_text())["test"]
    assert test["before"]["loss"] == pytest.approx(math.log(2), abs=1e-5)  # policy == reference
    assert test["after"]["reward_margin"] > test["before"]["reward_margin"]
    assert test["before"]["kl_sampled"] == 0.0 and test["after"]["kl_sampled"] != 0.0
    load_run(out)


def test_ppo_runs_against_the_reward_model(
    base_run: Path, reward_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ppo"
    config = tiny_train(max_steps=4, eval_every=4, batch_size=4, lr=1e-3)
    align_ppo(
        str(base_run), reward_model=reward_run, train=config, sources="siqa", limit=16,
        test_limit=4, max_new_tokens=6, max_prompt_tokens=64, out=out,
    )  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["models_resident"] == 3 and metrics["test"]["before"]["kl"] == 0.0
    assert metrics["test"]["after"]["kl"] != 0.0  # the policy moved
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("score" in row for row in log)
    load_run(out)


def test_ppo_refuses_a_reward_model_of_another_tokenizer(reward_run: Path, tmp_path: Path) -> None:
    texts = ["completely different words here"] * 20
    other = tiny_llama_run(tmp_path, texts, vocab_size=280)
    with pytest.raises(ConfigError, match="tokenizer"):
        align_ppo(str(other), reward_model=reward_run, train=tiny_train(), out=tmp_path / "p")


def test_ppo_refuses_a_run_that_is_no_reward_model(base_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a reward model"):
        align_ppo(str(base_run), reward_model=base_run, train=tiny_train(), out=tmp_path / "p")


def test_grpo_runs_on_asdiv(base_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "grpo"
    config = tiny_train(max_steps=2, eval_every=2, batch_size=2, lr=1e-3)
    align_grpo(
        str(base_run), train=config, group_size=3, limit=8, test_limit=6, max_new_tokens=4,
        out=out,
    )  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test_accuracy"]) == {"before", "after"}
    assert metrics["models_resident"] == 2
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("reward" in row for row in log)
