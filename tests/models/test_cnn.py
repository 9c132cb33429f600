"""TextCNN: config validation, shapes, a hand loop of Kim's max-over-time pooling, and padding
that never changes the logits."""

import pytest
import torch
import torch.nn.functional as F

from groundwork.errors import ConfigError
from groundwork.models.cnn import TextCNN, TextCNNConfig


def tiny(**overrides: object) -> TextCNN:
    torch.manual_seed(0)
    fields = dict(vocab_size=30, d_embed=8, n_filters=5, kernel_sizes=(1, 3, 5), num_classes=3)
    return TextCNN(TextCNNConfig(**{**fields, **overrides})).eval()


def padded(seqs: list[list[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(s) for s in seqs])
    ids = torch.full((len(seqs), int(lengths.max())), pad_id)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
    return ids, lengths


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (dict(vocab_size=0), "vocab_size"),
        (dict(num_classes=0), "num_classes"),
        (dict(d_embed=-1), "d_embed"),
        (dict(n_filters=0), "n_filters"),
        (dict(kernel_sizes=()), "kernel_sizes"),
        (dict(kernel_sizes=(3, 0)), "kernel_sizes"),
        (dict(dropout=1.0), "dropout"),
        (dict(pad_id=30), "pad_id"),
    ],
)
def test_bad_config_names_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        TextCNNConfig(**{"vocab_size": 30, **overrides})


def test_shapes_and_parameter_count() -> None:
    model = tiny()
    ids = torch.randint(1, 30, (4, 9))
    assert model(ids).shape == (4, 3)
    assert model.features(ids).shape == (4, 5 * 3)
    V, D, F_, C = 30, 8, 5, 3
    convs = sum(F_ * D * k + F_ for k in (1, 3, 5))
    assert model.num_parameters() == V * D + convs + (3 * F_) * C + C


def test_features_equal_a_hand_loop_over_windows() -> None:
    """c_hat = max over every window of ReLU(w . x_window + b), zero vectors beyond the text."""
    model = tiny()
    text = [4, 7, 1, 9]  # shorter than the widest filter (5): wide convolution still has windows
    x = model.embed(torch.tensor(text))  # (L, D)
    expected = []
    for k, conv in zip(model.config.kernel_sizes, model.convs, strict=True):
        padded_x = F.pad(x, (0, 0, k - 1, k - 1))  # (L + 2k - 2, D)
        windows = [padded_x[j : j + k] for j in range(len(text) + k - 1)]  # each (k, D)
        scores = torch.stack(
            [
                torch.relu((conv.weight * w.T[None]).sum(dim=(1, 2)) + conv.bias)  # (F,)
                for w in windows
            ]
        )  # (windows, F)
        expected.append(scores.max(dim=0).values)
    got = model.features(torch.tensor([text]))[0]
    torch.testing.assert_close(got, torch.cat(expected), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pad_id", [0, 3])
def test_padded_batch_gives_the_logits_of_each_text_alone(pad_id: int) -> None:
    model = tiny(pad_id=pad_id)
    with torch.no_grad():  # large biases: a window of pure padding would win the max if counted
        for conv in model.convs:
            conv.bias.fill_(5.0)
    texts = [[5], [6, 7], [8, 9, 10, 11, 12, 13, 14], [15, 16, 17]]
    ids, lengths = padded(texts, pad_id)
    alone = torch.cat([model(torch.tensor([t])) for t in texts])
    torch.testing.assert_close(model(ids, lengths), alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model(ids), alone, rtol=1e-5, atol=1e-5)  # lengths from pad_id


def test_padding_embedding_is_ignored_even_if_nonzero() -> None:
    model = tiny()
    ids, lengths = padded([[5, 6], [7, 8, 9, 10]])
    before = model(ids, lengths)
    with torch.no_grad():
        model.embed.weight[0].fill_(3.0)
    torch.testing.assert_close(model(ids, lengths), before, rtol=1e-6, atol=1e-6)


def test_bad_batches_raise() -> None:
    model = tiny()
    with pytest.raises(ValueError, match="shape \\(batch, time\\)"):
        model(torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="length must be in \\[1, 3\\]"):
        model(torch.tensor([[1, 2, 3], [0, 0, 0]]))  # an all-padding row has length 0
    with pytest.raises(ValueError, match="length must be in"):
        model(torch.tensor([[1, 2, 3]]), torch.tensor([4]))
    with pytest.raises(ValueError, match="lengths must have shape"):
        model(torch.tensor([[1, 2, 3]]), torch.tensor([3, 3]))
