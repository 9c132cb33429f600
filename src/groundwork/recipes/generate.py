"""The decoding commands: `groundwork sample`, `generate` and `chat` on a run directory or a
named pretrained model. Chapter 10 (Decoding).

Every command takes the model first, as a positional argument, and behaves the same way at the
model's context: the prompt must fit in it (it is checked before anything is printed), and
generation past it slides the window (each step reads the last ``max_seq_len`` tokens).

``generate`` and ``chat`` can run the model in bfloat16 (``--dtype``) and with quantised linear
layers (``--quantize``, chapter 18): weight-only int8 or int4
(:mod:`groundwork.compress.weight_only`), or 4- and 8-bit weights times 8-bit activations on
integer dot products, w4a8 and w8a8 (:mod:`groundwork.compress.int_dot`, the fastest on a CPU).
Batch-1 decoding reads every weight once per token, so fewer bytes per weight is faster.
"""

import dataclasses
from pathlib import Path
from typing import Any, Literal

from groundwork.errors import ConfigError, UnknownNameError, did_you_mean


def load_model(
    name: str, *, seq2seq: bool = False, any_family: bool = False
) -> tuple[Any, Any, str | None]:
    """A run directory or a named pretrained model: ``(model, tokenizer, chat_template)``; a
    causal LM, or with ``seq2seq`` also an encoder-decoder run (``kind: seq2seq``), or with
    ``any_family`` any model (an encoder to fine-tune)."""
    from groundwork.pretrained import PRETRAINED, load
    from groundwork.runs import is_run, load_run

    if is_run(name):
        net, tokenizer, config = load_run(Path(name))
        if any_family or (seq2seq and config.get("kind") == "seq2seq"):
            return net, tokenizer, None
        from groundwork.align.runs import read_chat_template  # written by `groundwork align`

        return _causal_lm(name, net), tokenizer, read_chat_template(Path(name))
    if name in PRETRAINED:
        smol = load(name)
        model = smol.model if any_family else _causal_lm(name, smol.model)
        return model, smol.tokenizer, smol.chat_template
    raise UnknownNameError(
        f"{name!r} is neither a run directory nor a named model: {did_you_mean(name, PRETRAINED)}"
    )


Quantize = Literal["none", "int8", "int4", "w8a8", "w4a8"]
QUANTIZE_CHOICES = ("none", "int8", "int4", "w8a8", "w4a8")
Dtype = Literal["float32", "bfloat16"]


def prepare_for_decoding(net: Any, dtype: str = "float32", quantize: str = "none") -> Any:
    """``net`` converted to ``dtype`` and, unless ``quantize`` is ``"none"``, with its linear
    layers replaced by quantised ones: weight-only int8 or int4 (int4 in groups of 32; a layer
    whose shape the int4 kernel cannot take stays int8, said on stderr; both kernels compute in
    bfloat16), or w8a8/w4a8 (integer dot products, any shape). The output head is 8-bit in
    every scheme, as llama.cpp's Q4_0 files keep it."""
    import sys

    import torch
    from torch import nn

    if dtype not in ("float32", "bfloat16"):
        raise ConfigError(f"--dtype must be float32 or bfloat16, got {dtype!r}")
    if quantize not in QUANTIZE_CHOICES:
        raise ConfigError(
            f"--quantize must be one of {', '.join(QUANTIZE_CHOICES)}, got {quantize!r}"
        )
    if dtype == "bfloat16":
        net = net.to(torch.bfloat16)
    if quantize == "none":
        return net
    if quantize in ("w8a8", "w4a8"):
        from groundwork.compress.int_dot import quantize_int_dot

        return quantize_int_dot(net, quantize)  # type: ignore[arg-type]
    from groundwork.compress.weight_only import int4_shape_problem, quantize_weights

    if quantize == "int4":
        kept = [
            name
            for name, m in net.named_modules()
            if isinstance(m, nn.Linear)
            and name != "lm_head"
            and int4_shape_problem(m.out_features, m.in_features, 32)
        ]
        if kept:
            print(
                f"note: {len(kept)} layer(s) kept at int8, their shapes do not fit the int4 "
                f"kernel (out a multiple of 16, in of 32): {', '.join(kept)}",
                file=sys.stderr,
            )
    return quantize_weights(net, quantize, group_size=32, fallback="int8")  # type: ignore[arg-type]


def _causal_lm(name: str, model: Any) -> Any:
    """``model`` if it is a registered causal LM, else a one-line error saying what it is."""
    from groundwork.models import registry

    try:
        arch = registry.arch_of(getattr(model, "config", None))
    except ConfigError:
        arch = None
    if arch is None or not arch.causal_lm:
        what = f"a {arch.name} model" if arch is not None else f"a {type(model).__name__}"
        hint = (
            " (for sentence embeddings use `groundwork embed`)"
            if arch and arch.name == "bert"
            else ""
        )
        raise ConfigError(
            f"{name} is {what}, not a causal language model: it cannot generate text or be "
            f"scored token by token{hint}"
        )
    return model


def sample(
    run: Path,
    prompt: str = "\n",
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int | None = 50,
    seed: int = 0,
) -> None:
    """Sample text from a trained run's model.

    Args:
        run: A run directory (from `groundwork pretrain`).
        prompt: Text to continue.
        max_new_tokens: Number of tokens to generate (past the model's context the window
            slides).
        temperature: Sampling temperature (0: greedy).
        top_k: Sample among the k most likely tokens (none: all).
        seed: Random seed.
    """
    import torch

    from groundwork.generate import sample as sample_ids
    from groundwork.generate.config import GenerationConfig
    from groundwork.generate.decode import context_window
    from groundwork.runs import load_run

    GenerationConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k)
    net, tokenizer, _ = load_run(run)
    ids = sample_ids(
        net,
        tokenizer.encode(prompt),
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        max_seq_len=context_window(net),
        stop_id=tokenizer.eot_id,
        generator=torch.Generator().manual_seed(seed),
    )
    print(prompt + tokenizer.decode([i for i in ids if i != tokenizer.eot_id]))


def generate(
    model: str,
    prompt: str = "",
    strategy: Literal["sample", "greedy", "beam"] = "sample",
    max_new_tokens: int = 128,
    temperature: float = 0.8,
    top_k: int | None = None,
    top_p: float | None = 0.95,
    min_p: float | None = None,
    repetition_penalty: float | None = None,
    num_beams: int = 4,
    length_penalty: float = 1.0,
    stop: str | None = None,
    seed: int | None = None,
    dtype: Dtype = "float32",
    quantize: Quantize = "none",
    compile: bool = False,
) -> None:
    """Continue a prompt with a trained run or a named model, streaming to the terminal; an
    encoder-decoder run (T5) instead prints its output for the prompt.

    Args:
        model: A run directory or a named model (smollm2-135m-instruct).
        prompt: The text to continue (an encoder-decoder's input).
        strategy: sample (temperature/top-k/top-p/min-p), greedy, or beam search.
        max_new_tokens: Generate at most this many tokens (past the model's context the window
            slides).
        temperature: Sampling temperature.
        top_k: Sample among the k most likely tokens.
        top_p: Nucleus sampling: smallest set of tokens with this much probability.
        min_p: Drop tokens below min_p times the top token's probability.
        repetition_penalty: Penalise tokens already present (>1 discourages repeats).
        num_beams: Beams for --strategy beam.
        length_penalty: Beam search length normalisation exponent.
        stop: Stop when the text contains this string.
        seed: Random seed for sampling.
        dtype: Run the model in float32 or bfloat16.
        quantize: Quantised linear layers for faster CPU decoding: weight-only int8 (one
            scale per output channel) or int4 (groups of 32), or w8a8/w4a8 (8-/4-bit weights
            times 8-bit activations, integer dot products: the fastest); the head is 8-bit.
        compile: Decode with a static KV cache and a compiled decode step (CUDA graphs on a
            GPU; the first steps pay for compiling): prints the text when it is done, and
            prompt plus max_new_tokens must fit the model's context. A Llama-style model with
            --quantize w4a8 or w8a8 needs no compiling: its decoding step runs as one C++ call
            (streamed) whenever prompt plus max_new_tokens fit its context, with or without
            --compile.
    """
    from groundwork.generate.beam import beam_search
    from groundwork.generate.config import GenerationConfig
    from groundwork.generate.decode import check_prompts
    from groundwork.generate.stream import check_stop_strings, stream

    if not prompt:
        raise ConfigError("--prompt is empty: give some text to continue")
    config = GenerationConfig(  # checks every number, whatever the strategy uses
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        repetition_penalty=repetition_penalty,
        num_beams=num_beams,
        length_penalty=length_penalty,
        stop_strings=(stop,) if stop else (),
        seed=seed,
    )
    if strategy != "beam":
        config = dataclasses.replace(config, num_beams=1)
    if strategy != "sample":  # greedy and beam search pick tokens by score alone
        config = dataclasses.replace(config, temperature=0.0, top_k=None, top_p=None, min_p=None)
    from groundwork.models.t5 import T5

    net, tokenizer, _ = load_model(model, seq2seq=True)
    net = prepare_for_decoding(net, dtype, quantize)
    if isinstance(net, T5):
        if compile:
            raise ConfigError("--compile decodes causal language models, not encoder-decoders")
        print(_transduce(net, tokenizer, prompt, config, strategy))
        return
    if compile and strategy == "beam":
        raise ConfigError("--compile decodes greedy or sampled text, not beam search")
    ids = tokenizer.encode(prompt)
    check_prompts(net, [ids])  # before the prompt is echoed: an error comes alone
    check_stop_strings(tokenizer, config.stop_strings)
    print(prompt, end="", flush=True)
    if strategy == "beam":
        eos = () if tokenizer.eot_id is None else (tokenizer.eot_id,)
        best, _ = beam_search(net, ids, config, eos_ids=eos)[0]
        print(tokenizer.decode([i for i in best if i not in eos]))
        return
    steps = _fused_steps(net, ids, config) if quantize in ("w4a8", "w8a8") else None
    if compile and steps is None:
        print(_compiled_continuation(net, tokenizer, ids, config))
        return
    for piece in stream(net, tokenizer, ids, config, steps=steps):
        print(piece, end="", flush=True)
    print()


def _fused_steps(net: Any, ids: list[int], config: Any) -> Any:
    """For a w4a8/w8a8 Llama whose prompt plus new tokens fit its context, the decoding steps of
    :func:`~groundwork.compress.fused_decode.fused_decoder` (the whole step in one C++ call, the
    fastest on a CPU); otherwise ``None`` (the PyTorch step)."""
    from groundwork.compress.fused_decode import fused_decoder, unsupported
    from groundwork.generate.decode import context_window

    limit = context_window(net)
    need = len(ids) + config.max_new_tokens
    if unsupported(net) is not None or (limit is not None and need > limit):
        return None
    return fused_decoder(net.eval(), need).steps([ids], config)


def _compiled_continuation(net: Any, tokenizer: Any, ids: list[int], config: Any) -> str:
    """The new text after ``ids``, decoded with a static cache and a compiled step
    (:func:`~groundwork.generate.static.generate_static`): up to the end-of-text token, cut
    before a stop string."""
    from groundwork.generate.static import generate_static

    eos = () if tokenizer.eot_id is None else (tokenizer.eot_id,)
    out = generate_static(
        net.eval(), [ids], config, eos_ids=eos, decode=tokenizer.decode, compile=True
    )
    text = tokenizer.decode([i for i in out.sequences[0] if i not in eos])
    for stop in config.stop_strings:
        text = text.split(stop, 1)[0]
    return text


def _transduce(net: Any, tokenizer: Any, text: str, config: Any, strategy: str) -> str:
    """An encoder-decoder's output for ``text`` (its ids and the EOS; ``<extra_id_k>`` in it
    are sentinels): the decoder writes new text rather than continuing the prompt."""
    from groundwork.generate.seq2seq import beam_search_seq2seq, generate_seq2seq
    from groundwork.recipes.pretrain_encoders import decode_with_sentinels, encode_with_sentinels

    if config.stop_strings:
        raise ConfigError("--stop is for causal language models; an encoder-decoder stops at EOS")
    c = net.config
    ids = [*encode_with_sentinels(tokenizer, text, c.vocab_size), c.eos_id]
    if len(ids) > c.max_seq_len:
        raise ConfigError(
            f"the input is {len(ids)} tokens (EOS included); the model reads at most "
            f"{c.max_seq_len}"
        )
    net.eval()
    if strategy == "beam":
        out = beam_search_seq2seq(net, [ids], config)[0][0][0]
    else:
        out = generate_seq2seq(net, [ids], config).sequences[0]
    return decode_with_sentinels(tokenizer, [i for i in out if i != c.eos_id], c.vocab_size)


def chat(
    model: str = "smollm2-135m-instruct",
    system: str | None = None,
    max_new_tokens: int = 256,
    temperature: float = 0.7,
    top_p: float | None = 0.9,
    seed: int | None = None,
    dtype: Dtype = "float32",
    quantize: Quantize = "none",
) -> None:
    """Chat with a model in the terminal (/help lists the commands; Ctrl-C stops an answer).

    Args:
        model: A named chat model.
        system: A system prompt.
        max_new_tokens: Longest answer in tokens.
        temperature: Sampling temperature (0: greedy).
        top_p: Nucleus sampling threshold.
        seed: Random seed.
        dtype: Run the model in float32 or bfloat16.
        quantize: Quantised linear layers for faster CPU decoding: weight-only int8 (one
            scale per output channel) or int4 (groups of 32), or w8a8/w4a8 (8-/4-bit weights
            times 8-bit activations, integer dot products: the fastest); the head is 8-bit.
    """
    from groundwork.generate.chat import run_chat
    from groundwork.generate.config import GenerationConfig

    config = GenerationConfig(
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed
    )
    net, tokenizer, template = load_model(model)
    if template is None:
        raise ConfigError(
            f"{model} has no chat template; chat needs an instruction-tuned model such as "
            "smollm2-135m-instruct (use `groundwork generate` for plain continuation)"
        )
    net = prepare_for_decoding(net, dtype, quantize)
    run_chat(net, tokenizer, template, config=config, system=system)
