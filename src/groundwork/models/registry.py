"""The one list of model architectures: name -> config class, model class, presets, and the
pieces other layers need (Hugging Face adapter, parameter counts).

Everything that must know which architectures exist (building a model from a config, rebuilding it
from a run's ``config.yaml``, ``groundwork model info``/``model list``, pretraining, Hugging Face
import/export) reads this table and nothing else. Adding a family is one model file plus one
:func:`register` call at the bottom of this module (``docs/architecture.md`` walks through it).
"""

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from groundwork.errors import CheckpointError, ConfigError, UnknownNameError, did_you_mean
from groundwork.models.hf_adapter import HFAdapter


@dataclass(frozen=True)
class Architecture:
    """One registered model family."""

    name: str
    """Short name used in configs and on the command line (``gpt``, ``llama``, ``lstm``)."""
    config_cls: Any
    """The config dataclass (with a ``from_name(preset, **overrides)`` classmethod)."""
    model_cls: Callable[[Any], nn.Module]
    """Builds the model from a config."""
    presets: Mapping[str, Mapping[str, Any]]
    """Named configs (keyword arguments of ``config_cls``)."""
    description: str
    """One line for ``groundwork model list``."""
    causal_lm: bool = True
    """A next-token model (:class:`~groundwork.models.protocol.CausalLM`): pretrainable,
    decodable, scorable."""
    hf: HFAdapter | None = None
    """Its Hugging Face adapter (:class:`groundwork.models.hf_adapter.HFAdapter`), or ``None``
    when the family has no ``transformers`` twin."""
    parameter_counts: Callable[[Any], dict[str, int]] | None = None
    """Parameters by component of a config (for ``groundwork model info``)."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Anything else a layer above reads from the entry. Pretrainable non-causal families give
    ``run_kind`` (the run directory's ``kind``: ``mlm``, ``seq2seq``), ``model_class`` (the class
    ``groundwork pretrain`` trains and a run rebuilds) and ``task``."""

    def config(self, preset: str, **overrides: Any) -> Any:
        """The config of a named preset with some fields changed."""
        return self.config_cls.from_name(preset, **overrides)

    def model_classes(self) -> dict[str, Any]:
        """The family's model classes by name: the registry's, and those its Hugging Face
        adapter pairs with ``transformers`` classes (``Bert``, ``BertForMaskedLM``, ...)."""
        classes: dict[str, Any] = {getattr(self.model_cls, "__name__", self.name): self.model_cls}
        if self.hf is not None:
            classes.update({cls.__name__: cls for cls in self.hf.hf_classes.values()})
        return classes

    def field_names(self) -> set[str]:
        """The config's field names."""
        return {f.name for f in dataclasses.fields(self.config_cls)}


ARCHITECTURES: dict[str, Architecture] = {}
"""Registered architectures by name, in registration order."""


def register(arch: Architecture) -> Architecture:
    """Add an architecture to the table (names are unique)."""
    if arch.name in ARCHITECTURES:
        raise ConfigError(f"architecture {arch.name!r} is registered twice")
    ARCHITECTURES[arch.name] = arch
    return arch


def get(name: str) -> Architecture:
    """The architecture called ``name``, or ``UnknownNameError`` with a suggestion."""
    if name not in ARCHITECTURES:
        raise UnknownNameError(
            f"unknown architecture {name!r}: {did_you_mean(name, ARCHITECTURES)}"
        )
    return ARCHITECTURES[name]


def names(*, causal_lm: bool | None = None) -> list[str]:
    """Registered architecture names (only the causal LMs, or only the others, if asked)."""
    return [a.name for a in ARCHITECTURES.values() if causal_lm is None or a.causal_lm == causal_lm]


def arch_of(config: Any) -> Architecture:
    """The architecture a config object belongs to."""
    for arch in ARCHITECTURES.values():
        if type(config) is arch.config_cls:
            return arch
    raise ConfigError(f"no registered architecture has configs of type {type(config).__name__}")


def hf_adapters() -> dict[str, HFAdapter]:
    """The Hugging Face adapters by architecture name (the families with a ``transformers``
    twin), in registration order."""
    return {a.name: a.hf for a in ARCHITECTURES.values() if a.hf is not None}


def hf_adapter_for_model_type(model_type: str) -> HFAdapter | None:
    """The adapter that reads ``config.json``'s ``model_type`` (``"gpt2"`` -> GPT's), or
    ``None``."""
    for adapter in hf_adapters().values():
        if model_type in adapter.model_types:
            return adapter
    return None


def build_model(config: Any) -> Any:
    """The model a config describes (freshly initialised, in training mode)."""
    return arch_of(config).model_cls(config)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A config as a plain dict with its architecture name under ``arch`` (for ``config.yaml``)."""
    return {"arch": arch_of(config).name, **dataclasses.asdict(config)}


def config_from_dict(fields: Mapping[str, Any]) -> Any:
    """Rebuild a config from :func:`config_to_dict`'s output (a run's ``model`` section).

    Raises:
        CheckpointError: unknown architecture, or fields that do not fit it.
    """
    fields = dict(fields)
    name = fields.pop("arch", "gpt")
    if name not in ARCHITECTURES:
        hint = did_you_mean(name, ARCHITECTURES)
        raise CheckpointError(f"config.yaml names an unknown architecture {name!r}: {hint}")
    arch = ARCHITECTURES[name]
    for key, value in fields.items():  # YAML has no tuples
        if isinstance(value, list):
            fields[key] = tuple(value)
    try:
        return arch.config_cls(**fields)
    except TypeError as err:
        raise CheckpointError(f"config.yaml's model section does not fit {name}: {err}") from err


def find_preset(name: str, arch: str | None = None, **overrides: Any) -> Any:
    """The config of preset ``name``: of architecture ``arch`` if given, else of the first
    registered architecture that has a preset of that name.

    Raises:
        UnknownNameError: no architecture has such a preset (the message lists the close ones).
    """
    if arch is not None:
        return get(arch).config(name, **overrides)
    for entry in ARCHITECTURES.values():
        if name in entry.presets:
            return entry.config(name, **overrides)
    every = [p for a in ARCHITECTURES.values() for p in a.presets]
    raise UnknownNameError(f"no architecture has a preset {name!r}: {did_you_mean(name, every)}")


def _register_builtin() -> None:
    from groundwork.models import cnn, gpt, llama, rnn, rnn_classifier
    from groundwork.models.bert import BERT_PRESETS, Bert, BertConfig
    from groundwork.models.bert import parameter_counts as bert_parameter_counts
    from groundwork.models.bert_hf import BERT_ADAPTER
    from groundwork.models.gpt_hf import GPT2_ADAPTER
    from groundwork.models.llama_hf import LLAMA_ADAPTER
    from groundwork.models.mixtral import MIXTRAL_PRESETS, Mixtral, MixtralConfig
    from groundwork.models.mixtral import parameter_counts as mixtral_parameter_counts
    from groundwork.models.mixtral_hf import MIXTRAL_ADAPTER
    from groundwork.models.olmoe import OLMOE_PRESETS, Olmoe, OlmoeConfig
    from groundwork.models.olmoe import parameter_counts as olmoe_parameter_counts
    from groundwork.models.olmoe_hf import OLMOE_ADAPTER
    from groundwork.models.switch_gpt import SWITCH_GPT_PRESETS, SwitchGPT, SwitchGPTConfig
    from groundwork.models.switch_gpt import parameter_counts as switch_gpt_parameter_counts
    from groundwork.models.t5 import T5, T5_PRESETS, T5Config
    from groundwork.models.t5 import parameter_counts as t5_parameter_counts
    from groundwork.models.t5_hf import T5_ADAPTER

    register(
        Architecture(
            name="gpt",
            config_cls=gpt.GPTConfig,
            model_cls=gpt.GPT,
            presets=gpt.GPT_PRESETS,
            description="GPT-2: learned positions, pre-LN LayerNorm, GELU MLP (Radford 2019)",
            hf=GPT2_ADAPTER,
            parameter_counts=gpt.parameter_counts,
        )
    )
    register(
        Architecture(
            name="llama",
            config_cls=llama.LlamaConfig,
            model_cls=llama.Llama,
            presets=llama.LLAMA_PRESETS,
            description="Llama: RoPE, RMSNorm, SwiGLU, grouped-query attention (Touvron 2023)",
            hf=LLAMA_ADAPTER,
            parameter_counts=llama.parameter_counts,
        )
    )
    register(
        Architecture(
            name="mixtral",
            config_cls=MixtralConfig,
            model_cls=Mixtral,
            presets=MIXTRAL_PRESETS,
            description="Mixtral: Llama with sparse top-2 mixture-of-experts MLPs (Jiang 2024)",
            hf=MIXTRAL_ADAPTER,
            parameter_counts=mixtral_parameter_counts,
        )
    )
    register(
        Architecture(
            name="olmoe",
            config_cls=OlmoeConfig,
            model_cls=Olmoe,
            presets=OLMOE_PRESETS,
            description="OLMoE: fine-grained top-8 experts, QK-norm (Muennighoff 2024)",
            hf=OLMOE_ADAPTER,
            parameter_counts=olmoe_parameter_counts,
        )
    )
    register(
        Architecture(
            name="switch-gpt",
            config_cls=SwitchGPTConfig,
            model_cls=SwitchGPT,
            presets=SWITCH_GPT_PRESETS,
            description="Switch GPT: GPT-2 with top-1 mixture-of-experts MLPs (Fedus 2021)",
            parameter_counts=switch_gpt_parameter_counts,
        )
    )
    register(
        Architecture(
            name="lstm",
            config_cls=rnn.LSTMConfig,
            model_cls=rnn.LSTMLM,
            presets=rnn.LSTM_PRESETS,
            description="LSTM language model with tied embeddings (Merity 2018)",
            parameter_counts=rnn.parameter_counts,
        )
    )
    register(
        Architecture(
            name="cnn",
            config_cls=cnn.TextCNNConfig,
            model_cls=cnn.TextCNN,
            presets={},
            description="Kim's convolutional text classifier (Kim 2014)",
            causal_lm=False,
        )
    )
    register(
        Architecture(
            name="bilstm",
            config_cls=rnn_classifier.BiLSTMClassifierConfig,
            model_cls=rnn_classifier.BiLSTMClassifier,
            presets={},
            description="Bidirectional LSTM text classifier (Graves & Schmidhuber 2005)",
            causal_lm=False,
        )
    )
    register(
        Architecture(
            name="bert",
            config_cls=BertConfig,
            model_cls=Bert,
            presets=BERT_PRESETS,
            description="BERT: bidirectional post-LN encoder, MLM + NSP heads (Devlin 2019)",
            causal_lm=False,  # an encoder: not decoded, not pretrained with causal LM
            hf=BERT_ADAPTER,
            parameter_counts=bert_parameter_counts,
            extra={"run_kind": "mlm", "model_class": "BertForPreTraining", "task": "mlm+nsp"},
        )
    )
    register(
        Architecture(
            name="t5",
            config_cls=T5Config,
            model_cls=T5,
            presets=T5_PRESETS,
            description="T5: encoder-decoder, relative position buckets, RMS norms (Raffel 2020)",
            causal_lm=False,  # an encoder-decoder: decoded by groundwork.generate.seq2seq
            hf=T5_ADAPTER,
            parameter_counts=t5_parameter_counts,
            extra={"run_kind": "seq2seq", "model_class": "T5", "task": "span-corruption"},
        )
    )
    from groundwork.models.vit import VIT_PRESETS, ViTConfig, ViTForImageClassification
    from groundwork.models.vit import parameter_counts as vit_parameter_counts
    from groundwork.models.vit_hf import VIT_ADAPTER

    register(
        Architecture(
            name="vit",
            config_cls=ViTConfig,
            model_cls=ViTForImageClassification,
            presets=VIT_PRESETS,
            description="ViT: images as patch tokens, pre-LN encoder, [CLS] classifier "
            "(Dosovitskiy 2021)",
            causal_lm=False,  # an image classifier: reads pixels, predicts no tokens
            hf=VIT_ADAPTER,
            parameter_counts=vit_parameter_counts,
            extra={
                "run_kind": "image-classifier",
                "model_class": "ViTForImageClassification",
                "task": "image-classification",
            },
        )
    )
    from groundwork.models.clip import CLIP, CLIP_PRESETS, CLIPConfig
    from groundwork.models.clip import parameter_counts as clip_parameter_counts
    from groundwork.models.clip_hf import CLIP_ADAPTER

    register(
        Architecture(
            name="clip",
            config_cls=CLIPConfig,
            model_cls=CLIP,
            presets=CLIP_PRESETS,
            description=(
                "CLIP: a ViT and a causal text encoder trained contrastively (Radford 2021)"
            ),
            causal_lm=False,  # two encoders and a contrastive loss: nothing is decoded
            hf=CLIP_ADAPTER,
            parameter_counts=clip_parameter_counts,
            extra={"run_kind": "clip", "model_class": "CLIP", "task": "contrastive"},
        )
    )
    from groundwork.models.image_cnn import IMAGE_CNN_PRESETS, ImageCNN, ImageCNNConfig
    from groundwork.models.image_cnn import parameter_counts as image_cnn_parameter_counts

    register(
        Architecture(
            name="image-cnn",
            config_cls=ImageCNNConfig,
            model_cls=ImageCNN,
            presets=IMAGE_CNN_PRESETS,
            description="A small convolutional image classifier, the ViT's baseline (LeCun 1998)",
            causal_lm=False,  # an image classifier: reads pixels, predicts no tokens
            parameter_counts=image_cnn_parameter_counts,
            extra={
                "run_kind": "image-classifier",
                "model_class": "ImageCNN",
                "task": "image-classification",
            },
        )
    )


_register_builtin()
