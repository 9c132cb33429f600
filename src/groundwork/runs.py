"""The run directory: the one format every command that produces a model writes, and
:func:`load_run`, which reads any kind back.

```
runs/<name>/
  config.yaml            kind + the model section (architecture and its fields) + the recipe's
                         own sections (data, train, ...): enough to rebuild the model
  model.safetensors      weights (Hugging Face key names where the family has a twin)
  tokenizer.json         the tokenizer (``tokenizers``-loadable), when the kind has one
  trainer_state.json     step, tokens seen, RNG states, best validation metric (trained runs)
  optimizer.safetensors  optimizer moments (for exact resume)
  metrics.jsonl, plots/, tb/   what the training engine logged
```

``kind`` says what the model is, and so which files hold it:

* ``lm`` (the default): a registered causal LM, ``model.safetensors`` + ``tokenizer.json``;
* ``mlm``, ``seq2seq``: an encoder or encoder-decoder pretrained by ``groundwork pretrain``
  (BERT with MLM + NSP, T5 by span corruption), the class named by ``model_class``
  (``BertForPreTraining``, ``T5``), ``model.safetensors`` + ``tokenizer.json``;
* ``classifier``: a registered text classifier (``cnn``, ``bilstm``), ``model.safetensors`` +
  ``vocab.json`` (the word vocabulary) and the class ``labels`` in ``config.yaml``;
* ``image-classifier``: an image classifier trained by ``groundwork pretrain`` (``vit``,
  ``image-cnn``), ``model.safetensors`` alone, with the class ``labels`` and the pixel
  statistics (``images``) in ``config.yaml``;
* ``clip``: an image encoder and a text encoder trained together, ``model.safetensors`` +
  ``tokenizer.json`` (the captions' tokenizer), the caption thresholds in ``config.yaml``;
* ``word2vec``: word vectors, ``vectors.safetensors`` + ``vocab.json`` (+ ``vectors.txt``);
* ``ngram``: an n-gram LM's counts, ``model.npz`` + ``vocab.json`` or ``tokenizer.json``.

``load_run(dir)`` returns ``(model, tokenizer or vocabulary, config)`` for any of them; a new kind
is taught to it with :func:`register_kind`. Writes are atomic (:mod:`groundwork.fileio`).
See ``docs/architecture.md``.

**Kinds as plugins.** A kind whose loader lives in a higher layer (``task-head``, read by
:mod:`groundwork.adapt.runs`) cannot be imported from here. Such a loader is declared as an entry
point of the group ``groundwork.run_kinds`` (``pyproject.toml``: ``task-head =
"groundwork.adapt.runs:load_task_head"``), and :func:`load_run` imports and registers it the
first time it meets that kind, so a run loads whatever the caller imported before. A third-party
package can add a kind the same way.
"""

import shutil
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, NamedTuple

from torch import nn

from groundwork.errors import CheckpointError, ConfigError, TokenizerError, did_you_mean
from groundwork.fileio import read_yaml, write_yaml
from groundwork.models import registry
from groundwork.runtime import resolve_device
from groundwork.train import checkpoint as ckpt

CONFIG_FILE = ckpt.CONFIG_FILE
MODEL_FILE = ckpt.MODEL_FILE
TOKENIZER_FILE = "tokenizer.json"
STATE_FILE = ckpt.STATE_FILE
OPTIMIZER_FILE = ckpt.OPTIMIZER_FILE


class Run(NamedTuple):
    """What :func:`load_run` returns (unpacks as ``model, tokenizer, config``)."""

    model: Any
    """The model, in eval mode, on the requested device."""
    tokenizer: Any
    """Its tokenizer (``None`` for kinds without one)."""
    config: dict[str, Any]
    """The run's ``config.yaml`` as a dict."""


Loader = Callable[[Path, dict[str, Any], bool], tuple[nn.Module | Any, Any]]
"""``(run_dir, config, weights) -> (model, tokenizer)`` for one kind of run."""

_LOADERS: dict[str, Loader] = {}


ENTRY_POINT_GROUP = "groundwork.run_kinds"
"""The entry-point group naming the loaders of kinds defined outside this module
(``kind = "package.module:loader"``)."""


def register_kind(kind: str, loader: Loader) -> None:
    """Teach :func:`load_run` to read runs of ``kind`` (recipes call this for their outputs)."""
    _LOADERS[kind] = loader


def known_kinds() -> list[str]:
    """Every kind :func:`load_run` can read: those registered and those declared as entry
    points of :data:`ENTRY_POINT_GROUP`, sorted."""
    return sorted({*_LOADERS, *(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))})


def loader_for(kind: str) -> Loader | None:
    """The loader of ``kind``: a registered one, else the entry point of that name in
    :data:`ENTRY_POINT_GROUP`, imported and registered now; ``None`` if there is neither.

    Raises:
        CheckpointError: The entry point exists but cannot be imported (a broken install).
    """
    if kind in _LOADERS:
        return _LOADERS[kind]
    for point in entry_points(group=ENTRY_POINT_GROUP, name=kind):
        try:
            loader = point.load()
        except (ImportError, AttributeError) as err:
            raise CheckpointError(
                f"the loader of run kind {kind!r} ({point.value}) cannot be imported ({err}); "
                "reinstall groundwork (pip install -e .) or the package that provides it"
            ) from err
        if not callable(loader):
            raise CheckpointError(
                f"the entry point of run kind {kind!r} ({point.value}) is not a function"
            )
        register_kind(kind, loader)
        return loader
    return None


def plain(obj: Any) -> Any:
    """Make a config YAML-safe: dataclasses to dicts, paths to strings, tuples to lists."""
    if is_dataclass(obj) and not isinstance(obj, type):
        obj = asdict(obj)
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def is_run(path: Path | str) -> bool:
    """Whether ``path`` is a run directory (holds a ``config.yaml``)."""
    return Path(path, CONFIG_FILE).is_file()


def write_config(out: Path, *, kind: str = "lm", model: Any = None, **sections: Any) -> Path:
    """Write ``config.yaml``: ``kind``, the ``model`` section (a registered config, or a plain
    dict) and any other sections (dataclasses or dicts), atomically."""
    out = Path(out)
    body: dict[str, Any] = {"kind": kind}
    if model is not None:
        body["model"] = plain(model if isinstance(model, dict) else registry.config_to_dict(model))
    body.update({name: plain(value) for name, value in sections.items() if value is not None})
    write_yaml(out / CONFIG_FILE, body)
    return out


def write_run(
    model: nn.Module,
    out: Path,
    *,
    tokenizer: Path | None = None,
    kind: str = "lm",
    **sections: Any,
) -> Path:
    """Write a run directory holding a model: ``config.yaml`` (its config and ``sections``),
    ``model.safetensors`` and, if given, a copy of ``tokenizer.json``. What `groundwork import`
    produces; the training engine adds its state beside it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_config(out, kind=kind, model=model.config, **sections)
    ckpt.save_model(model, out / MODEL_FILE)
    if tokenizer is not None and Path(tokenizer).resolve() != (out / TOKENIZER_FILE).resolve():
        shutil.copyfile(tokenizer, out / TOKENIZER_FILE)
    return out


def read_config(run_dir: Path) -> dict[str, Any]:
    """A run's ``config.yaml``, or ``CheckpointError`` saying it is not a run directory."""
    run_dir = Path(run_dir)
    if not is_run(run_dir):
        hint = ""
        if (run_dir / "config.json").is_file():
            hint = (
                " (it holds a config.json: an output of an older groundwork version; "
                "train it again to get a run directory)"
            )
        elif (run_dir / "word2vec_config.json").is_file():
            hint = (
                " (it holds word vectors from an older groundwork version: load them with "
                "groundwork.models.word2vec.Word2Vec.load, or run `groundwork word2vec --out DIR` "
                "again)"
            )
        raise CheckpointError(
            f"{run_dir} is not a run directory (no {CONFIG_FILE}){hint}; "
            "train one with `groundwork pretrain`"
        )
    config = read_yaml(run_dir / CONFIG_FILE)
    if not isinstance(config, dict):
        raise CheckpointError(f"{run_dir / CONFIG_FILE} does not hold a mapping")
    return config


def load_tokenizer(run_dir: Path) -> Any:
    """The run's ``tokenizer.json`` (ours, or any ``tokenizers`` file), or ``None`` if absent."""
    from groundwork import tokenize

    tok_file = Path(run_dir) / TOKENIZER_FILE
    if not tok_file.exists():
        return None
    try:
        return tokenize.load_tokenizer(tok_file)
    except TokenizerError:
        return tokenize.HFTokenizer.from_file(tok_file)  # e.g. an imported model's


def build_model(run_dir: Path, config: dict[str, Any]) -> nn.Module:
    """The model a run's ``config.yaml`` describes, freshly initialised: its ``model`` section
    built as ``model_class`` (one of its family's classes, default the registry's)."""
    if "model" not in config:
        raise CheckpointError(f"{run_dir / CONFIG_FILE} has no model section")
    model_config = registry.config_from_dict(config["model"])
    return _model_class(run_dir, model_config, config.get("model_class"))(model_config)


def _load_lm(run_dir: Path, config: dict[str, Any], weights: bool) -> tuple[nn.Module, Any]:
    """A registered model (``config["model_class"]``: one of its family's classes, default the
    registry's) with its weights and ``tokenizer.json``."""
    net = build_model(run_dir, config)
    if weights:
        ckpt.load_model_weights(net, run_dir / MODEL_FILE)
    tokenizer = load_tokenizer(run_dir)
    if tokenizer is None:
        raise CheckpointError(f"{run_dir} has no {TOKENIZER_FILE}")
    return net, tokenizer


def _model_class(run_dir: Path, model_config: Any, name: str | None) -> Callable[[Any], nn.Module]:
    """The class called ``name`` among the family's (the registry's model class and those its
    Hugging Face adapter pairs with ``transformers`` classes: ``BertForPreTraining``, ...)."""
    arch = registry.arch_of(model_config)
    classes = arch.model_classes()
    if name is None:
        return arch.model_cls
    if name not in classes:
        raise CheckpointError(
            f"{run_dir / CONFIG_FILE}: model_class {name!r} is not a class of {arch.name} models "
            f"({', '.join(sorted(classes))})"
        )
    return classes[name]


register_kind("lm", _load_lm)


register_kind("mlm", _load_lm)  # an encoder pretrained by groundwork pretrain (BERT)
register_kind("seq2seq", _load_lm)  # an encoder-decoder (T5)
register_kind("clip", _load_lm)  # an image and a text encoder trained together (CLIP)


def _load_image_classifier(
    run_dir: Path, config: dict[str, Any], weights: bool
) -> tuple[nn.Module, Any]:
    """An image classifier (a ViT, a CNN): the model alone, no tokenizer; ``config["labels"]``
    names the classes and ``config["images"]`` holds the pixel statistics."""
    net = build_model(run_dir, config)
    if weights:
        ckpt.load_model_weights(net, run_dir / MODEL_FILE)
    return net, None


register_kind("image-classifier", _load_image_classifier)

VOCAB_FILE = "vocab.json"
"""A word-level run's vocabulary (:class:`groundwork.tokenize.words.Vocabulary` as JSON)."""


def _load_classifier(run_dir: Path, config: dict[str, Any], weights: bool) -> tuple[nn.Module, Any]:
    """A text classifier run: a registered classifier (``cnn``, ``bilstm``) over a word
    vocabulary (``vocab.json``); ``config["labels"]`` names the classes."""
    from groundwork.fileio import read_json
    from groundwork.tokenize.words import Vocabulary

    if "model" not in config:
        raise CheckpointError(f"{run_dir / CONFIG_FILE} has no model section")
    model_config = registry.config_from_dict(config["model"])
    vocab = Vocabulary.from_json(read_json(run_dir / VOCAB_FILE))
    if model_config.vocab_size != len(vocab):
        raise CheckpointError(
            f"{run_dir}: the model expects {model_config.vocab_size} words but {VOCAB_FILE} has "
            f"{len(vocab)}; the files come from different runs"
        )
    net = registry.build_model(model_config)
    if weights:
        ckpt.load_model_weights(net, run_dir / MODEL_FILE)
    return net, vocab


register_kind("classifier", _load_classifier)


def load_run(run_dir: Path | str, *, device: str = "auto", weights: bool = True) -> Run:
    """Load any run directory: ``(model in eval mode, tokenizer, config dict)``.

    Raises:
        CheckpointError: not a run directory, an unknown kind (neither registered nor an entry
            point of :data:`ENTRY_POINT_GROUP`), or weights that do not fit.
    """
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    kind = str(config.get("kind", "lm"))
    loader = loader_for(kind)
    if loader is None:
        raise CheckpointError(
            f"{run_dir}: unknown run kind {kind!r}: {did_you_mean(kind, known_kinds())}"
        )
    model, tokenizer = loader(run_dir, config, weights)
    if isinstance(model, nn.Module):
        model.to(resolve_device(device)).eval()
    return Run(model, tokenizer, config)


def check_writable(out: Path, *, overwrite: bool = False, resume_hint: bool = True) -> None:
    """Refuse to write a new run over an existing one unless ``overwrite`` is set.

    Raises:
        ConfigError: ``out`` already holds a run (the message names ``--resume`` and
            ``--overwrite``).
    """
    out = Path(out)
    if overwrite or not out.exists():
        return
    if is_run(out) or (out / MODEL_FILE).exists():
        hint = f"continue it with --resume {out}, " if resume_hint else ""
        raise ConfigError(
            f"{out} already holds a run; {hint}choose another --out, or pass --overwrite to "
            "replace it"
        )


# --- word-level kinds: word2vec and n-gram runs ---

NGRAM_MODEL_FILE = "model.npz"
"""An n-gram run's counts (:meth:`groundwork.models.ngram.NGramLM.save`)."""


def _load_word2vec(run_dir: Path, config: dict[str, Any], weights: bool) -> tuple[Any, Any]:
    """Word vectors (``groundwork word2vec``): the
    :class:`~groundwork.models.word2vec.Word2Vec` model and its word vocabulary."""
    from groundwork.models.word2vec import Word2Vec, Word2VecConfig

    try:
        model_config = Word2VecConfig(**config["model"])
    except (KeyError, TypeError, ConfigError) as err:
        raise CheckpointError(
            f"{run_dir / CONFIG_FILE} has no valid word2vec model section ({err})"
        ) from err
    model = Word2Vec.load(run_dir, model_config, weights=weights)
    return model, model.vocab


def _load_ngram(run_dir: Path, config: dict[str, Any], weights: bool) -> tuple[Any, Any]:
    """An n-gram model (``groundwork ngram --out``) and what cut its text into ids: a word
    vocabulary (``vocab.json``) or a tokenizer (``tokenizer.json``), checked to be the one the
    counts were made with."""
    from groundwork.fileio import read_json
    from groundwork.models.ngram import NGramConfig, NGramLM, vocab_fingerprint
    from groundwork.tokenize.words import Vocabulary

    vocab: Any
    if (run_dir / VOCAB_FILE).is_file():
        vocab = Vocabulary.from_json(read_json(run_dir / VOCAB_FILE))
        tokens = list(vocab.tokens)
    else:
        vocab = load_tokenizer(run_dir)
        if vocab is None:
            raise CheckpointError(f"{run_dir} has neither {VOCAB_FILE} nor {TOKENIZER_FILE}")
        tokens = [vocab.id_to_token(i) for i in range(vocab.vocab_size)]
    if not weights:
        try:
            return NGramLM(NGramConfig(**config["model"])), vocab
        except (KeyError, TypeError, ConfigError) as err:
            raise CheckpointError(
                f"{run_dir / CONFIG_FILE} has no valid n-gram model section ({err})"
            ) from err
    model = NGramLM.load(
        run_dir / NGRAM_MODEL_FILE, vocab_size=len(tokens), fingerprint=vocab_fingerprint(tokens)
    )
    return model, vocab


register_kind("word2vec", _load_word2vec)
register_kind("ngram", _load_ngram)
