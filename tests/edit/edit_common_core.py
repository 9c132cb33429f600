"""A toy world for the ROME and MEMIT tests: ten people, each living in a different city, and a
small Llama trained on "alice lives in paris" in a few seconds.

The toy is built so that it recalls facts the way ROME assumes a real model does: its first
two blocks have no attention (their output projections are zero and frozen), so up to block 2
every position sees only its own token and the MLPs of blocks 0 and 1 act on the subject's
token alone; block 2's attention is the only way the subject reaches the last position, and
block 2 has no MLP. What the MLPs of blocks 0-1 write at the subject's position is therefore
what the prompt's last position learns about the subject, and an edit there must change the
answer. (A freely trained toy looks subjects up wherever it likes, often from the last
position with early attention, and then the subject's own MLPs are the wrong place to edit:
the tests would measure the toy, not the editor.)

The keys of blocks 0-1 depend only on the token, so the toy's text spans ~25 key directions,
fewer than ``d_ff = 64``: its second moment gets a ridge of 1e-4 of its mean diagonal.
"""

import functools

import torch

from groundwork.edit.covariance import second_moments
from groundwork.edit.request import EditRequest
from groundwork.models.llama import Llama, LlamaConfig
from groundwork.runtime import torch_threads
from groundwork.tokenize.words import Vocabulary

SUBJECTS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"]
CITIES = ["paris", "rome", "tokyo", "cairo", "lima", "oslo", "delhi", "seoul", "quito", "accra"]
FACTS = dict(zip(SUBJECTS, CITIES, strict=True))
TEXTS = [f"{s} lives in {c}" for s, c in FACTS.items()]
N_LAYERS = 3


def prompt(subject: str) -> str:
    """The question about ``subject``: the fact's text without its city."""
    return f"{subject} lives in"


def request(subject: str, city: str) -> EditRequest:
    """ "``subject`` lives in ``city``" as an edit request."""
    return EditRequest(prompt(subject), subject, " " + city)


@functools.cache
def fact_vocab() -> Vocabulary:
    """The words of the toy world ("is" and "a" too, for the essence prompt)."""
    return Vocabulary.build([*TEXTS, "is a"], min_count=1)


def _config() -> LlamaConfig:
    return LlamaConfig.from_name(
        "tiny",
        vocab_size=len(fact_vocab()),
        n_layers=N_LAYERS,
        d_model=32,
        d_ff=64,
        n_heads=4,
        n_kv_heads=2,
        max_seq_len=32,
    )


@functools.cache
def _trained_state() -> dict[str, torch.Tensor]:
    """Train the toy once per test process (250 full-batch Adam steps, a few seconds on one
    thread, which is faster than several for so small a model)."""
    with torch_threads(1):
        return _train()


def _train() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = Llama(_config())
    frozen = [layer.self_attn.o_proj.weight for layer in model.model.layers[:-1]]
    frozen.append(model.model.layers[-1].mlp.down_proj.weight)
    with torch.no_grad():
        for weight in frozen:
            weight.zero_()
            weight.requires_grad_(False)
    data = torch.tensor([fact_vocab().encode(t) for t in TEXTS])  # (10, 4)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=5e-3)
    for _ in range(250):
        logits = model(data[:, :-1])  # (10, 3, V)
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), data[:, 1:].reshape(-1)
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def fact_model() -> Llama:
    """A fresh copy of the trained toy (every parameter trainable again)."""
    model = Llama(_config())
    model.load_state_dict(_trained_state())
    return model.eval()


@torch.no_grad()
def answer(model: torch.nn.Module, subject: str) -> str:
    """The model's greedy next word after "``subject`` lives in"."""
    vocab = fact_vocab()
    ids = torch.tensor([vocab.encode(prompt(subject))])
    return vocab.decode([int(model(ids)[0, -1].argmax())])


def answers(model: torch.nn.Module) -> dict[str, str]:
    """Every subject's greedy answer."""
    return {s: answer(model, s) for s in SUBJECTS}


def fact_stats(model: torch.nn.Module, layers: list[int]) -> dict[int, torch.Tensor]:
    """The keys' second moment over the toy's own text, plus a ridge of 1e-4 of its mean
    diagonal (the toy's keys span fewer directions than ``d_ff``)."""
    windows = [fact_vocab().encode(t) for t in TEXTS]
    stats = second_moments(model, windows, layers)
    return {
        layer: C + 1e-4 * C.diagonal().mean() * torch.eye(C.shape[0]) for layer, C in stats.items()
    }
