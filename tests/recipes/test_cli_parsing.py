"""The command line's conventions, checked on the parser alone (nothing runs): misspelt commands
get 'did you mean', wrong values say what the option takes in plain words, list options take
``a,b``, the model is positional everywhere."""

import pytest

from groundwork import cli


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def parse(*argv: str) -> dict[str, object]:
    """The values ``groundwork ARGV`` would call its command with (without calling it)."""
    args = cli._option_values(cli._normalise_argv(list(argv)))
    cfg = cli.build_parser().parse_args(args)
    values = cfg[argv[0]]
    return dict(values[argv[1]] if "subcommand" in values else values)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["pretrian"], "unknown command 'pretrian': did you mean 'pretrain'?"),
        (
            ["data", "fetc", "shakespeare"],
            "unknown command 'data fetc': did you mean 'data fetch'?",
        ),
        (["tokeniser", "train"], "unknown command 'tokeniser': did you mean 'tokenizer'?"),
        (["data"], "`groundwork data` needs a command: list, licences, fetch, stats, prepare"),
        (["sample"], "`groundwork sample` needs RUN"),
    ],
)
def test_commands(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith(f"groundwork: error: {message}")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["export", "a", "b", "--format", "onnx"],
            "--format must be one of: hf, gguf (got 'onnx')",
        ),
        (["classify", "--model", "rnn"], "--model must be one of: cnn, bilstm (got 'rnn')"),
        (
            ["word2vec", "--sources", "[shakespeare"],
            "--sources takes a list: shakespeare,wiki-sample or [shakespeare]",
        ),
        (["sample", "r", "--max-new-tokens", "many"], "--max-new-tokens takes an integer"),
        (["sample", "r", "--top-k", "x"], "--top-k takes an integer or none (got 'x')"),
        (["pretrain", "--train.lr", "fast"], "--train.lr takes a number (got 'fast')"),
        (["pretrain", "--train.precision", "fp8"], "--train.precision must be one of: fp32, bf16"),
    ],
)
def test_wrong_values_in_plain_words(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and err.count("\n") == 1
    assert message in err
    assert "typing" not in err and "<class" not in err


@pytest.mark.parametrize(
    "value",
    ["shakespeare", "shakespeare,wiki-sample", "[shakespeare]", "[shakespeare, wiki-sample]"],
)
def test_list_options_take_commas_or_brackets(value: str) -> None:
    want = tuple(value.strip("[]").replace(" ", "").split(","))
    assert parse("word2vec", "--sources", value)["sources"] == want
    assert parse("word2vec", f"--sources={value}")["sources"] == want


def test_bare_booleans() -> None:
    assert parse("evaluate", "m", "--json")["json"] is True
    assert parse("evaluate", "m", "--json", "false")["json"] is False
    assert parse("tokenizer", "encode", "t.json", "hi", "--color")["color"] is True


def test_the_model_is_positional_everywhere() -> None:
    assert parse("chat")["model"] == "smollm2-135m-instruct"  # the default chat model
    assert parse("chat", "my-run", "--temperature", "0")["model"] == "my-run"
    assert parse("chat", "--temperature", "0", "my-run")["model"] == "my-run"
    assert parse("generate", "my-run")["model"] == "my-run"
    assert str(parse("sample", "my-run")["run"]) == "my-run"
    assert parse("evaluate", "a", "b")["model"] == ["a", "b"]


def test_chat_no_longer_takes_model_as_an_option(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "chat", "--model", "smollm2-135m-instruct")
    assert code == 2 and "unknown option --model" in err
