"""Model architectures, one readable file each, with their configs and named presets.

* :mod:`groundwork.models.gpt`: GPT-2 (``GPT``, ``GPTConfig``).
* :mod:`groundwork.models.llama`: Llama (``Llama``, ``LlamaConfig``).
* :mod:`groundwork.models.mixtral`: Mixtral, Llama with mixture-of-experts MLPs (``Mixtral``,
  ``MixtralConfig``).
* :mod:`groundwork.models.olmoe`: OLMoE, fine-grained experts and QK-norm (``Olmoe``,
  ``OlmoeConfig``).
* :mod:`groundwork.models.switch_gpt`: a Switch-style GPT, GPT-2 with top-1 mixture-of-experts
  MLPs (``SwitchGPT``, ``SwitchGPTConfig``).
* :mod:`groundwork.models.rnn`: RNN, GRU and LSTM cells and stacks; the LSTM language model
  (``LSTMLM``, ``LSTMConfig``).
* :mod:`groundwork.models.ngram`: n-gram language models with add-k, Witten–Bell and
  interpolated Kneser–Ney smoothing (``NGramLM``, ``NGramConfig``).
* :mod:`groundwork.models.word2vec`: skip-gram and CBOW with negative sampling or hierarchical
  softmax (``Word2Vec``, ``Word2VecConfig``).
* :mod:`groundwork.models.bert`: BERT, an encoder, with its MLM and NSP heads (``Bert``,
  ``BertForMaskedLM``, ``BertForPreTraining``, ``BertConfig``).
* :mod:`groundwork.models.t5`: T5, an encoder-decoder (``T5``, ``T5Encoder``, ``T5Config``).
* :mod:`groundwork.models.cnn`: Kim's convolutional text classifier (``TextCNN``).
* :mod:`groundwork.models.vit`: the Vision Transformer (``ViT``, ``ViTForImageClassification``,
  ``ViTConfig``); :mod:`groundwork.models.image_cnn`: its convolutional baseline (``ImageCNN``).
* :mod:`groundwork.models.clip`: CLIP, an image and a text encoder trained contrastively
  (``CLIP``, ``CLIPConfig``, ``clip_loss``).
* :mod:`groundwork.models.rnn_classifier`: a BiLSTM text classifier (``BiLSTMClassifier``).
* :mod:`groundwork.models.decoder`: what GPT and Llama share (init, KV cache, parameter count).
* :mod:`groundwork.models.hf_adapter`: the Hugging Face adapter type; the adapters themselves are
  ``*_hf.py`` beside each model.
* :mod:`groundwork.models.info`: parameter counts, FLOPs and memory of a config.
* :mod:`groundwork.models.registry`: the one list of architectures (``ARCHITECTURES``), with their
  presets, Hugging Face adapters and parameter counts.
* :mod:`groundwork.models.protocol`: the ``CausalLM`` protocol generation and evaluation use.
"""

from groundwork.models.bert import Bert, BertConfig, BertForMaskedLM, BertForPreTraining
from groundwork.models.clip import CLIP, CLIPConfig, clip_loss
from groundwork.models.cnn import TextCNN, TextCNNConfig
from groundwork.models.gpt import GPT, GPTConfig
from groundwork.models.image_cnn import ImageCNN, ImageCNNConfig
from groundwork.models.info import format_info, info
from groundwork.models.llama import Llama, LlamaConfig
from groundwork.models.mixtral import Mixtral, MixtralConfig
from groundwork.models.ngram import NGramConfig, NGramLM
from groundwork.models.olmoe import Olmoe, OlmoeConfig
from groundwork.models.protocol import CausalLM
from groundwork.models.registry import ARCHITECTURES, build_model
from groundwork.models.rnn import GRU, LSTM, LSTMLM, RNN, LSTMConfig
from groundwork.models.rnn_classifier import BiLSTMClassifier, BiLSTMClassifierConfig
from groundwork.models.switch_gpt import SwitchGPT, SwitchGPTConfig
from groundwork.models.t5 import T5, T5Config, T5Encoder
from groundwork.models.vit import ViT, ViTConfig, ViTForImageClassification
from groundwork.models.word2vec import Word2Vec, Word2VecConfig

__all__ = [
    "ARCHITECTURES",
    "CLIP",
    "GPT",
    "GRU",
    "LSTM",
    "LSTMLM",
    "RNN",
    "T5",
    "Bert",
    "BertConfig",
    "BertForMaskedLM",
    "BertForPreTraining",
    "BiLSTMClassifier",
    "BiLSTMClassifierConfig",
    "CLIPConfig",
    "CausalLM",
    "GPTConfig",
    "ImageCNN",
    "ImageCNNConfig",
    "LSTMConfig",
    "Llama",
    "LlamaConfig",
    "Mixtral",
    "MixtralConfig",
    "NGramConfig",
    "NGramLM",
    "Olmoe",
    "OlmoeConfig",
    "SwitchGPT",
    "SwitchGPTConfig",
    "T5Config",
    "T5Encoder",
    "TextCNN",
    "TextCNNConfig",
    "ViT",
    "ViTConfig",
    "ViTForImageClassification",
    "Word2Vec",
    "Word2VecConfig",
    "build_model",
    "clip_loss",
    "format_info",
    "info",
]
