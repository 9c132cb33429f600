"""What several test files share (importable as ``helpers``: pytest puts ``tests/`` on the path)."""

from groundwork.train import TrainConfig


def tiny_train(**overrides: object) -> TrainConfig:
    """A few CPU steps of the engine, quiet: 4 steps of 4 x 32 tokens, an evaluation every 2
    steps on 1 batch, no progress bar or TensorBoard; any field can be overridden."""
    fields: dict[str, object] = dict(
        max_steps=4,
        batch_size=4,
        seq_len=32,
        eval_every=2,
        eval_batches=1,
        warmup_steps=1,
        progress=False,
        tensorboard=False,
        device="cpu",
    )
    fields.update(overrides)
    return TrainConfig(**fields)  # type: ignore[arg-type]
