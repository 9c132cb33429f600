"""The whole decoding step of a W4A8/W8A8 Llama in one C++ call: how llama.cpp decodes on a CPU.

After :func:`~groundwork.compress.int_dot.quantize_int_dot`, SmolLM2-135M's matrix products for
one token take about 5 ms on one core of the machine of chapter 18, yet a decoding step takes
about 10 ms, eager or compiled: the rest is the price of running some four hundred small
operations one by one (Python, the dispatcher, the compiled graph's wrapper and guards, a
general attention kernel asked for one query). llama.cpp pays almost nothing of it, because its
whole step is compiled code.

:class:`FusedLlamaStep` does the same for our models: ``fused_decode.cpp`` runs every layer of
one token's step (RMSNorm, the 8-bit activation codes shared by q, k and v and by gate and up,
our integer products, RoPE, the new key and value written into the cache, attention over the
filled slots, SwiGLU, the residual additions) and returns the final hidden state; the embedding,
the angles of RoPE and the output head stay in Python, a handful of operations a token. It is a
drop-in decode step for :class:`~groundwork.generate.StaticDecoder` (:func:`fused_decoder`),
which keeps doing the prefill (any prompt length), the sampling and the stopping, so the tokens
are those of the PyTorch model: the same weights, the same grids, the same formulas, rounded in
another order (a float rounding can move an activation across an 8-bit code boundary now and
then, as batching does; ``tests/compress/test_fused_decode.py``).

What it takes: a :class:`~groundwork.models.llama.Llama`-style model (``model.layers`` of
pre-norm blocks with RMSNorm, grouped-query attention with RoPE and no bias, SwiGLU) whose seven
projections of every layer are :class:`~groundwork.compress.int_dot.IntDotLinear`, float32, on
the CPU, decoded one sequence at a time; :func:`unsupported` says what stands in the way.

Chapter 18, "The whole step in C++".
"""

from typing import Any

import torch
from torch import nn

from groundwork.compress.int_dot import IntDotLinear, _extension
from groundwork.errors import ConfigError
from groundwork.generate.static import StaticDecoder
from groundwork.nn.kv_cache import StaticKVCache
from groundwork.nn.norms import RMSNorm

PROJECTIONS = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)
"""The seven linear layers of a block, in the order the C++ step takes them."""


def unsupported(model: nn.Module) -> str | None:
    """Why ``model``'s decoding step cannot run fused, or ``None`` if it can."""
    stack = getattr(model, "model", None)
    needed = ("embed_tokens", "layers", "norm", "rotary")
    if stack is None or not all(hasattr(stack, a) for a in needed) or not hasattr(model, "lm_head"):
        return f"{type(model).__name__} is not a Llama-style decoder (model.layers, lm_head)"
    if next(model.parameters()).device.type != "cpu":
        return "the model is not on the CPU"
    norms = [stack.norm]
    shapes: set[tuple[int, int, int]] = set()
    for i, layer in enumerate(stack.layers):
        attn = getattr(layer, "self_attn", None)
        if attn is None or getattr(attn, "q_norm", None) is not None:
            return f"layer {i}'s attention is not Llama's (query/key norms, or none at all)"
        if getattr(attn, "fused_qkv", False):
            return f"layer {i}'s attention has a fused qkv projection"
        shapes.add((attn.n_heads, attn.n_kv_heads, attn.d_head))
        if len(shapes) > 1:
            return f"layer {i} has other head counts than layer 0 (pruned heads)"
        for name in PROJECTIONS:
            try:
                proj = layer.get_submodule(name)
            except AttributeError:
                return f"layer {i} has no {name} (a mixture of experts?)"
            if not isinstance(proj, IntDotLinear):
                return (
                    f"layer {i}'s {name} is {type(proj).__name__}, not IntDotLinear: quantise "
                    "the model with groundwork.compress.int_dot.quantize_int_dot first"
                )
            if proj.bias is not None:
                return f"layer {i}'s {name} has a bias"
        norms += [
            getattr(layer, "input_layernorm", None),
            getattr(layer, "post_attention_layernorm", None),
        ]
    if not all(isinstance(n, RMSNorm) for n in norms):
        return "a block's norms are not RMSNorm"
    if len({n.eps for n in norms}) != 1:
        return "the RMSNorms do not share one epsilon"
    if any(n.weight.dtype != torch.float32 for n in norms):
        return "the model is not float32"
    return None


class FusedLlamaStep:
    """A decode step with :func:`~groundwork.generate.static.decode_step`'s signature that runs
    the layers of ``model`` in C++ (``fused_decode.cpp``), writing into ``cache``.

    Args:
        model: A Llama-style model quantised with
            :func:`~groundwork.compress.int_dot.quantize_int_dot` (:func:`unsupported` says
            what else it needs).
        cache: The static cache the step writes: batch 1, float32, on the CPU (the one a
            :class:`~groundwork.generate.StaticDecoder` holds).
        kernel: The compiled extension to run (default: this CPU's native build; the tests
            pass the builds of :func:`~groundwork.compress.int_dot.build_kernel` for other
            instruction sets).
        float_products: Multiply the dequantised weights by the activations in float, not
            quantised to 8 bits: slow, for the tests, which hold the step's own arithmetic
            (norms, RoPE, the cache, attention, SwiGLU) to the model with float layers of the
            same weights at 1e-5 (with 8-bit activations, a rounding in another order can move
            a code now and then).

    Raises:
        ConfigError: a model or cache the C++ step cannot run, or no compiled kernel.
    """

    def __init__(
        self,
        model: nn.Module,
        cache: StaticKVCache,
        *,
        kernel: Any = None,
        float_products: bool = False,
    ) -> None:
        if (why := unsupported(model)) is not None:
            raise ConfigError(f"fused decoding: {why}")
        if cache.filled.shape[0] != 1:
            raise ConfigError(
                f"fused decoding runs one sequence at a time, the cache holds "
                f"{cache.filled.shape[0]}: build the decoder with batch_size=1"
            )
        if cache.keys[0].dtype != torch.float32 or cache.filled.device.type != "cpu":
            raise ConfigError("fused decoding needs a float32 cache on the CPU")
        ext = _extension() if kernel is None else kernel
        if ext is None:
            raise ConfigError(
                "fused decoding needs the compiled int_dot kernel, which could not be built "
                "(a C++ compiler and `pip install ninja` make it)"
            )
        stack: Any = model.model
        layers = list(stack.layers)
        norms, packed, scales, bits, inputs, outputs = [], [], [], [], [], []
        for layer in layers:
            norms += [
                layer.input_layernorm.weight.detach(),
                layer.post_attention_layernorm.weight.detach(),
            ]
            for name in PROJECTIONS:
                proj = layer.get_submodule(name)
                packed.append(proj.packed)
                scales.append(proj.scales)
                bits.append(proj.bits)
                inputs.append(proj.in_features)
                outputs.append(proj.out_features)
        norms.append(stack.norm.weight.detach())
        attn = layers[0].self_attn
        self.cache = cache
        self._stack = stack
        self._head: nn.Module = getattr(model, "lm_head")  # noqa: B009 (an nn.Module's attribute)
        self._step = ext.FusedLlamaStep(
            norms,
            packed,
            scales,
            bits,
            inputs,
            outputs,
            cache.keys,
            cache.values,
            attn.n_heads,
            attn.n_kv_heads,
            float(stack.norm.eps),
            float_products,
        )

    # --8<-- [start:call]
    @torch.no_grad()
    def __call__(
        self, model: nn.Module, cache: StaticKVCache, ids: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        """Logits ``(1, V)`` after feeding ``ids`` ``(1, 1)`` at ``positions`` ``(1, 1)``; the
        key and value go to the slot ``cache.index`` of ``cache``, the one the step was built
        for. ``model`` is not used: the step runs the weights it was built from (the caller's
        model did the prefill; the tests give a float twin of it)."""
        if cache is not self.cache:
            raise ConfigError("this fused step was built for another cache")
        cache.advance()
        x = self._stack.embed_tokens(ids)[0, 0]  # (d,)
        cos, sin = self._stack.rotary(positions)  # (1, 1, D) each
        hidden = self._step.step(x.float(), cos[0, 0], sin[0, 0], int(cache.index.item()))
        cache.step_done()
        return self._head(hidden[None])  # (1, V)

    # --8<-- [end:call]


def fused_decoder(model: nn.Module, max_seq_len: int | None = None) -> StaticDecoder:
    """A batch-1 :class:`~groundwork.generate.StaticDecoder` whose decode step is a
    :class:`FusedLlamaStep`: ``fused_decoder(quantize_int_dot(model)).generate([ids], config)``.

    Raises:
        ConfigError: as :class:`FusedLlamaStep`.
    """
    decoder = StaticDecoder(model, 1, max_seq_len)
    decoder.step = FusedLlamaStep(model, decoder.cache)
    return decoder
