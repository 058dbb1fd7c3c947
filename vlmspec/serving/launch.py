"""Start `vlmspec serve` as a child process on 127.0.0.1 and wait (bounded) until /health answers.
Used by the benchmarks in eval/ and the HTTP tests, so both start the server the same way."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: list[str], *, port: int | None = None, timeout_s: float = 120.0,
                 env: dict | None = None) -> tuple[subprocess.Popen, str, dict]:
    """`python -m vlmspec serve --port PORT *args`; returns (process, base URL, /health JSON).
    Raises RuntimeError with the server's output if it exits, or after `timeout_s`. The caller stops it."""
    import httpx

    port = port or free_port()
    proc = subprocess.Popen([sys.executable, "-m", "vlmspec", "serve", "--port", str(port), *args],
                            env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError("the server exited before answering:\n" + proc.stdout.read())
        try:
            health = httpx.get(base + "/health", timeout=2)
            if health.status_code == 200:
                return proc, base, health.json()
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the server did not answer /health within {timeout_s:.0f} s")
        time.sleep(0.2)
