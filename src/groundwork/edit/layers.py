"""Where the parts an editor touches live in each decoder family: the blocks, the token
embedding, and each block's MLP and its output projection (the "value" matrix of ROME's
key-value view of an MLP). Chapter 19, "Model editing".

Supported: :class:`~groundwork.models.llama.Llama` (and SmolLM2, Mixtral-free Llama
variants) with ``model.layers[i].mlp.down_proj``, and :class:`~groundwork.models.gpt.GPT`
with ``blocks[i].mlp.down_proj``.
"""

from torch import nn

from groundwork.errors import ConfigError


def decoder_blocks(model: nn.Module) -> nn.ModuleList:
    """The model's decoder blocks in order (Llama: ``model.layers``; GPT: ``blocks``).

    Raises:
        ConfigError: the model is not a supported decoder LM.
    """
    inner = getattr(model, "model", None)
    blocks = getattr(inner, "layers", None) if inner is not None else None
    if blocks is None:
        blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.ModuleList):
        raise ConfigError(
            f"cannot edit a {type(model).__name__}: editing supports decoder LMs whose blocks "
            "are model.layers (Llama, SmolLM2) or blocks (GPT)"
        )
    return blocks


def n_layers(model: nn.Module) -> int:
    """Number of decoder blocks."""
    return len(decoder_blocks(model))


def check_layer(model: nn.Module, layer: int) -> None:
    """Raise :class:`ConfigError` unless ``0 <= layer < n_layers(model)``."""
    n = n_layers(model)
    if not 0 <= layer < n:
        raise ConfigError(f"layer {layer} is out of range: the model has layers 0..{n - 1}")


def token_embedding(model: nn.Module) -> nn.Embedding:
    """The token embedding (Llama: ``model.embed_tokens``; GPT: ``wte``)."""
    inner = getattr(model, "model", None)
    emb = getattr(inner, "embed_tokens", None) if inner is not None else None
    if emb is None:
        emb = getattr(model, "wte", None)
    if not isinstance(emb, nn.Embedding):
        raise ConfigError(f"cannot find the token embedding of a {type(model).__name__}")
    return emb


def mlp(model: nn.Module, layer: int) -> nn.Module:
    """Block ``layer``'s MLP sublayer (its output is added to the residual stream)."""
    check_layer(model, layer)
    module = getattr(decoder_blocks(model)[layer], "mlp", None)
    if not isinstance(module, nn.Module):
        raise ConfigError(f"block {layer} of a {type(model).__name__} has no .mlp")
    return module


def attention(model: nn.Module, layer: int) -> nn.Module:
    """Block ``layer``'s attention sublayer (Llama: ``self_attn``; GPT: ``attn``)."""
    check_layer(model, layer)
    block = decoder_blocks(model)[layer]
    module = getattr(block, "self_attn", None) or getattr(block, "attn", None)
    if not isinstance(module, nn.Module):
        raise ConfigError(f"block {layer} of a {type(model).__name__} has no attention")
    return module


def mlp_out_proj(model: nn.Module, layer: int) -> nn.Linear:
    """Block ``layer``'s MLP output projection ``W_out`` (``down_proj``), ``(d_model, d_ff)``:
    its input is the MLP's hidden activation (the *key* :math:`k`), its output the vector the
    MLP writes into the residual stream (the *value* :math:`v = W_{out} k`)."""
    proj = getattr(mlp(model, layer), "down_proj", None)
    if not isinstance(proj, nn.Linear):
        raise ConfigError(
            f"block {layer}'s MLP has no down_proj linear layer (a mixture of experts cannot be "
            "edited with one rank-one update)"
        )
    return proj
