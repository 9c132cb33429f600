r"""Recurrent networks from their equations: RNN, GRU and LSTM cells and stacks; an LSTM LM.

Read top to bottom: the three cells (one time step each, the equations as comments next to the
lines), the layer loop that runs a cell over a sequence, the multi-layer and bidirectional
wrappers (``RNN``, ``GRU``, ``LSTM``, called like ``torch.nn.RNN/GRU/LSTM`` with the same shapes in
and out), then ``LSTMLM``, a language model with the calling convention of
:class:`groundwork.models.gpt.GPT`, so the training loop, perplexity evaluation and decoding use it
unchanged.

Weights follow PyTorch's layout (gates stacked in one matrix, in the order ``i, f, g, o`` for the
LSTM and ``r, z, n`` for the GRU; two bias vectors ``b_ih``, ``b_hh``), so a state dict moves
between ``torch.nn.LSTM`` and :class:`LSTM` with :func:`to_torch_state_dict` /
:func:`from_torch_state_dict` (a renaming of keys: ``weight_ih_l1_reverse`` is
``cells.l1_reverse.weight_ih`` here).

References:
    * Elman 1990, "Finding Structure in Time" (the simple recurrent network).
    * Hochreiter & Schmidhuber 1997, "Long Short-Term Memory"; Gers, Schmidhuber & Cummins 2000,
      "Learning to Forget: Continual Prediction with LSTM" (the forget gate).
    * Cho et al. 2014, "Learning Phrase Representations using RNN Encoder-Decoder for
      Statistical Machine Translation" (the GRU).
    * Schuster & Paliwal 1997, "Bidirectional Recurrent Neural Networks".
    * Bengio, Simard & Frasconi 1994, "Learning Long-Term Dependencies with Gradient Descent is
      Difficult"; Pascanu, Mikolov & Bengio 2013, "On the difficulty of training recurrent
      neural networks" (vanishing/exploding gradients, gradient clipping).
    * Zaremba, Sutskever & Vinyals 2014, "Recurrent Neural Network Regularization" (dropout
      between layers only); Jozefowicz, Zaremba & Sutskever 2015, "An Empirical Exploration of
      Recurrent Network Architectures" (forget-gate bias 1); Press & Wolf 2017, "Using the Output
      Embedding to Improve Language Models" (tied embeddings).

This module is long because chapter 4 reads it top to bottom as one derivation: the three cells,
the loop that runs them, the stacked and bidirectional wrappers, and the language model built on
them, each step using the one before.

Chapter 4 (Recurrent and convolutional models) of the docs.
"""

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from groundwork.errors import ConfigError
from groundwork.models.config import check_choice, check_positive, preset

RecurrentImpl = Literal["loop", "fused"]
"""``"loop"``: the cells below, stepped in Python; ``"fused"``: PyTorch's kernel, same weights."""

State = tuple[torch.Tensor, ...]
"""The state a cell carries between steps: ``(h,)`` for RNN and GRU cells, ``(h, c)`` for LSTM."""


class _Cell(nn.Module):
    """Weights shared by the three cells: ``weight_ih (gates * H, I)``, ``weight_hh (gates * H, H)``
    and two biases, named and laid out as in ``torch.nn.RNNCell/GRUCell/LSTMCell``."""

    gates = 1
    state_size = 1

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True) -> None:
        super().__init__()
        if input_size < 1 or hidden_size < 1:
            raise ConfigError(
                f"input_size and hidden_size must be positive, got {input_size}, {hidden_size}"
            )
        self.input_size, self.hidden_size = input_size, hidden_size
        G = self.gates * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(G, input_size))
        self.weight_hh = nn.Parameter(torch.empty(G, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(G)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(G)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's initialisation: every weight uniform in $\\pm 1/\\sqrt{H}$."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def input_projection(self, x: torch.Tensor) -> torch.Tensor:
        """$W_{ih} x + b_{ih}$ for every gate: ``(..., I) -> (..., gates * H)``. It does not depend
        on the state, so a layer computes it for all time steps in one matrix multiply."""
        return F.linear(x, self.weight_ih, self.bias_ih)

    def step(self, gx: torch.Tensor, state: State) -> State:
        """One time step from the precomputed input projection ``gx (B, gates * H)``."""
        raise NotImplementedError

    def zero_state(self, batch: int, like: torch.Tensor) -> State:
        """The all-zero state for ``batch`` sequences, on ``like``'s device and dtype."""
        zeros = like.new_zeros(batch, self.hidden_size)
        return (zeros,) * self.state_size


# --8<-- [start:rnn_cell]
class RNNCell(_Cell):
    r"""Elman's simple recurrent cell: $h_t = \tanh(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh})$.

    Args:
        input_size: Size $I$ of each input vector.
        hidden_size: Size $H$ of the hidden state.
        bias: Learn the biases $b_{ih}, b_{hh}$.
        nonlinearity: ``"tanh"`` or ``"relu"``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: Literal["tanh", "relu"] = "tanh",
    ) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ConfigError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, bias)
        self.nonlinearity = nonlinearity

    def step(self, gx: torch.Tensor, state: State) -> State:
        (h,) = state
        pre = gx + F.linear(
            h, self.weight_hh, self.bias_hh
        )  # W_ih x_t + b_ih + W_hh h_{t-1} + b_hh
        return (torch.tanh(pre) if self.nonlinearity == "tanh" else torch.relu(pre),)  # h_t

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        """One step: input ``x (B, I)`` and state ``h (B, H)`` (zeros if None) -> ``h_t (B, H)``."""
        state = (h,) if h is not None else self.zero_state(x.shape[0], x)
        return self.step(self.input_projection(x), state)[0]


# --8<-- [end:rnn_cell]


# --8<-- [start:gru_cell]
class GRUCell(_Cell):
    r"""Gated recurrent unit (Cho et al. 2014), gates stacked in the order reset, update, new.

    Args:
        input_size: Size $I$ of each input vector.
        hidden_size: Size $H$ of the hidden state.
        bias: Learn the biases.
    """

    gates = 3

    def step(self, gx: torch.Tensor, state: State) -> State:
        (h,) = state
        gh = F.linear(h, self.weight_hh, self.bias_hh)  # (B, 3H): W_h{r,z,n} h_{t-1} + b_h{r,z,n}
        x_r, x_z, x_n = gx.chunk(3, dim=-1)  # each (B, H)
        h_r, h_z, h_n = gh.chunk(3, dim=-1)  # each (B, H)
        r = torch.sigmoid(x_r + h_r)  # r_t = σ(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
        z = torch.sigmoid(x_z + h_z)  # z_t = σ(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
        n = torch.tanh(x_n + r * h_n)  # n_t = tanh(W_in x_t + b_in + r_t ⊙ (W_hn h_{t-1} + b_hn))
        return ((1 - z) * n + z * h,)  # h_t = (1 - z_t) ⊙ n_t + z_t ⊙ h_{t-1}

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        """One step: input ``x (B, I)`` and state ``h (B, H)`` (zeros if None) -> ``h_t (B, H)``."""
        state = (h,) if h is not None else self.zero_state(x.shape[0], x)
        return self.step(self.input_projection(x), state)[0]


# --8<-- [end:gru_cell]


# --8<-- [start:lstm_cell]
class LSTMCell(_Cell):
    r"""LSTM cell with a forget gate; gates stacked as input, forget, cell (candidate), output.

    Args:
        input_size: Size $I$ of each input vector.
        hidden_size: Size $H$ of the hidden and cell states.
        bias: Learn the biases.
    """

    gates = 4
    state_size = 2

    def step(self, gx: torch.Tensor, state: State) -> State:
        h, c = state
        z = gx + F.linear(h, self.weight_hh, self.bias_hh)  # (B, 4H): W_ih x_t + W_hh h_{t-1} + b
        z_i, z_f, z_g, z_o = z.chunk(4, dim=-1)  # each (B, H)
        i = torch.sigmoid(z_i)  # i_t = σ(W_ii x_t + W_hi h_{t-1} + b_i)   input gate
        f = torch.sigmoid(z_f)  # f_t = σ(W_if x_t + W_hf h_{t-1} + b_f)   forget gate
        g = torch.tanh(z_g)  # g_t = tanh(W_ig x_t + W_hg h_{t-1} + b_g)    candidate cell
        o = torch.sigmoid(z_o)  # o_t = σ(W_io x_t + W_ho h_{t-1} + b_o)   output gate
        c = f * c + i * g  # c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t: the additive path
        h = o * torch.tanh(c)  # h_t = o_t ⊙ tanh(c_t)
        return h, c

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: ``x (B, I)``, ``(h, c)`` each ``(B, H)`` (zeros if None) -> ``(h_t, c_t)``."""
        s = state if state is not None else self.zero_state(x.shape[0], x)
        h, c = self.step(self.input_projection(x), s)
        return h, c


# --8<-- [end:lstm_cell]


# --8<-- [start:run_layer]
def run_layer(
    cell: _Cell,
    x: torch.Tensor,
    state: State,
    *,
    reverse: bool = False,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, State]:
    """Run ``cell`` over a sequence: backpropagation through time is autograd through this loop.

    Args:
        cell: The cell to apply at every step.
        x: Inputs ``(B, T, I)``.
        state: Initial state, each tensor ``(B, H)``.
        reverse: Run from ``t = T - 1`` down to 0 (the backward direction of a bidirectional RNN).
        mask: Optional ``(B, T)`` bool; where False the state is carried over unchanged (padding).

    Returns:
        Hidden states ``(B, T, H)`` (at their time positions also when ``reverse``), final state.
    """
    gx = cell.input_projection(x)  # (B, T, gates * H): the input half of every gate, at once
    T = x.shape[1]
    outputs: list[torch.Tensor] = [x.new_empty(0)] * T
    for t in reversed(range(T)) if reverse else range(T):
        new = cell.step(gx[:, t], state)  # each (B, H)
        if mask is not None:
            keep = mask[:, t].unsqueeze(-1)  # (B, 1)
            new = tuple(torch.where(keep, n, s) for n, s in zip(new, state, strict=True))
        state = new
        outputs[t] = state[0]
    return torch.stack(outputs, dim=1), state  # (B, T, H)


# --8<-- [end:run_layer]


class _Recurrent(nn.Module):
    """A stack of ``num_layers`` recurrent layers, each with one cell per direction."""

    cell_kind: str = "rnn"
    """Which cell every layer uses: "rnn", "gru" or "lstm"."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        batch_first: bool = True,
        dropout: float = 0.0,
        bias: bool = True,
        impl: RecurrentImpl = "loop",
        *,
        nonlinearity: Literal["tanh", "relu"] = "tanh",
    ) -> None:
        super().__init__()
        if self.cell_kind != "rnn" and nonlinearity != "tanh":
            raise ConfigError(f"nonlinearity is an option of RNN, not of {type(self).__name__}")
        if impl not in ("loop", "fused"):
            raise ConfigError(f"impl must be 'loop' or 'fused', got {impl!r}")
        if num_layers < 1:
            raise ConfigError(f"num_layers must be a positive integer, got {num_layers}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout!r}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bidirectional, self.batch_first, self.dropout = bidirectional, batch_first, dropout
        self.num_directions = 2 if bidirectional else 1
        self.impl, self.bias, self.nonlinearity = impl, bias, nonlinearity
        self.cells = nn.ModuleDict()
        for layer in range(num_layers):
            size = input_size if layer == 0 else hidden_size * self.num_directions
            for suffix in ("", "_reverse")[: self.num_directions]:
                self.cells[f"l{layer}{suffix}"] = self._make_cell(size, bias, nonlinearity)

    def _make_cell(self, size: int, bias: bool, nonlinearity: Literal["tanh", "relu"]) -> _Cell:
        if self.cell_kind == "rnn":
            return RNNCell(size, self.hidden_size, bias, nonlinearity)
        return {"gru": GRUCell, "lstm": LSTMCell}[self.cell_kind](size, self.hidden_size, bias)

    def _check(self, x: torch.Tensor, state: State | None, mask: torch.Tensor | None) -> None:
        name = type(self).__name__
        if x.dim() != 3:
            layout = "(B, T, I)" if self.batch_first else "(T, B, I)"
            raise ValueError(f"{name} expects a 3-D input {layout}, got shape {tuple(x.shape)}")
        if x.shape[-1] != self.input_size:
            raise ValueError(
                f"{name} was built for input_size {self.input_size} but the input's last "
                f"dimension is {x.shape[-1]} (shape {tuple(x.shape)})"
            )
        B, T = (x.shape[0], x.shape[1]) if self.batch_first else (x.shape[1], x.shape[0])
        if mask is not None and tuple(mask.shape) != (B, T):
            raise ValueError(
                f"{name} mask must have shape (B, T) = {(B, T)}, got {tuple(mask.shape)}"
            )
        if state is None:
            return
        expected = (self.num_layers * self.num_directions, B, self.hidden_size)
        for s in state:
            if tuple(s.shape) != expected:
                raise ValueError(
                    f"{name} initial state must have shape (num_layers * num_directions, B, H) "
                    f"= {expected}, got {tuple(s.shape)}"
                )

    def _forward(
        self, x: torch.Tensor, state: State | None, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, State]:
        self._check(x, state, mask)
        if mask is not None:
            mask = mask.to(device=x.device, dtype=torch.bool)
        if self.impl == "fused" and mask is None:
            return self._fused(x, state)
        if not self.batch_first:
            x = x.transpose(0, 1)  # (B, T, I)
        B = x.shape[0]
        finals: list[State] = []
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout > 0 and self.training:
                x = F.dropout(x, self.dropout, training=True)  # between layers, not after the last
            outputs = []
            for d, suffix in enumerate(("", "_reverse")[: self.num_directions]):
                cell: _Cell = self.cells[f"l{layer}{suffix}"]  # type: ignore[assignment]
                k = layer * self.num_directions + d  # this cell's row in h_0 / h_n
                s0 = cell.zero_state(B, x) if state is None else tuple(s[k] for s in state)
                out, final = run_layer(cell, x, s0, reverse=d == 1, mask=mask)
                outputs.append(out)
                finals.append(final)
            x = torch.cat(outputs, dim=-1)  # (B, T, num_directions * H)
        stacked = tuple(torch.stack(parts) for parts in zip(*finals, strict=True))  # (L*D, B, H)
        return (x if self.batch_first else x.transpose(0, 1)), stacked

    def _fused(self, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        """The same computation in PyTorch's fused kernel (the one ``torch.nn.LSTM`` calls),
        reading this module's own parameters: several times faster than the Python loop."""
        B = x.shape[0] if self.batch_first else x.shape[1]
        if state is None:
            zeros = x.new_zeros(self.num_layers * self.num_directions, B, self.hidden_size)
            state = (zeros,) * (2 if self.cell_kind == "lstm" else 1)
        flat: list[torch.Tensor] = [
            p
            for name in self.cells
            for p in self.cells[name].parameters()  # weight_ih, weight_hh, bias_ih, bias_hh
        ]
        flags = (self.bias, self.num_layers, self.dropout, self.training, self.bidirectional)
        if self.cell_kind == "lstm":
            out, h_n, c_n = torch.lstm(x, state, flat, *flags, self.batch_first)
            return out, (h_n, c_n)
        kernel = {"gru": torch.gru, "tanh": torch.rnn_tanh, "relu": torch.rnn_relu}[
            "gru" if self.cell_kind == "gru" else self.nonlinearity
        ]
        out, h_n = kernel(x, state[0], flat, *flags, self.batch_first)
        return out, (h_n,)


class RNN(_Recurrent):
    """A multi-layer, optionally bidirectional Elman RNN, called like ``torch.nn.RNN``.

    Args:
        input_size: Size of each input vector.
        hidden_size: Size of the hidden state.
        num_layers: Stacked layers; layer ``k > 0`` reads the outputs of layer ``k - 1``.
        bidirectional: Add a second cell per layer that reads the sequence backwards; the
            outputs of both directions are concatenated.
        batch_first: Inputs and outputs are ``(B, T, .)`` (``False``: ``(T, B, .)``).
        dropout: Dropout on the outputs of every layer except the last (training only).
        bias: Learn biases.
        nonlinearity: ``"tanh"`` or ``"relu"``.
        impl: ``"loop"`` (the cells of this file) or ``"fused"`` (PyTorch's kernel on the same
            weights; a ``mask`` always takes the loop).
    """

    cell_kind = "rnn"

    def forward(
        self,
        x: torch.Tensor,
        state: torch.Tensor | None = None,
        *,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the stack over ``x``.

        Args:
            x: ``(B, T, input_size)`` (``(T, B, input_size)`` unless ``batch_first``).
            state: ``h_0 (num_layers * num_directions, B, H)``; zeros if None.
            mask: Optional ``(B, T)`` bool; the state does not change where it is False.

        Returns:
            ``output (B, T, num_directions * H)`` and ``h_n (num_layers * num_directions, B, H)``.
        """
        out, (h_n,) = self._forward(x, None if state is None else (state,), mask)
        return out, h_n


class GRU(RNN):
    """A multi-layer, optionally bidirectional GRU, called like ``torch.nn.GRU``; arguments as in
    :class:`RNN` (without ``nonlinearity``)."""

    cell_kind = "gru"


# --8<-- [start:lstm]
class LSTM(_Recurrent):
    """A multi-layer, optionally bidirectional LSTM, called like ``torch.nn.LSTM``; arguments as in
    :class:`RNN` (without ``nonlinearity``)."""

    cell_kind = "lstm"

    def forward(
        self,
        x: torch.Tensor,
        state: tuple[torch.Tensor, torch.Tensor] | None = None,
        *,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Run the stack over ``x``.

        Args:
            x: ``(B, T, input_size)`` (``(T, B, input_size)`` unless ``batch_first``).
            state: ``(h_0, c_0)``, each ``(num_layers * num_directions, B, H)``; zeros if None.
            mask: Optional ``(B, T)`` bool; the state does not change where it is False, so
                right or left padding does not reach the final states (each direction's final
                state is the one after the last real token), and padded positions output the
                carried-over state.

        Returns:
            ``output (B, T, num_directions * H)`` and ``(h_n, c_n)``, each
            ``(num_layers * num_directions, B, H)``.
        """
        if state is not None and (not isinstance(state, tuple | list) or len(state) != 2):
            raise ValueError("LSTM state must be a pair (h_0, c_0)")
        out, (h_n, c_n) = self._forward(x, None if state is None else tuple(state), mask)
        return out, (h_n, c_n)


# --8<-- [end:lstm]


# --8<-- [start:torch_state_dict]
def to_torch_state_dict(module: _Recurrent) -> dict[str, torch.Tensor]:
    """The state dict of ``module`` under ``torch.nn.RNN/GRU/LSTM``'s key names.

    ``cells.l1_reverse.weight_ih`` becomes ``weight_ih_l1_reverse``; the tensors are the same.
    """
    out = {}
    for key, value in module.state_dict().items():
        _, cell_name, param = key.split(".")  # "cells", "l1_reverse", "weight_ih"
        out[f"{param}_{cell_name}"] = value
    return out


def from_torch_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ``torch.nn.RNN/GRU/LSTM`` state dict renamed for :class:`RNN`/:class:`GRU`/:class:`LSTM`:
    ``weight_ih_l1_reverse`` becomes ``cells.l1_reverse.weight_ih``."""
    out = {}
    for key, value in state_dict.items():
        kind, which, rest = key.split("_", 2)  # "weight", "ih", "l1_reverse"
        out[f"cells.{rest}.{kind}_{which}"] = value
    return out


def from_torch(module: nn.RNN | nn.GRU | nn.LSTM) -> "RNN | GRU | LSTM":
    """A copy of a ``torch.nn.RNN``/``GRU``/``LSTM`` as our module, with the same weights."""
    if getattr(module, "proj_size", 0):
        raise ConfigError("LSTMs with proj_size > 0 are not supported")
    args: dict[str, Any] = dict(
        input_size=module.input_size,
        hidden_size=module.hidden_size,
        num_layers=module.num_layers,
        bidirectional=module.bidirectional,
        batch_first=module.batch_first,
        dropout=module.dropout,
        bias=module.bias,
    )
    ours: RNN | GRU | LSTM
    if isinstance(module, nn.LSTM):
        ours = LSTM(**args)
    elif isinstance(module, nn.GRU):
        ours = GRU(**args)
    elif isinstance(module, nn.RNN):
        ours = RNN(**args, nonlinearity=module.nonlinearity)
    else:
        raise ConfigError(f"expected torch.nn.RNN, GRU or LSTM, got {type(module).__name__}")
    ours.load_state_dict(from_torch_state_dict(module.state_dict()))
    p = next(module.parameters())
    return ours.to(device=p.device, dtype=p.dtype)


# --8<-- [end:torch_state_dict]


@dataclass(kw_only=True)
class LSTMConfig:
    """Shape and options of an LSTM language model."""

    vocab_size: int = 4096
    """Number of token ids."""
    max_seq_len: int = 128
    """Context length tools assume (training windows, perplexity windows, decoding budget); the
    recurrence itself accepts any length."""
    d_model: int = 128
    """Size of the token embeddings."""
    d_hidden: int = 256
    """Size of the LSTM hidden and cell states."""
    n_layers: int = 2
    """Stacked LSTM layers."""
    dropout: float = 0.0
    """Dropout on embeddings, between LSTM layers and before the output head (training only)."""
    tie_embeddings: bool = True
    """Share the embedding matrix with the output head (Press & Wolf 2017); when ``d_hidden !=
    d_model`` a linear projection maps the hidden state down to ``d_model`` first."""
    rnn_impl: RecurrentImpl = "fused"
    """``"fused"`` (PyTorch's LSTM kernel) or ``"loop"`` (the cells of this file, stepped in
    Python); the same weights and, to rounding, the same results."""

    def __post_init__(self) -> None:
        check_positive(self, "vocab_size", "max_seq_len", "d_model", "d_hidden", "n_layers")
        check_choice(self, "rnn_impl", ["loop", "fused"])
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> "LSTMConfig":
        """A named preset (``"tiny"``, ``"shakespeare"``), optionally with fields overridden."""
        return cls(**{**preset(LSTM_PRESETS, name, "LSTM"), **overrides})


LSTM_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(vocab_size=512, max_seq_len=128, d_model=64, d_hidden=64, n_layers=2),
    "shakespeare": dict(vocab_size=2048, max_seq_len=128, d_model=200, d_hidden=200, n_layers=2),
}
"""Named configs: a CPU-sized one for tests, and one about as large as the Shakespeare GPT."""


class RecurrentState:
    """The LSTM LM's "cache" for decoding: the state ``(h, c)`` after the tokens seen so far.

    Decoding code written for a transformer's KV cache passes it back on every call; unlike a KV
    cache it has a fixed size whatever the length, and it cannot be rewound (speculative decoding
    is refused). ``k`` and ``v`` name ``h`` and ``c``, each ``(n_layers, B, H)``, with the batch on
    dimension 1 as in a KV cache, so code that reorders a cache's rows (beam search) reorders the
    recurrent state too.

    Args:
        batch: Number of sequences decoded together.
    """

    def __init__(self, batch: int) -> None:
        self.batch = batch
        self.state: tuple[torch.Tensor, torch.Tensor] | None = None
        self._seq_len = 0

    @property
    def k(self) -> torch.Tensor:
        """The hidden states ``h`` ``(n_layers, B, H)``."""
        if self.state is None:
            raise ConfigError("the recurrent state is empty: run the model on a prompt first")
        return self.state[0]

    @k.setter
    def k(self, value: torch.Tensor) -> None:
        assert self.state is not None
        self.state = (value, self.state[1])

    @property
    def v(self) -> torch.Tensor:
        """The cell states ``c`` ``(n_layers, B, H)``."""
        if self.state is None:
            raise ConfigError("the recurrent state is empty: run the model on a prompt first")
        return self.state[1]

    @v.setter
    def v(self, value: torch.Tensor) -> None:
        assert self.state is not None
        self.state = (self.state[0], value)

    @property
    def seq_len(self) -> int:
        """Number of tokens already read."""
        return self._seq_len

    @seq_len.setter
    def seq_len(self, value: int) -> None:
        if value < self._seq_len:
            raise ConfigError(
                "a recurrent state cannot be rewound (speculative decoding needs a "
                "transformer's KV cache); decode without it"
            )
        self._seq_len = value


# --8<-- [start:lstm_lm]
class LSTMLM(nn.Module):
    """An LSTM language model: embeddings, a stack of LSTM layers, output head.

    Called like :class:`~groundwork.models.gpt.GPT`: ``forward(idx) -> logits (B, T, V)``.

    Args:
        config: The model's shape and options.
    """

    def __init__(self, config: LSTMConfig) -> None:
        super().__init__()
        self.config = c = config
        self.wte = nn.Embedding(c.vocab_size, c.d_model)  # token embeddings (no positions needed:
        self.drop = nn.Dropout(c.dropout)  # the recurrence itself knows the order)
        self.lstm = LSTM(c.d_model, c.d_hidden, c.n_layers, dropout=c.dropout, impl=c.rnn_impl)
        tied_proj = c.tie_embeddings and c.d_hidden != c.d_model
        self.proj: nn.Module = nn.Linear(c.d_hidden, c.d_model) if tied_proj else nn.Identity()
        d_out = c.d_model if c.tie_embeddings else c.d_hidden
        self.lm_head = nn.Linear(d_out, c.vocab_size, bias=False)
        # Embeddings keep nn.Embedding's N(0, 1), not GPT-2's N(0, 0.02): with no LayerNorm, the
        # size of the inputs sets the size of the gates' pre-activations, and tiny inputs leave
        # the model stuck predicting unigram frequencies for hundreds of steps.
        nn.init.normal_(self.lm_head.weight, mean=0.0, std=0.02)  # replaced when tied
        if c.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        for cell in self.lstm.cells.values():  # forget-gate bias 1: remember by default
            H = c.d_hidden
            assert isinstance(cell, LSTMCell) and cell.bias_ih is not None
            with torch.no_grad():
                cell.bias_ih[H : 2 * H].fill_(1.0)
                cell.bias_hh[H : 2 * H].zero_()  # type: ignore[index]

    def forward(
        self,
        idx: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        kv_cache: RecurrentState | None = None,
    ) -> torch.Tensor:
        """Next-token logits for every position.

        Args:
            idx: Token ids ``(B, T)``.
            attention_mask: ``(B, T_k)`` with 1 for tokens and 0 for padding (its last ``T``
                columns are used: padded steps leave the state unchanged); ``None``: no padding.
            position_ids: Ignored (accepted for the transformers' calling convention).
            kv_cache: A :class:`RecurrentState` to start from and update (from
                :meth:`new_kv_cache`); ``None`` starts from zeros.

        Returns:
            Logits ``(B, T, vocab_size)``.
        """
        del position_ids  # order comes from the recurrence
        T = idx.shape[1]
        mask = None
        if attention_mask is not None:
            mask = attention_mask[:, -T:].bool()  # (B, T)
        state = kv_cache.state if kv_cache is not None else None
        x = self.drop(self.wte(idx))  # (B, T, d_model)
        h, state = self.lstm(x, state, mask=mask)  # (B, T, d_hidden)
        if kv_cache is not None:
            kv_cache.state = state
            kv_cache.seq_len += T
        return self.lm_head(self.proj(self.drop(h)))  # (B, T, vocab_size)

    # --8<-- [end:lstm_lm]

    def new_kv_cache(self, batch: int, max_seq_len: int | None = None) -> RecurrentState:
        """An empty :class:`RecurrentState` (the LSTM's answer to a KV cache) for ``batch`` rows.

        Args:
            batch: Number of sequences decoded together.
            max_seq_len: Ignored: the state does not grow with the length.
        """
        del max_seq_len
        return RecurrentState(batch)

    def num_parameters(self, *, exclude_embeddings: bool = False) -> int:
        """Number of distinct parameters (a tied matrix counts once).

        Args:
            exclude_embeddings: Leave out the token embeddings.
        """
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= self.wte.weight.numel()
        return n


def parameter_counts(config: LSTMConfig) -> dict[str, int]:
    """Parameters by component: embeddings, lstm, projection, head (0 if tied), total.

    Each layer holds $4H(I + H) + 8H$ (four gates, two bias vectors as in PyTorch).
    """
    c = config
    H = c.d_hidden
    lstm = sum(4 * H * ((c.d_model if k == 0 else H) + H) + 8 * H for k in range(c.n_layers))
    embeddings = c.vocab_size * c.d_model
    projection = (H * c.d_model + c.d_model) if c.tie_embeddings and c.d_model != H else 0
    head = 0 if c.tie_embeddings else c.vocab_size * H
    return dict(
        embeddings=embeddings,
        lstm=lstm,
        projection=projection,
        head=head,
        total=embeddings + lstm + projection + head,
    )
