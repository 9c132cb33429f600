"""RNN, GRU and LSTM: parity with torch.nn on the same weights (outputs, final states, gradients),
the fused path equal to the loop, the LSTM language model, and bad input."""

from typing import Any

import pytest
import torch
from torch import nn

from groundwork.errors import ConfigError, UnknownNameError
from groundwork.models import LSTMLM, LSTMConfig, build_model, info
from groundwork.models.rnn import (
    GRU,
    LSTM,
    RNN,
    GRUCell,
    LSTMCell,
    RNNCell,
    from_torch,
    from_torch_state_dict,
    to_torch_state_dict,
)

TOL = dict(rtol=1e-5, atol=1e-5)
KINDS: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {
    "rnn_tanh": (nn.RNN, dict(nonlinearity="tanh")),
    "rnn_relu": (nn.RNN, dict(nonlinearity="relu")),
    "gru": (nn.GRU, {}),
    "lstm": (nn.LSTM, {}),
}


def _initial_state(kind: str, rows: int, batch: int, hidden: int) -> Any:
    h0 = torch.randn(rows, batch, hidden, requires_grad=True)
    if kind == "lstm":
        return (h0, torch.randn(rows, batch, hidden, requires_grad=True))
    return h0


def _flat(state: Any) -> list[torch.Tensor]:
    return list(state) if isinstance(state, tuple) else [state]


@pytest.mark.parity
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize(
    ("num_layers", "bidirectional", "with_state", "batch_first"),
    [
        (layers, bi, with_state, True)
        for layers in (1, 2)
        for bi in (False, True)
        for with_state in (False, True)
    ]
    + [(1, False, False, False), (2, True, True, False)],  # time-major inputs too
)
def test_parity_with_torch_outputs_states_and_gradients(
    kind: str, num_layers: int, bidirectional: bool, with_state: bool, batch_first: bool
) -> None:
    torch.manual_seed(0)
    cls, extra = KINDS[kind]
    B, T, I, H = 3, 5, 4, 6
    ref = cls(I, H, num_layers, bidirectional=bidirectional, batch_first=batch_first, **extra)
    ours = from_torch(ref)
    assert type(ours).__name__ == cls.__name__
    x = torch.randn(*((B, T, I) if batch_first else (T, B, I)), requires_grad=True)
    rows = num_layers * (2 if bidirectional else 1)
    state = _initial_state(kind, rows, B, H) if with_state else None

    ref_out, ref_state = ref(x, state)
    our_out, our_state = ours(x, state)
    torch.testing.assert_close(our_out, ref_out, **TOL)
    for a, b in zip(_flat(our_state), _flat(ref_state), strict=True):
        assert a.shape == (rows, B, H)
        torch.testing.assert_close(a, b, **TOL)

    # A loss that touches the output and every final state; compare all gradients.
    weights = torch.randn_like(ref_out)
    inputs = [x] + (_flat(state) if state is not None else [])

    def grads(out: torch.Tensor, final: Any, module: nn.Module) -> list[torch.Tensor]:
        loss = (out * weights).sum() + sum(s.square().sum() for s in _flat(final))
        return list(torch.autograd.grad(loss, inputs + list(module.parameters())))

    ref_grads = grads(ref_out, ref_state, ref)
    our_grads = grads(our_out, our_state, ours)
    n = len(inputs)
    for a, b in zip(our_grads[:n], ref_grads[:n], strict=True):  # d/dx, d/dh0, d/dc0
        torch.testing.assert_close(a, b, **TOL)
    ref_param_grads = dict(zip([k for k, _ in ref.named_parameters()], ref_grads[n:], strict=True))
    our_param_grads = dict(zip([k for k, _ in ours.named_parameters()], our_grads[n:], strict=True))
    renamed = from_torch_state_dict(ref_param_grads)
    assert renamed.keys() == our_param_grads.keys()
    for key, value in renamed.items():
        torch.testing.assert_close(our_param_grads[key], value, **TOL)


@pytest.mark.parity
@pytest.mark.parametrize(
    ("ours_cls", "ref_cls"),
    [(RNNCell, nn.RNNCell), (GRUCell, nn.GRUCell), (LSTMCell, nn.LSTMCell)],
)
def test_cells_equal_torch_cells(ours_cls: type[nn.Module], ref_cls: type[nn.Module]) -> None:
    torch.manual_seed(0)
    ref = ref_cls(4, 6)
    ours = ours_cls(4, 6)
    ours.load_state_dict(ref.state_dict())  # same names and layout: no renaming needed
    x = torch.randn(3, 4)
    torch.testing.assert_close(ours(x), ref(x), **TOL)
    state = (torch.randn(3, 6), torch.randn(3, 6)) if ref_cls is nn.LSTMCell else torch.randn(3, 6)
    torch.testing.assert_close(ours(x, state), ref(x, state), **TOL)


@pytest.mark.parametrize("cls", [RNN, GRU, LSTM])
def test_state_dict_round_trips_through_torch_names(cls: type[RNN]) -> None:
    torch.manual_seed(0)
    ours = cls(4, 6, num_layers=2, bidirectional=True)
    sd = to_torch_state_dict(ours)
    assert "weight_ih_l1_reverse" in sd and "bias_hh_l0" in sd
    ref = {RNN: nn.RNN, GRU: nn.GRU, LSTM: nn.LSTM}[cls](
        4, 6, num_layers=2, bidirectional=True, batch_first=True
    )
    ref.load_state_dict(sd)  # strict: every key matches, with the same shapes
    x = torch.randn(2, 3, 4)
    torch.testing.assert_close(ours(x)[0], ref(x)[0], **TOL)


@pytest.mark.parametrize("cls", [RNN, GRU, LSTM])
def test_fused_kernel_equals_the_loop(cls: type[RNN]) -> None:
    torch.manual_seed(0)
    loop = cls(4, 6, num_layers=2, bidirectional=True)
    fused = cls(4, 6, num_layers=2, bidirectional=True, impl="fused")
    fused.load_state_dict(loop.state_dict())
    x = torch.randn(2, 5, 4, requires_grad=True)
    out_loop, _ = loop(x)
    out_fused, _ = fused(x)
    torch.testing.assert_close(out_fused, out_loop, **TOL)
    (g_loop,) = torch.autograd.grad(out_loop.sum(), x)
    (g_fused,) = torch.autograd.grad(out_fused.sum(), x)
    torch.testing.assert_close(g_fused, g_loop, **TOL)


def test_mask_keeps_the_state_over_padding() -> None:
    torch.manual_seed(0)
    lstm = LSTM(4, 6)
    x = torch.randn(1, 5, 4)
    padded = torch.cat([torch.randn(1, 2, 4), x], dim=1)  # two junk steps on the left
    mask = torch.tensor([[False, False, True, True, True, True, True]])
    out, (h, c) = lstm(padded, mask=mask)
    ref_out, (ref_h, ref_c) = lstm(x)
    torch.testing.assert_close(out[:, 2:], ref_out, **TOL)
    torch.testing.assert_close((h, c), (ref_h, ref_c), **TOL)


def test_right_padding_in_both_directions() -> None:
    torch.manual_seed(0)
    gru = GRU(4, 6, num_layers=2, bidirectional=True)
    x = torch.randn(1, 5, 4)
    padded = torch.cat([x, torch.randn(1, 3, 4)], dim=1)  # three junk steps on the right
    mask = torch.arange(8).unsqueeze(0) < 5  # (1, 8)
    out, h = gru(padded, mask=mask)
    ref_out, ref_h = gru(x)
    torch.testing.assert_close(out[:, :5], ref_out, **TOL)
    torch.testing.assert_close(h, ref_h, **TOL)


def test_dropout_between_layers_only_in_training() -> None:
    torch.manual_seed(0)
    lstm = LSTM(4, 6, num_layers=2, dropout=0.5)
    x = torch.randn(2, 3, 4)
    lstm.eval()
    assert torch.equal(lstm(x)[0], lstm(x)[0])
    lstm.train()
    assert not torch.equal(lstm(x)[0], lstm(x)[0])


def test_bad_input_gives_clear_errors() -> None:
    lstm = LSTM(4, 6, num_layers=2)
    with pytest.raises(ValueError, match=r"input_size 4 .* last dimension is 5"):
        lstm(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="3-D input"):
        lstm(torch.randn(3, 4))
    with pytest.raises(ValueError, match=r"\(num_layers \* num_directions, B, H\) = \(2, 2, 6\)"):
        lstm(torch.randn(2, 3, 4), (torch.zeros(1, 2, 6), torch.zeros(1, 2, 6)))
    with pytest.raises(ValueError, match=r"mask must have shape \(B, T\) = \(2, 3\)"):
        lstm(torch.randn(2, 3, 4), mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="pair"):
        lstm(torch.randn(2, 3, 4), torch.zeros(2, 2, 6))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="num_layers"):
        LSTM(4, 6, num_layers=0)
    with pytest.raises(ConfigError, match="dropout"):
        GRU(4, 6, dropout=1.0)
    with pytest.raises(ConfigError, match="nonlinearity"):
        RNN(4, 6, nonlinearity="sigmoid")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="nonlinearity is an option of RNN, not of LSTM"):
        LSTM(4, 6, nonlinearity="relu")
    with pytest.raises(ConfigError, match="impl"):
        RNN(4, 6, impl="cudnn")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="hidden_size"):
        LSTMCell(4, 0)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (dict(d_hidden=0), "d_hidden"),
        (dict(n_layers=-1), "n_layers"),
        (dict(dropout=1.5), "dropout"),
        (dict(rnn_impl="cudnn"), "rnn_impl"),
    ],
)
def test_bad_lstm_config_names_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        LSTMConfig.from_name("tiny", **overrides)
    with pytest.raises(UnknownNameError, match="did you mean 'tiny'"):
        LSTMConfig.from_name("tin")


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("d_hidden", [64, 48])
def test_lstm_lm_shapes_and_parameter_count(tie: bool, d_hidden: int) -> None:
    config = LSTMConfig.from_name("tiny", d_hidden=d_hidden, tie_embeddings=tie)
    model = build_model(config)
    assert isinstance(model, LSTMLM)
    assert model(torch.randint(0, 512, (2, 7))).shape == (2, 7, 512)
    assert (model.lm_head.weight is model.wte.weight) == tie
    assert model.num_parameters() == info(config)["parameters"]["total"]
    H, d, V = d_hidden, 64, 512
    lstm = 4 * H * (d + H) + 8 * H + 4 * H * (H + H) + 8 * H
    assert info(config)["parameters"]["lstm"] == lstm
    assert model.num_parameters(exclude_embeddings=True) == model.num_parameters() - V * d


def test_lstm_lm_loss_falls_when_overfitting_one_batch() -> None:
    torch.manual_seed(0)
    model = LSTMLM(LSTMConfig.from_name("tiny", vocab_size=32, d_model=32, d_hidden=32))
    idx = torch.randint(0, 32, (2, 17))
    x, y = idx[:, :-1], idx[:, 1:]
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    losses = []
    for _ in range(60):
        loss = nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 3.0  # about ln 32 = 3.47 at the start
    assert losses[-1] < 0.5 * losses[0]


def test_lstm_lm_loop_and_fused_agree() -> None:
    torch.manual_seed(0)
    fused = LSTMLM(LSTMConfig.from_name("tiny"))
    loop = LSTMLM(LSTMConfig.from_name("tiny", rnn_impl="loop"))
    loop.load_state_dict(fused.state_dict())
    idx = torch.randint(0, 512, (2, 9))
    torch.testing.assert_close(loop(idx), fused(idx), **TOL)


def test_lstm_lm_cached_decoding_equals_uncached() -> None:
    from groundwork.generate import GenerationConfig, generate

    torch.manual_seed(0)
    model = LSTMLM(LSTMConfig.from_name("tiny")).eval()
    idx = torch.randint(0, 512, (2, 9))
    full = model(idx)
    cache = model.new_kv_cache(2)
    first = model(idx[:, :5], kv_cache=cache)
    rest = [model(idx[:, t : t + 1], kv_cache=cache) for t in range(5, 9)]
    torch.testing.assert_close(torch.cat([first, *rest], dim=1), full, **TOL)
    assert cache.seq_len == 9
    with pytest.raises(ConfigError, match="cannot be rewound"):
        cache.seq_len = 4

    # Through the decoding loop: prompts of different lengths (left padding), greedy.
    prompts = [[1, 2, 3, 4], [5, 6]]
    greedy = GenerationConfig(max_new_tokens=6, temperature=0.0)
    cached = generate(model, prompts, greedy).sequences
    uncached = generate(model, prompts, greedy, use_cache=False).sequences
    alone = [generate(model, [p], greedy).sequences[0] for p in prompts]
    assert cached == uncached == alone


def test_lstm_lm_beam_search_with_the_state_equals_without() -> None:
    from groundwork.generate import GenerationConfig, beam_search

    torch.manual_seed(0)
    model = LSTMLM(LSTMConfig.from_name("tiny")).eval()
    config = GenerationConfig(max_new_tokens=5, num_beams=3, num_return_sequences=3)
    cached = beam_search(model, [1, 2, 3], config)  # type: ignore[arg-type]
    uncached = beam_search(model, [1, 2, 3], config, use_cache=False)  # type: ignore[arg-type]
    assert [ids for ids, _ in cached] == [ids for ids, _ in uncached]
    for (_, a), (_, b) in zip(cached, uncached, strict=True):
        assert a == pytest.approx(b, abs=1e-4)
