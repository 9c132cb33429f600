"""BiLSTMClassifier: config validation, shapes, padding that never changes the logits, and parity
with ``torch.nn.LSTM`` over packed sequences."""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from groundwork.errors import ConfigError
from groundwork.models.rnn import to_torch_state_dict
from groundwork.models.rnn_classifier import BiLSTMClassifier, BiLSTMClassifierConfig


def tiny(**overrides: object) -> BiLSTMClassifier:
    torch.manual_seed(0)
    fields = dict(vocab_size=30, d_embed=6, hidden_size=5, num_classes=3)
    return BiLSTMClassifier(BiLSTMClassifierConfig(**{**fields, **overrides})).eval()


TEXTS = [[5], [6, 7], [8, 9, 10, 11, 12, 13, 14], [15, 16, 17]]


def padded(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(s) for s in seqs])
    ids = torch.zeros(len(seqs), int(lengths.max()), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
    return ids, lengths


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (dict(vocab_size=0), "vocab_size"),
        (dict(hidden_size=0), "hidden_size"),
        (dict(num_layers=0), "num_layers"),
        (dict(d_embed=0), "d_embed"),
        (dict(pooling="mean"), "pooling"),
        (dict(dropout=-0.1), "dropout"),
        (dict(pad_id=-1), "pad_id"),
    ],
)
def test_bad_config_names_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        BiLSTMClassifierConfig(**{"vocab_size": 30, **overrides})


@pytest.mark.parametrize("pooling", ["last", "max"])
def test_shapes(pooling: str) -> None:
    model = tiny(pooling=pooling, num_layers=2)
    ids = torch.randint(1, 30, (4, 9))
    assert model(ids).shape == (4, 3)
    assert model.features(ids).shape == (4, 10)
    assert model.encode(ids, torch.full((4,), 9)).shape == (4, 9, 10)


@pytest.mark.parametrize(("pooling", "num_layers"), [("last", 1), ("last", 2), ("max", 2)])
def test_padded_batch_gives_the_logits_of_each_text_alone(pooling: str, num_layers: int) -> None:
    model = tiny(pooling=pooling, num_layers=num_layers)
    ids, lengths = padded(TEXTS)
    alone = torch.cat([model(torch.tensor([t])) for t in TEXTS])
    torch.testing.assert_close(model(ids, lengths), alone, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # whatever the padding embeds to, it is never read
        model.embed.weight[0].fill_(2.0)
    torch.testing.assert_close(model(ids, lengths), alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parity
@pytest.mark.parametrize("num_layers", [1, 2])
def test_last_states_equal_torch_lstm_on_packed_sequences(num_layers: int) -> None:
    """The "last" summary is (h_n forward, h_n backward) of torch's LSTM over packed sequences."""
    model = tiny(num_layers=num_layers, pooling="last")
    reference = torch.nn.LSTM(6, 5, num_layers, bidirectional=True, batch_first=True).eval()
    reference.load_state_dict(to_torch_state_dict(model.lstm))
    ids, lengths = padded(TEXTS)
    packed = pack_padded_sequence(model.embed(ids), lengths, batch_first=True, enforce_sorted=False)
    out, (h_n, _) = reference(packed)
    expected = torch.cat([h_n[-2], h_n[-1]], dim=-1)  # last layer: forward, backward
    torch.testing.assert_close(model.features(ids, lengths), expected, rtol=1e-5, atol=1e-5)
    out, _ = pad_packed_sequence(out, batch_first=True)  # (B, T, 2H), zeros at padding
    real = (torch.arange(ids.shape[1])[None] < lengths[:, None])[..., None]
    torch.testing.assert_close(model.encode(ids, lengths) * real, out * real, rtol=1e-5, atol=1e-5)


def test_bad_batches_raise() -> None:
    model = tiny()
    with pytest.raises(ValueError, match="shape \\(batch, time\\)"):
        model(torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="length must be in"):
        model(torch.tensor([[1, 2], [0, 0]]))
