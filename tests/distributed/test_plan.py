"""The parallelism planner against the papers' own figures: ZeRO's memory per device
(Rajbhandari et al. 2020, Figure 1 and Table 1), Korthikanti et al. 2022's activation memory per
layer (Table 2's equations, on the GPT-3 175B shape of their Table 3), Megatron's communication
(Narayanan et al. 2021, §3.2), GPipe's bubble (Huang et al. 2019); and the bad-input paths."""

import dataclasses
import doctest
from typing import Any

import pytest

from groundwork import cli
from groundwork.distributed import plan
from groundwork.distributed.plan import (
    ModelShape,
    ParallelLayout,
    bubble_fraction,
    check_layout,
    communication_per_step,
    layer_activation_bytes,
    layouts_for,
    memory_per_device,
)
from groundwork.errors import ConfigError
from groundwork.models import registry
from groundwork.recipes import plan as plan_recipe

GB = 1e9

# ZeRO's running example: 7.5B parameters (Figure 1); shape fields other than the parameters do
# not enter the model states.
ZERO_MODEL = ModelShape(n_params=7_500_000_000, n_layers=32, d_model=4096, n_heads=32)

# GPT-3 175B as Korthikanti et al. train it (Table 3): s = 2048, h = 12288, a = 96, L = 96,
# t = 8, micro-batch 1; dropout masks are stored and the attention scores are materialised.
S, H, A, L, T = 2048, 12288, 96, 96, 8
GPT3 = ModelShape(n_params=175_000_000_000, n_layers=L, d_model=H, n_heads=A, vocab_size=51200)
SBH = S * 1 * H


def model_states_gb(dp: int, zero: int, precision: plan.PrecisionName = "mixed") -> float:
    layout = ParallelLayout(dp=dp, zero=zero)
    return memory_per_device(ZERO_MODEL, layout, precision).model_states / GB


# -- ZeRO: model states per device ----------------------------------------------------------------


@pytest.mark.parametrize(("zero", "paper_gb"), [(0, 120), (1, 31.4), (2, 16.6), (3, 1.9)])
def test_zero_figure_1_memory_per_device(zero: int, paper_gb: float) -> None:
    """Figure 1: Psi = 7.5B, K = 12, N_d = 64; baseline 120 GB, P_os 31.4 GB, P_os+g 16.6 GB,
    P_os+g+p 1.9 GB, to the paper's one decimal."""
    assert model_states_gb(64, zero) == pytest.approx(paper_gb, abs=0.05)


# Table 1, the 7.5B column: GB per device by data-parallel degree, as printed.
ZERO_TABLE_1 = {
    1: ("120", "120", "120", "120"),
    4: ("120", "52.5", "41.3", "30"),
    16: ("120", "35.6", "21.6", "7.5"),
    64: ("120", "31.4", "16.6", "1.88"),
    256: ("120", "30.4", "15.4", "0.47"),
    1024: ("120", "30.1", "15.1", "0.12"),
}


@pytest.mark.parametrize("dp", ZERO_TABLE_1)
def test_zero_table_1_memory_by_data_parallel_degree(dp: int) -> None:
    for zero, printed in enumerate(ZERO_TABLE_1[dp]):
        decimals = len(printed.partition(".")[2])
        half_unit = 0.5 * 10**-decimals + 1e-9
        assert model_states_gb(dp, zero) == pytest.approx(float(printed), abs=half_unit)


def test_zero_1_5b_gpt2_needs_24_gb_of_model_states() -> None:
    """ZeRO §3.1: a 1.5B-parameter GPT-2 needs at least 24 GB for its mixed-precision Adam
    states."""
    gpt2 = dataclasses.replace(ZERO_MODEL, n_params=1_500_000_000)
    assert memory_per_device(gpt2, ParallelLayout(), "mixed").model_states == 24 * GB


def test_fp32_accounting_is_16_bytes_per_parameter_split_4_4_8() -> None:
    mem = memory_per_device(ZERO_MODEL, ParallelLayout(dp=64, zero=1), "autocast")
    psi = ZERO_MODEL.n_params
    assert (mem.params, mem.grads, mem.optimizer) == (4 * psi, 4 * psi, 8 * psi / 64)
    assert mem.precision == "autocast"
    same = memory_per_device(ZERO_MODEL, ParallelLayout(dp=64, zero=1), "fp32")
    assert same.model_states == mem.model_states
    assert model_states_gb(1, 0, "fp32") == model_states_gb(1, 0, "mixed") == 120


def test_tensor_and_pipeline_parallel_divide_the_model_states() -> None:
    whole = memory_per_device(ZERO_MODEL, ParallelLayout(), "mixed").model_states
    split = memory_per_device(ZERO_MODEL, ParallelLayout(tp=4, pp=2), "mixed").model_states
    assert split == pytest.approx(whole / 8)
    fsdp = memory_per_device(ZERO_MODEL, ParallelLayout(dp=4, zero=3, tp=4, pp=2), "mixed")
    assert fsdp.model_states == pytest.approx(whole / 32)


# -- Korthikanti et al.: activations per layer ----------------------------------------------------


def layer_bytes(**layout: Any) -> float:
    return layer_activation_bytes(GPT3, ParallelLayout(seq_len=S, **layout), "mixed")


def test_activations_per_layer_without_parallelism() -> None:
    """Table 2: sbh(34 + 5as/h)."""
    assert layer_bytes() == SBH * (34 + 5 * A * S / H)


def test_gpt3_attention_core_is_80_sbh() -> None:
    """§5: for GPT-3, 5as/h = 80, more than the 34 sbh of everything else."""
    assert 5 * A * S / H == 80
    assert layer_bytes() - layer_bytes(checkpointing="selective") == 80 * SBH


def test_activations_per_layer_with_tensor_parallelism() -> None:
    """Table 2: sbh(10 + 24/t + 5as/(ht))."""
    assert layer_bytes(tp=T) == pytest.approx(SBH * (10 + 24 / T + 5 * A * S / (H * T)))


def test_activations_per_layer_with_tensor_and_sequence_parallelism() -> None:
    """Table 2: sbh/t (34 + 5as/h)."""
    got = layer_bytes(tp=T, sequence_parallel=True)
    assert got == pytest.approx(SBH / T * (34 + 5 * A * S / H))


def test_activations_per_layer_with_selective_recomputation() -> None:
    """Table 2: sbh(10 + 24/t) with tensor parallelism, 34 sbh/t with sequence parallelism."""
    assert layer_bytes(tp=T, checkpointing="selective") == pytest.approx(SBH * (10 + 24 / T))
    both = layer_bytes(tp=T, sequence_parallel=True, checkpointing="selective")
    assert both == pytest.approx(34 * SBH / T)


def test_activations_per_layer_with_full_recomputation() -> None:
    """Table 2: only the layer input, 2sbh (split over t with sequence parallelism)."""
    assert layer_bytes(tp=T, checkpointing="full") == 2 * SBH
    assert layer_bytes(tp=T, sequence_parallel=True, checkpointing="full") == 2 * SBH / T


def test_sequence_parallel_and_selective_save_about_5x() -> None:
    """The abstract: the two techniques reduce activation memory about 5x against tensor
    parallelism alone; on GPT-3 at t = 8, (10 + 3 + 10) / 4.25."""
    ratio = layer_bytes(tp=T) / layer_bytes(tp=T, sequence_parallel=True, checkpointing="selective")
    assert ratio == pytest.approx(23 / 4.25)
    assert 5 <= ratio < 6


def test_1f1b_first_stage_holds_a_whole_model_of_activations_whatever_p() -> None:
    """§4.2.3: with 1F1B the first stage keeps p micro-batches of L/p layers, L layers' worth,
    independent of p; GPipe keeps all m. (Without dropout, so that the embeddings' dropout
    mask, one per micro-batch in flight, does not count.)"""
    gpt3 = dataclasses.replace(GPT3, dropout=False)

    def first_stage(pp: int, schedule: plan.Schedule = "1f1b") -> float:
        layout = ParallelLayout(tp=T, pp=pp, seq_len=S, microbatches=16, schedule=schedule)
        return memory_per_device(gpt3, layout, "mixed", stage=0).activations

    per_layer = layer_activation_bytes(gpt3, ParallelLayout(tp=T, seq_len=S), "mixed")
    assert first_stage(4) == pytest.approx(first_stage(8))
    assert first_stage(8) == pytest.approx(L * per_layer)
    assert first_stage(8, "gpipe") == pytest.approx(2 * first_stage(8))


def test_our_shapes_count_grouped_query_swiglu_and_fused_attention() -> None:
    """The same terms on a Llama (GQA, SwiGLU, no dropout, fused attention), worked by hand."""
    config = registry.find_preset("tiny", "llama")  # h 64, 4 heads, 2 kv heads, d_ff 172
    shape = ModelShape.of(config)
    assert (shape.n_kv_heads, shape.d_head, shape.d_mlp) == (2, 16, 3 * 172)
    assert shape.fused_attention and not shape.dropout
    s, h = 128, 64
    # norms 4 * 2sh, Q and output 2 * 2s*64, K and V 2 * 2s*32, MLP 2s*516, softmax stats 4as
    expected = 8 * s * h + 4 * s * 64 + 4 * s * 32 + 2 * s * 516 + 4 * 4 * s
    assert layer_activation_bytes(shape, ParallelLayout(seq_len=s), "mixed") == expected


# -- communication ---------------------------------------------------------------------------------


def test_ddp_and_zero_communication_volumes() -> None:
    """Ring all-reduce sends 2(N-1)/N Psi per device; ZeRO-1/2 the same; ZeRO-3 1.5x (§7)."""
    psi, n = ZERO_MODEL.n_params, 64
    volume = {
        z: communication_per_step(ZERO_MODEL, ParallelLayout(dp=n, zero=z), "mixed")
        for z in range(4)
    }
    assert volume[0].data_parallel == pytest.approx(2 * (n - 1) / n * psi)
    assert volume[0].data_parallel_bytes == pytest.approx(2 * volume[0].data_parallel)  # fp16
    assert volume[1].data_parallel == pytest.approx(volume[0].data_parallel)
    assert volume[2].data_parallel == pytest.approx(volume[0].data_parallel)
    assert volume[3].data_parallel == pytest.approx(1.5 * volume[0].data_parallel)
    one = communication_per_step(ZERO_MODEL, ParallelLayout(), "mixed")
    assert one.total_bytes == 0


def test_sharded_gradients_communicate_every_micro_batch() -> None:
    def volume(zero: int) -> float:
        layout = ParallelLayout(dp=8, zero=zero, microbatches=4)
        return communication_per_step(ZERO_MODEL, layout).data_parallel

    assert volume(1) == pytest.approx(volume(0))
    assert volume(2) == pytest.approx(volume(0) * (4 + 1) / 2)
    assert volume(3) == pytest.approx(volume(0) * 3 * 4 / 2)


def test_megatron_tensor_parallel_sends_8bsh_per_layer_and_micro_batch() -> None:
    """Narayanan et al. 2021, §3.2: 8bsh(t-1)/t per layer and micro-batch (4 all-reduces)."""
    layout = ParallelLayout(tp=T, seq_len=S, micro_batch=2, microbatches=3)
    comm = communication_per_step(GPT3, layout, "mixed")
    assert comm.tensor_parallel == pytest.approx(L * 3 * 8 * 2 * SBH * (T - 1) / T)
    assert comm.tensor_parallel_bytes == pytest.approx(2 * comm.tensor_parallel)
    full = communication_per_step(GPT3, dataclasses.replace(layout, checkpointing="full"))
    assert full.tensor_parallel == pytest.approx(1.5 * comm.tensor_parallel)


def test_pipeline_stages_send_bsh_forward_and_back() -> None:
    def sent(pp: int) -> float:
        layout = ParallelLayout(tp=T, pp=pp, seq_len=S, microbatches=5)
        return communication_per_step(GPT3, layout).pipeline

    assert sent(1) == 0
    assert sent(2) == pytest.approx(5 * SBH / T)  # each stage sends one way
    assert sent(8) == pytest.approx(2 * 5 * SBH / T)  # a middle stage sends both ways


def test_bubble_fraction() -> None:
    """GPipe: (K-1)/(M+K-1), negligible once M >= 4K."""
    assert bubble_fraction(4, 16) == pytest.approx(3 / 19)
    assert bubble_fraction(1, 1) == 0
    assert bubble_fraction(8, 1) == pytest.approx(7 / 8)
    assert all(bubble_fraction(p, 4 * p) < 0.2 for p in (2, 4, 8, 64))


# -- registered configs, pipelines and the strategy table -----------------------------------------


def test_shapes_of_registered_configs() -> None:
    gpt2 = ModelShape.of(registry.find_preset("gpt2-124m"))
    assert gpt2.n_params == 124_439_808 and gpt2.tied_embeddings and gpt2.fused_attention
    mem = memory_per_device(registry.find_preset("gpt2-124m"), ParallelLayout(seq_len=1024))
    assert mem.model_states == 16 * 124_439_808
    mixtral = ModelShape.of(registry.find_preset("tiny", "mixtral"))
    assert mixtral.n_active is not None and mixtral.n_active < mixtral.n_params
    assert mixtral.d_mlp == 2 * 3 * 96 + 4  # top-2 SwiGLU experts and the router's logits


def test_pipeline_stages_hold_the_embeddings_first_and_the_head_last() -> None:
    shape = ModelShape.of(registry.find_preset("gpt2-124m"))  # tied: the last stage keeps a copy
    layout = ParallelLayout(pp=4, microbatches=8, seq_len=1024)
    first, last = (memory_per_device(shape, layout, "fp32", stage=i) for i in (0, 3))
    layers = shape.layer_params * 12 / 4
    assert first.params == pytest.approx(4 * (layers + shape.embedding_params))
    assert last.params == pytest.approx(4 * (layers + 50257 * 768))
    assert memory_per_device(shape, layout, "fp32").total == max(first.total, last.total)


def test_layouts_for_8_gpus() -> None:
    layouts = layouts_for(8, seq_len=1024)
    assert list(layouts) == [
        "DDP",
        "ZeRO-1",
        "ZeRO-2",
        "ZeRO-3 / FSDP",
        "TP 8",
        "PP 8",
        "FSDP 4 x TP 2",
        "FSDP 2 x TP 2 x PP 2",
    ]
    assert all(layout.gpus == 8 and layout.global_batch == 64 for layout in layouts.values())
    assert list(layouts_for(1)) == ["1 GPU"]


def test_plan_table_lists_what_does_not_fit_the_model() -> None:
    config = registry.find_preset("gpt2-124m")  # 12 heads: tp 8 does not divide them
    table = plan_recipe.plan_table(config, layouts_for(8, seq_len=1024), memory_gb=1)
    assert "| ZeRO-3 / FSDP | 8 x 1 x 1 | 3 | 8 |" in table
    assert "left out TP 8: tp=8 does not divide n_heads=12" in table
    assert "| no |" in table  # 2 GB of model states do not fit in 1 GB


# -- bad input ------------------------------------------------------------------------------------


def test_degrees_must_multiply_to_the_gpus() -> None:
    with pytest.raises(ConfigError, match=r"2 x 2 x 1 = 4 devices, but there are 8 GPUs"):
        check_layout(ZERO_MODEL, ParallelLayout(dp=2, tp=2), gpus=8)


def test_tp_must_divide_the_heads_and_kv_heads() -> None:
    with pytest.raises(ConfigError, match=r"tp=3 does not divide n_heads=32.*1, 2, 4, 8, 16, 32"):
        memory_per_device(ZERO_MODEL, ParallelLayout(tp=3))
    llama = registry.find_preset("tiny", "llama")  # 4 heads, 2 kv heads
    with pytest.raises(ConfigError, match="tp=4 does not divide n_kv_heads=2"):
        communication_per_step(llama, ParallelLayout(tp=4))


def test_pp_must_divide_the_layers() -> None:
    with pytest.raises(ConfigError, match="pp=5 does not divide n_layers=32"):
        memory_per_device(ZERO_MODEL, ParallelLayout(pp=5))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(zero=4), "zero must be a ZeRO stage 0, 1, 2 or 3"),
        (dict(dp=0), "dp must be a positive integer"),
        (dict(checkpointing="some"), "checkpointing must be one of"),
        (dict(schedule="interleaved"), "schedule must be one of"),
    ],
)
def test_bad_layouts(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ParallelLayout(**fields)


def test_other_bad_input() -> None:
    with pytest.raises(ConfigError, match="precision must be one of"):
        memory_per_device(ZERO_MODEL, ParallelLayout(), "fp8")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"stage must be in 0\.\.1"):
        memory_per_device(ZERO_MODEL, ParallelLayout(pp=2), stage=2)
    with pytest.raises(ConfigError, match="not decoder-only transformers"):
        ModelShape.of(registry.find_preset("tiny", "lstm"))
    with pytest.raises(ConfigError, match="global_batch=12 is not a multiple"):
        layouts_for(8, global_batch=12)


def test_doctests() -> None:
    assert doctest.testmod(plan).failed == 0
    assert doctest.testmod(plan_recipe).failed == 0


# -- the command ----------------------------------------------------------------------------------


def test_model_plan_command(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["model", "plan", "gpt2-124m", "--gpus", "8", "--seq-len", "1024"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("gpt2-124m: gpt, 124,439,808 parameters")
    assert "precision autocast: 4 + 4 + 8 bytes per parameter" in out
    for row in ("| DDP | 8 x 1 x 1 | 0 | 8 |", "| FSDP 4 x TP 2 | 4 x 2 x 1 | 3 | 16 |"):
        assert row in out
    assert "left out TP 8" in out and "left out PP 8: pp=8 does not divide n_layers=12" in out


def test_model_plan_command_one_layout_and_its_errors(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["model", "plan", "smollm2-135m", "--gpus", "6", "--tp", "3", "--zero", "3"]
    assert cli.main([*argv, "--precision", "mixed"]) == 0
    out = capsys.readouterr().out
    assert "| your layout | 2 x 3 x 1 | 3 | 24 |" in out
    assert cli.main([*argv, "--dp", "3"]) == 2
    assert "3 x 3 x 1 = 9 devices, but there are 6 GPUs" in capsys.readouterr().err
    assert cli.main(["model", "plan", "smollm2-135m", "--tp", "4"]) == 2
    assert "tp=4 does not divide n_heads=9" in capsys.readouterr().err
