"""Serving: an OpenAI-compatible HTTP API with continuous batching, and a playground page.

* :mod:`~groundwork.serve.slots`: a KV cache with one row per running request, each written
  and read at its own length.
* :mod:`~groundwork.serve.engine`: the iteration-level scheduler (Yu et al. 2022, "Orca"):
  requests join and leave the running batch between decoding steps.
* :mod:`~groundwork.serve.protocol`: the OpenAI request and response shapes, and its errors.
* :mod:`~groundwork.serve.app`: the FastAPI application (``groundwork serve``), with
  server-sent-event streaming and the playground page (``playground.html``).
* :mod:`~groundwork.serve.run`: uvicorn in a background thread (tests, benchmarks).

Chapter 10 (Decoding), section "Serving".
"""

from groundwork.serve.app import create_app
from groundwork.serve.engine import Engine, Event, QueueFullError, SamplingParams, Sequence
from groundwork.serve.run import background_server, free_port
from groundwork.serve.slots import SlotKVCache

__all__ = [
    "Engine",
    "Event",
    "QueueFullError",
    "SamplingParams",
    "Sequence",
    "SlotKVCache",
    "background_server",
    "create_app",
    "free_port",
]
