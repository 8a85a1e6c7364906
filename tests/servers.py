"""Real servers for the tests: `speculate serve` as a child process on loopback."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speculate.backends.standin import free_port
from speculate.bench.children import stop_child, wait_ready
from speculate.bench.inprocess import serve_app
from speculate.settings import Settings


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    url: str
    log_path: str
    db_path: str

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def stop(self) -> None:
        stop_child(self.process)


def wait_until_ok(
    url: str, process: subprocess.Popen[bytes], log_path: str, timeout_s: float = 120
) -> None:
    """Until ``url`` answers 200 (see :func:`speculate.bench.children.wait_ready`)."""
    wait_ready(url, process, Path(log_path), timeout_s)


def limit_files(count: int) -> None:  # in the child, before exec
    resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))


def start_server(
    tmp_dir: str, env: dict[str, str] | None = None, *args: str, max_files: int | None = None
) -> ServerProcess:
    """`speculate serve` on a free port; ``max_files``: its descriptor limit (RLIMIT_NOFILE)."""
    port = free_port()
    log_path = os.path.join(tmp_dir, f"server-{port}.log")
    db_path = os.path.join(tmp_dir, f"requests-{port}.db")
    handle = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        [sys.executable, "-m", "speculate.cli", "serve", "--port", str(port), *args],
        stdout=handle,
        stderr=subprocess.STDOUT,
        preexec_fn=None if max_files is None else lambda: limit_files(max_files),
        env={
            **os.environ,
            "SPECULATE_STORE__PATH": db_path,
            # Many tests share one server from one address: no per-client rate limit.
            "SPECULATE_SERVER__RATE_PER_MINUTE": "0",
            **(env or {}),
        },
    )
    server = ServerProcess(process, f"http://127.0.0.1:{port}", log_path, db_path)
    try:
        wait_until_ok(f"{server.url}/readyz", process, log_path, timeout_s=180)
    except RuntimeError:
        server.stop()
        raise
    return server


def serve_in_thread(app: Any, settings: Settings | None = None) -> AbstractContextManager[str]:
    """Run an app under a real uvicorn on loopback, configured as `speculate serve` does."""
    return serve_app(app, settings or Settings())
