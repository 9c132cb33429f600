"""Running an application with uvicorn in a background thread (tests, benchmarks, scripts)."""

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

from fastapi import FastAPI

from groundwork.errors import GroundworkError


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now (for tests and benchmarks)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def background_server(
    app: FastAPI, host: str = "127.0.0.1", port: int | None = None
) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread; yields its base URL (``http://host:port``) once
    it accepts connections, and shuts it down afterwards."""
    import uvicorn

    port = free_port(host) if port is None else port
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise GroundworkError(f"the server did not start on {host}:{port}")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
