r"""Chapter 4 experiment: vanishing and exploding gradients in RNNs, the LSTM, and clipping.

Part 1 measures how much of a loss at the last step $T$ reaches each earlier hidden state:
$\lVert \partial L / \partial h_t \rVert$ for $t = 1..T$, for a vanilla tanh RNN and an LSTM of the
same width, with the recurrent matrix $W_{hh}$ (each gate's block, for the LSTM) rescaled to a
chosen spectral radius $\rho$. For the LSTM it also varies the forget-gate bias, which sets how
close $f_t$, and so $\partial c_t / \partial c_{t-1} = \operatorname{diag}(f_t)$, is to 1.

Part 2 trains a vanilla RNN on the adding problem (Hochreiter & Schmidhuber 1997) from an
initialisation in the exploding regime with and without clipping the gradient norm
(Pascanu et al. 2013), and records the norm before clipping and the loss.

Writes ``docs/chapters/img/rnn-gradients.png`` and ``docs/results/rnn-gradients.md``.
Runs in well under a minute on a CPU::

    python scripts/rnn_gradients.py
"""

import argparse
import math
import platform
from pathlib import Path

import torch

from groundwork.models.rnn import RNN, LSTMCell, RNNCell, State, _Cell

ROOT = Path(__file__).resolve().parent.parent
IMAGE = ROOT / "docs/chapters/img/rnn-gradients.png"
TABLE = ROOT / "docs/results/rnn-gradients.md"
T, H, I, B = 100, 64, 8, 16
ADDING_T = 10


def set_spectral_radius(cell: _Cell, rho: float) -> None:
    """Rescale each gate's block of ``W_hh`` to spectral radius ``rho`` (largest |eigenvalue|)."""
    with torch.no_grad():
        for block in cell.weight_hh.split(cell.hidden_size, dim=0):  # (H, H) per gate
            radius = torch.linalg.eigvals(block).abs().max()
            block.mul_(rho / radius)


# --8<-- [start:grad_norms]
def gradient_norms(cell: _Cell, x: torch.Tensor) -> list[float]:
    """$\\lVert \\partial L / \\partial h_t \\rVert$ for every step, $L$ a loss on $h_T$ only."""
    state: State = cell.zero_state(x.shape[0], x)
    gx = cell.input_projection(x)  # (B, T, gates * H)
    hs = []
    for t in range(x.shape[1]):
        state = cell.step(gx[:, t], state)
        state[0].retain_grad()  # keep dL/dh_t, which autograd would otherwise free
        hs.append(state[0])
    loss = hs[-1].sum()  # depends on h_T; reaches h_t only through the recurrence
    loss.backward()
    return [h.grad.norm().item() / x.shape[0] for h in hs]


# --8<-- [end:grad_norms]


def adding_batch(generator: torch.Generator, length: int, batch: int) -> tuple[torch.Tensor, ...]:
    """The adding problem: inputs ``(B, T, 2)`` of (random value, marker); two markers per row;
    the target is the sum of the two marked values."""
    values = torch.rand(batch, length, generator=generator)
    markers = torch.zeros(batch, length)
    for row in range(batch):
        first = int(torch.randint(0, length // 2, (1,), generator=generator))
        second = int(torch.randint(length // 2, length, (1,), generator=generator))
        markers[row, [first, second]] = 1.0
    return torch.stack([values, markers], dim=-1), (values * markers).sum(dim=1)


# --8<-- [start:clipping]
def train_adding(clip: float | None, steps: int, seed: int = 0) -> dict[str, list[float]]:
    """SGD (lr 0.1) on the adding problem (T = 10) with a vanilla RNN started at spectral
    radius 1.5, clipping the gradient norm at ``clip`` (None: no clipping)."""
    torch.manual_seed(seed)
    rnn = RNN(2, 32, impl="fused")
    set_spectral_radius(rnn.cells["l0"], 1.5)
    head = torch.nn.Linear(32, 1)
    params = [*rnn.parameters(), *head.parameters()]
    opt = torch.optim.SGD(params, lr=0.1)
    data = torch.Generator().manual_seed(seed)
    history: dict[str, list[float]] = {"loss": [], "norm": [], "clipped_norm": []}
    for _ in range(steps):
        x, y = adding_batch(data, ADDING_T, 32)
        out, _ = rnn(x)  # (B, T, H)
        loss = torch.nn.functional.mse_loss(head(out[:, -1]).squeeze(-1), y)
        opt.zero_grad()
        loss.backward()
        # ||g|| > c  =>  g <- c g / ||g||: the direction is kept, only the step shrinks
        norm = torch.nn.utils.clip_grad_norm_(params, clip if clip else math.inf)
        clipped = min(float(norm), clip) if clip else float(norm)
        opt.step()
        history["loss"].append(loss.item())
        history["norm"].append(float(norm))
        history["clipped_norm"].append(clipped)
    return history


# --8<-- [end:clipping]


def first_nonfinite(values: list[float]) -> int | None:
    """The 1-based step of the first NaN or infinite value, or None."""
    return next((i + 1 for i, v in enumerate(values) if not math.isfinite(v)), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=400, help="training steps in part 2")
    args = parser.parse_args()
    torch.set_num_threads(1)
    x = torch.randn(B, T, I, generator=torch.Generator().manual_seed(0))

    curves: dict[str, list[float]] = {}
    for rho in (0.5, 0.9, 1.1, 1.5, 3.0):
        torch.manual_seed(0)
        rnn = RNNCell(I, H)
        set_spectral_radius(rnn, rho)
        curves[f"RNN rho={rho}"] = gradient_norms(rnn, x)
        torch.manual_seed(0)
        lstm = LSTMCell(I, H)
        set_spectral_radius(lstm, rho)
        curves[f"LSTM rho={rho}"] = gradient_norms(lstm, x)
    for bias in (0.0, 1.0, 3.0, 5.0):
        torch.manual_seed(0)
        lstm = LSTMCell(I, H)
        set_spectral_radius(lstm, 0.9)
        with torch.no_grad():
            assert lstm.bias_ih is not None and lstm.bias_hh is not None
            lstm.bias_ih[H : 2 * H] = bias  # the forget gate's block
            lstm.bias_hh[H : 2 * H] = 0.0
        curves[f"LSTM b_f={bias:g}"] = gradient_norms(lstm, x)

    runs = {
        "no clipping": train_adding(None, args.steps),
        "clip at 1": train_adding(1.0, args.steps),
    }

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    steps = range(1, T + 1)
    for ax, prefix, title in (
        (axes[0], "RNN rho", "vanilla RNN (tanh)"),
        (axes[1], "LSTM rho", "LSTM, forget bias 0"),
        (axes[2], "LSTM b_f", "LSTM, rho = 0.9, forget bias b_f"),
    ):
        for name, norms in curves.items():
            if name.startswith(prefix):
                relative = [max(n / norms[-1], 1e-30) for n in norms]  # 1 at t = T
                ax.semilogy(steps, relative, label=name.split(" ", 1)[1])
        ax.set_title(title)
        ax.set_xlabel("time step t (loss at t = 100)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("||dL/dh_t|| / ||dL/dh_T||")
    for (name, h), color in zip(runs.items(), ("tab:red", "tab:blue"), strict=True):
        axes[3].semilogy(h["norm"], lw=0.6, alpha=0.6, color=color, label=f"grad norm, {name}")
        axes[3].semilogy(h["loss"], lw=1.5, color=color, label=f"loss, {name}")
        bad = first_nonfinite(h["loss"])
        if bad is not None:
            axes[3].axvline(bad, color=color, ls="--", lw=0.8)
            axes[3].annotate(f"loss NaN from step {bad}", (bad, 1e3), color=color, fontsize=8)
    axes[3].axhline(1 / 6, color="gray", ls=":", lw=0.8)  # constant guess 1: variance 1/6
    axes[3].set_title(f"adding problem (T = {ADDING_T}), SGD, rho = 1.5 at init")
    axes[3].set_xlabel("training step")
    axes[3].legend(fontsize=8)
    axes[3].grid(alpha=0.3, which="both")
    fig.tight_layout()
    IMAGE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMAGE, dpi=110)

    lines = [
        "| model | setting | ‖∂L/∂h_T‖ | ‖∂L/∂h_1‖ | ratio h_1 / h_T |",
        "|---|---|---:|---:|---:|",
    ]
    for name, norms in curves.items():
        model, setting = name.split(" ", 1)
        ratio = norms[0] / norms[-1] if norms[-1] else float("nan")
        lines.append(f"| {model} | {setting} | {norms[-1]:.2e} | {norms[0]:.2e} | {ratio:.1e} |")
    lines += [
        "",
        "| adding problem | largest finite grad norm | steps clipped | first NaN loss "
        "| mean loss, last 50 steps |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, h in runs.items():
        n_clipped = sum(1 for a, b in zip(h["norm"], h["clipped_norm"], strict=True) if b < a)
        tail = h["loss"][-50:]
        finite = [n for n in h["norm"] if math.isfinite(n)]
        bad = first_nonfinite(h["loss"])
        lines.append(
            f"| {name} | {max(finite):.2e} | {n_clipped} / {len(h['norm'])} "
            f"| {'step ' + str(bad) if bad is not None else 'never'} "
            f"| {sum(tail) / len(tail):.3f} |"
        )
    lines += [
        "",
        f"*T = {T}, H = {H}, batch {B}, random normal inputs, L = sum of h_T; the adding problem "
        f"predicts the sum of two marked numbers in a sequence of {ADDING_T}, batch 32, hidden "
        "size 32 (a constant guess of 1 scores 1/6 = 0.167). "
        f"Produced by `python scripts/rnn_gradients.py` on {platform.machine()} CPU, "
        f"PyTorch {torch.__version__}.*",
    ]
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    TABLE.write_text("\n".join(lines) + "\n")
    print(TABLE.read_text())


if __name__ == "__main__":
    main()
