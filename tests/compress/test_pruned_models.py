"""Head-pruned models as models: ``pruned_heads`` recorded in original indices (over repeated
prunings), saved and loaded as a run with their smaller layers, decoded with a KV cache when
layers keep different numbers of key/value heads (dynamic, static and the server's slotted cache
all equal to recomputing without a cache), and clear errors for configs that cannot be and
formats that cannot describe them."""

from pathlib import Path

import pytest
import torch
from torch import nn

from groundwork.compress.prune import prune_heads
from groundwork.errors import ConfigError
from groundwork.generate import GenerationConfig, generate, generate_static
from groundwork.interop.gguf_writer import export_llama_gguf
from groundwork.models import GPT, GPTConfig, Llama, LlamaConfig
from groundwork.models.config import layer_heads
from groundwork.models.gpt_hf import to_hf_config as gpt_to_hf_config
from groundwork.models.llama_hf import to_hf_config as llama_to_hf_config
from groundwork.models.olmoe import OlmoeConfig
from groundwork.runs import load_run, read_config, write_run
from groundwork.serve.slots import SlotKVCache
from groundwork.tokenize import train_tokenizer

TOL = dict(rtol=1e-5, atol=1e-5)
PROMPT = [5, 17, 3, 99, 42, 7, 250]


def tiny(kind: str) -> GPT | Llama:
    """A small random model (weights std 0.3, so greedy decoding varies), in eval mode."""
    torch.manual_seed(0)
    model: GPT | Llama
    if kind == "gpt":
        model = GPT(GPTConfig.from_name("tiny", max_seq_len=64))
    else:  # 4 query heads in 2 key/value groups
        model = Llama(LlamaConfig.from_name("tiny", max_seq_len=64))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                nn.init.normal_(p, std=0.3)
    return model.eval()


def uneven_llama() -> Llama:
    """Layer 0 loses one key/value group (2 query heads, 1 KV head), layer 1 keeps all."""
    model = tiny("llama")
    importance = [torch.tensor([1.0, 1.0, 0.1, 0.1]), torch.tensor([1.0, 1.0, 1.0, 1.0])]
    prune_heads(model, 2, importance=importance)
    assert isinstance(model, Llama)
    return model


def test_repeated_prunings_are_recorded_in_original_indices() -> None:
    model = tiny("gpt")
    full = [torch.ones(4), torch.ones(4)]
    prune_heads(model, 1, importance=[torch.tensor([0.5, 0.1, 0.9, 0.9]), full[1]])
    assert model.config.pruned_heads == {0: [1]}
    # layer 0 now has heads 0, 2, 3 (original); its current head 1 is original head 2
    prune_heads(model, 1, importance=[torch.tensor([0.9, 0.1, 0.9]), full[1]])
    assert model.config.pruned_heads == {0: [1, 2]}
    assert layer_heads(model.config, 0) == (2, 2) and layer_heads(model.config, 1) == (4, 4)
    rebuilt = GPT(model.config)
    rebuilt.load_state_dict(model.state_dict())  # strict: every shape agrees
    ids = torch.tensor([PROMPT])
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(ids), model(ids), **TOL)


@pytest.mark.parametrize("kind", ["gpt", "llama"])
def test_a_pruned_model_saves_and_loads_as_a_run(kind: str, tmp_path: Path) -> None:
    model = uneven_llama() if kind == "llama" else tiny("gpt")
    if kind == "gpt":
        prune_heads(model, 3)  # by weight norm: wherever the smallest heads are
    tok = train_tokenizer("char", ["some text to train a tokenizer on"], vocab_size=64)
    tok_file = tok.save(tmp_path / "tokenizer.json")
    out = write_run(model, tmp_path / "run", tokenizer=tok_file)
    assert read_config(out)["model"]["pruned_heads"] == model.config.pruned_heads
    loaded = load_run(out, device="cpu").model
    assert loaded.config.pruned_heads == model.config.pruned_heads
    assert loaded.num_parameters() == model.num_parameters()
    ids = torch.tensor([PROMPT])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), model(ids), **TOL)


def test_parameter_counts_follow_the_pruned_heads() -> None:
    from groundwork.models.gpt import parameter_counts as gpt_counts
    from groundwork.models.llama import parameter_counts as llama_counts

    llama, gpt = uneven_llama(), tiny("gpt")
    prune_heads(gpt, 3)
    assert llama_counts(llama.config)["total"] == llama.num_parameters()
    assert gpt_counts(gpt.config)["total"] == gpt.num_parameters()


def test_cached_decoding_with_uneven_kv_heads_equals_recomputing() -> None:
    """Layer 0 keeps 1 key/value head, layer 1 keeps 2: the cache holds 2 and layer 0 uses the
    first. Each step's logits equal a forward pass over the whole sequence without a cache (in
    float64: the logits of these large random weights reach the tens, where float32 summation
    order alone moves them by 1e-5)."""
    model = uneven_llama().double()
    assert [a.self_attn.n_kv_heads for a in model.model.layers] == [1, 2]
    assert model.new_kv_cache(1).k.shape[2] == 2
    config = GenerationConfig(max_new_tokens=8, temperature=0)
    out = generate(model, [PROMPT], config, return_logits=True)
    assert out.logits is not None
    seq = torch.tensor([PROMPT + out.sequences[0]])
    with torch.no_grad():
        full = model(seq[:, :-1])[:, len(PROMPT) - 1 :]  # (1, 8, V): each step's logits
    torch.testing.assert_close(out.logits, full.float(), **TOL)  # generate keeps float32
    static = generate_static(model, [PROMPT, PROMPT[:3]], config, return_logits=True)
    dynamic = generate(model, [PROMPT, PROMPT[:3]], config, return_logits=True)
    assert static.sequences == dynamic.sequences
    assert static.logits is not None and dynamic.logits is not None
    torch.testing.assert_close(static.logits, dynamic.logits, **TOL)


def test_the_servers_slotted_cache_with_uneven_kv_heads() -> None:
    """Two prompts prefilled into slots, then one decoding step each at its own position, as
    the server's engine does: the logits equal a forward pass without a cache (float64)."""
    model = uneven_llama().double()
    cache = SlotKVCache(model.new_kv_cache(2, 32))
    prompts = [PROMPT, PROMPT[:4]]
    nxt = [11, 12]
    with torch.no_grad():
        for slot, p in enumerate(prompts):
            model(torch.tensor([p]), kv_cache=cache.prefill(slot))
        positions = torch.tensor([len(p) for p in prompts])
        view, mask = cache.decode(positions)
        logits = model(
            torch.tensor(nxt)[:, None],
            attention_mask=mask,
            position_ids=positions[:, None],
            kv_cache=view,
        )[:, -1]
        for b, p in enumerate(prompts):
            want = model(torch.tensor([[*p, nxt[b]]]))[0, -1]
            torch.testing.assert_close(logits[b], want, **TOL)


# ---------------------------------------------------------------------------------------------
# bad input
@pytest.mark.parametrize(
    ("pruned", "match"),
    [
        ({0: [1]}, "same number of query heads per group"),  # group 0 keeps 1, group 1 keeps 2
        ({2: [0]}, "layer 2 is not in 0..1"),
        ({0: [0, 1, 2, 3]}, "cannot remove all 4 heads"),
        ({0: [4]}, "not all among the layer's 4 heads"),
        ({0: "x"}, "pruned_heads must map layer indices"),
    ],
)
def test_impossible_pruned_heads_are_config_errors(pruned: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        LlamaConfig.from_name("tiny", pruned_heads=pruned)


def test_pruned_heads_from_a_file_are_normalised() -> None:
    config = LlamaConfig.from_name("tiny", pruned_heads={"1": ["3", 2], "0": []})
    assert config.pruned_heads == {1: [2, 3]}
    assert layer_heads(config, 0) == (4, 2) and layer_heads(config, 1) == (2, 1)


def test_olmoe_heads_cannot_be_pruned() -> None:
    with pytest.raises(ConfigError, match="query/key norms"):
        OlmoeConfig.from_name("tiny", pruned_heads={0: [2, 3]})


def test_formats_with_one_head_count_refuse_a_pruned_model(tmp_path: Path) -> None:
    llama = uneven_llama()
    with pytest.raises(ConfigError, match="LlamaConfig has one head count"):
        llama_to_hf_config(llama.config)
    gpt = tiny("gpt")
    prune_heads(gpt, 1)
    with pytest.raises(ConfigError, match="GPT2Config has one head count"):
        gpt_to_hf_config(gpt.config)
    tok = train_tokenizer("char", ["text"], vocab_size=16)
    with pytest.raises(ConfigError, match="GGUF's llama metadata"):
        export_llama_gguf(llama, tok, tmp_path / "m.gguf")
