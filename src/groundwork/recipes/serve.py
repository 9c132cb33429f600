"""`groundwork serve`: a model behind an OpenAI-compatible HTTP API, with a playground page.

The server (:mod:`groundwork.serve`) batches every request it is sent with continuous batching;
point the ``openai`` client (``base_url="http://127.0.0.1:8000/v1"``), lm-evaluation-harness
(``--model local-completions``) or a browser (``http://127.0.0.1:8000/``) at it. Chapter 10
(Decoding), section "Serving".
"""

import sys
from pathlib import Path

from groundwork.errors import ConfigError
from groundwork.recipes.generate import Dtype, Quantize


def serve(
    model: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    served_model_name: str | None = None,
    chat_template: Path | None = None,
    slots: int = 16,
    max_len: int | None = None,
    max_waiting: int = 256,
    dtype: Dtype = "float32",
    quantize: Quantize = "none",
    threads: int | None = None,
) -> None:
    """Serve a run or a named model with the OpenAI API (/v1/completions, /v1/chat/completions,
    /v1/models) and a playground page at /, until Ctrl-C.

    Args:
        model: A run directory or a named model (smollm2-135m-instruct).
        host: Address to listen on (127.0.0.1: this machine only; 0.0.0.0: every interface).
        port: TCP port.
        served_model_name: The name clients pass as "model" (default: MODEL as given).
        chat_template: A Jinja chat template file, for a model that has none of its own.
        slots: Requests decoded together (rows of the KV cache); more wait in a queue.
        max_len: Longest prompt + completion per request (default: the model's context, at
            most 4096); the KV cache holds slots x max_len positions.
        max_waiting: Requests that may wait for a slot; beyond that the server answers 429.
        dtype: Run the model in float32 or bfloat16.
        quantize: Quantised linear layers for faster decoding on a CPU: weight-only int8 or
            int4, or w8a8/w4a8 (integer dot products with 8-bit activations).
        threads: CPU threads for PyTorch (default: PyTorch's choice).
    """
    import torch

    try:
        import uvicorn

        from groundwork.serve import Engine, create_app
    except ImportError as e:
        raise ConfigError(
            f"groundwork serve needs FastAPI and uvicorn ({e.name} is missing): "
            "pip install 'groundwork[serve]'"
        ) from e
    from groundwork.recipes.generate import load_model, prepare_for_decoding

    if not 0 < port < 65536:
        raise ConfigError(f"--port must be between 1 and 65535, got {port}")
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    net, tokenizer, template = load_model(model)
    if chat_template is not None:
        if not chat_template.is_file():
            raise ConfigError(f"--chat-template {chat_template}: no such file")
        template = chat_template.read_text(encoding="utf-8")
    net = prepare_for_decoding(net, dtype, quantize).eval()
    engine = Engine(net, tokenizer, slots=slots, max_len=max_len, max_waiting=max_waiting)
    name = served_model_name or model
    app = create_app(engine, model_name=name, chat_template=template)
    cache_gb = 2 * engine.cache.k.numel() * engine.cache.k.element_size() / 1e9
    print(
        f"serving {name!r} on http://{host}:{port}/v1 ({slots} slots x {engine.max_len} "
        f"tokens, KV cache {cache_gb:.2f} GB); playground: http://{host}:{port}/",
        file=sys.stderr,
    )
    uvicorn.run(app, host=host, port=port, log_level="info")
