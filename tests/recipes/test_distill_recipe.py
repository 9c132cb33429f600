"""Knowledge distillation (``groundwork distill``): a tiny Llama teacher distilled into a
tinier Llama on the wiki sample, with Hinton's loss, on the teacher's own continuations, and
without a teacher; the run directory it writes (a causal LM that ``generate`` reads), resume,
the command line, and bad input."""

from pathlib import Path

import pytest
import torch

import helpers
from groundwork import cli
from groundwork.corpus import load_documents
from groundwork.errors import CheckpointError, ConfigError, UnknownNameError
from groundwork.fileio import read_json
from groundwork.recipes.distill import DistillArgs, DistillResult, distill
from groundwork.recipes.pretrain import ModelArgs
from groundwork.runs import load_run, read_config, write_run
from groundwork.tokenize import HFTokenizer
from groundwork.train import TrainConfig, read_metrics

EVAL_TOKENS = 600
STUDENT = ModelArgs(
    arch="llama", preset="tiny", d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, d_ff=64
)


def byte_bpe(texts: list[str], vocab_size: int = 400) -> HFTokenizer:
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
def teacher_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Llama (d 64, context 64) run with a byte-level BPE of the wiki sample."""
    from groundwork.models.llama import Llama, LlamaConfig

    root = tmp_path_factory.mktemp("teacher")
    tokenizer = byte_bpe([d.text for d in load_documents("wiki-sample", split="train")[:40]])
    tokenizer.save(root / "tokenizer.json")
    config = LlamaConfig.from_name(
        "tiny", vocab_size=tokenizer.vocab_size, d_model=64, max_seq_len=64
    )
    torch.manual_seed(0)
    return write_run(Llama(config), root / "run", tokenizer=root / "tokenizer.json")


def tiny(**overrides: object) -> TrainConfig:
    return helpers.tiny_train(**{"max_steps": 4, "batch_size": 2, "eval_batches": 2, **overrides})


def run(teacher: Path, out: Path, **kwargs: object) -> DistillResult:
    fields: dict[str, object] = dict(
        teacher=str(teacher),
        student=STUDENT,
        source="wiki-sample",
        train=tiny(),
        out=out,
        eval_tokens=EVAL_TOKENS,
    )
    return distill(**{**fields, **kwargs})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def hinton(teacher_run: Path, tmp_path_factory: pytest.TempPathFactory) -> DistillResult:
    out = tmp_path_factory.mktemp("hinton") / "run"
    return run(teacher_run, out, kd=DistillArgs(method="hinton", temperature=2.0, alpha=0.5))


def test_hinton_run_is_a_causal_lm_run_of_the_student(
    hinton: DistillResult, teacher_run: Path
) -> None:
    out = hinton.run_dir
    config = read_config(out)
    assert config["kind"] == "lm"
    assert config["distill"]["kd"]["method"] == "hinton"
    teacher_config = read_config(teacher_run)["model"]
    assert config["model"]["vocab_size"] == teacher_config["vocab_size"]
    assert config["model"]["d_model"] == 32  # the student's shape, not the teacher's
    net, tokenizer, _ = load_run(out, device="cpu")
    teacher_tokenizer = HFTokenizer.from_file(teacher_run / "tokenizer.json")
    for text in ("The cat sat.", "Anarchism is a political philosophy"):
        assert tokenizer.encode(text) == teacher_tokenizer.encode(text)
    for name, value in net.state_dict().items():  # the trained student, nothing else
        torch.testing.assert_close(value, hinton.model.state_dict()[name], rtol=0, atol=0)
    rows = read_metrics(out / "metrics.jsonl")
    assert any("soft_loss" in r and "hard_loss" in r for r in rows)
    assert any("val_bpb" in r for r in rows)
    metrics = read_json(out / "metrics.json")
    assert metrics["training"]["steps"] == 4
    assert metrics["teacher_val"]["val_bpb"] > 0 and metrics["student_val"]["val_bpb"] > 0
    assert metrics["student_val"]["tokens"] == 640  # ten batches of 2 x 32, >= 600


def test_generate_reads_the_run(hinton: DistillResult, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["generate", str(hinton.run_dir), "--prompt", "The", "--max-new-tokens", "4"]
    assert cli.main([*args, "--strategy", "greedy"]) == 0
    assert capsys.readouterr().out.startswith("The")


def test_alpha_zero_equals_no_teacher(teacher_run: Path, tmp_path: Path) -> None:
    """Hinton's loss with alpha 0 is the plain cross-entropy: the same student as --kd.method
    none, weight for weight."""
    plain = run(teacher_run, tmp_path / "none", kd=DistillArgs(method="none"))
    zero = run(teacher_run, tmp_path / "zero", kd=DistillArgs(alpha=0.0))
    for name, value in plain.model.state_dict().items():
        torch.testing.assert_close(zero.model.state_dict()[name], value, rtol=1e-5, atol=1e-6)
    assert not any("soft_loss" in r for r in read_metrics(tmp_path / "none" / "metrics.jsonl"))


def test_sequence_level_trains_on_the_teachers_continuations(
    teacher_run: Path, tmp_path: Path
) -> None:
    kd = DistillArgs(method="sequence", prompts=6, prompt_len=4, max_new_tokens=40)
    result = run(teacher_run, tmp_path / "seq", kd=kd)
    data = tmp_path / "seq" / "teacher_data"
    meta = read_json(data / "meta.json")
    assert meta["splits"]["train"]["documents"] == 6
    assert 6 * 5 <= meta["splits"]["train"]["tokens"] <= 6 * (4 + 40 + 1)
    assert result.metrics["data"]["train_tokens"] == meta["splits"]["train"]["tokens"]
    assert result.metrics["teacher_data"]["sequences"] == 6
    assert read_config(tmp_path / "seq")["data"]["train_shards"] == str(data)


def test_resume_continues_to_more_steps(teacher_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run(teacher_run, out, train=tiny(max_steps=2))
    more = tiny(max_steps=4)
    resumed = distill(out=out, resume=True, train=more, eval_tokens=EVAL_TOKENS)
    assert resumed.train_result.state.step == 4
    assert read_json(out / "metrics.json")["teacher_val"]["val_bpb"] > 0
    with pytest.raises(ConfigError, match="already holds a run"):
        run(teacher_run, out)


def test_the_command_line(
    teacher_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The line to add to ``cli.COMMANDS``, tried here: ``"distill": distill``."""
    monkeypatch.setitem(cli.COMMANDS, "distill", distill)
    out = tmp_path / "cli"
    args = [
        *("distill", "--teacher", str(teacher_run), "--out", str(out)),
        *("--student.arch", "llama", "--student.preset", "tiny", "--student.d-model", "32"),
        *("--student.n-layers", "1", "--student.n-heads", "2", "--student.n-kv-heads", "1"),
        *("--kd.method", "hinton", "--kd.temperature", "3", "--kd.alpha", "0.9"),
        *("--train.max-steps", "2", "--train.batch-size", "2", "--train.seq-len", "16"),
        *("--train.eval-batches", "1", "--train.progress", "false", "--train.tensorboard", "false"),
        *("--train.device", "cpu", "--eval-tokens", "64"),
    ]
    assert cli.main(args) == 0
    config = read_config(out)
    assert config["distill"]["kd"]["temperature"] == 3.0 and config["distill"]["kd"]["alpha"] == 0.9
    assert config["model"]["n_layers"] == 1
    assert cli.main(["distill", "--teacher", str(teacher_run), "--kd.temperature", "0"]) == 2


def test_bad_input(teacher_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="temperature must be a positive number"):
        DistillArgs(temperature=0)
    with pytest.raises(ConfigError, match=r"alpha .* must be in \[0, 1\]"):
        DistillArgs(alpha=1.5)
    with pytest.raises(ConfigError, match=r"kd\.method 'hintn'"):
        DistillArgs(method="hintn")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"kd\.prompts"):
        DistillArgs(prompts=0)
    with pytest.raises(UnknownNameError, match="neither a run directory nor a named model"):
        run(Path("no-such-teacher"), tmp_path / "a")
    with pytest.raises(ConfigError, match="the student must be a causal LM"):
        run(teacher_run, tmp_path / "b", student=ModelArgs(arch="bert"))
    with pytest.raises(ConfigError, match="not a text source"):
        run(teacher_run, tmp_path / "c", source="sms-spam")
    with pytest.raises(ConfigError, match="longer than the student's max_seq_len"):
        run(teacher_run, tmp_path / "d", train=tiny(seq_len=256))
    with pytest.raises(CheckpointError, match="not a distillation run"):
        distill(out=teacher_run, resume=True)
