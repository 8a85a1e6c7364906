"""Servers the benchmarks (and tests) run as child processes, each on its own port:
``speculate serve`` and LiteLLM's proxy (``litellm --config``), the gateway users deploy
in front of hosted clouds."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx
import yaml

from speculate.backends.standin import free_port

LITELLM_MASTER_KEY = "sk-speculate-bench-0123456789abcdef"


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    """Until ``url`` answers 200; a child that exits or never answers is an error that
    quotes the end of its log.  (A child process offers no readiness event: a bounded poll.)"""
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the child exited with {process.returncode}:\n{tail}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{url} did not answer within {timeout_s:g} s:\n{tail}")
        time.sleep(0.2)


def stop_child(process: subprocess.Popen[bytes]) -> None:
    """Terminate, then kill if it has not gone within 20 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


class Child:
    """A server process that is ready on entry and stopped on exit."""

    ready_path = "/"
    start_timeout_s = 180.0

    def __init__(self, command: list[str], env: dict[str, str], port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._dir = tempfile.TemporaryDirectory(prefix="speculate-child-")
        self.log_path = Path(self._dir.name) / "log.txt"
        self.command, self.env = command, env
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Child:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=self._dir.name,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
            )
        try:
            wait_ready(
                self.url + self.ready_path, self.process, self.log_path, self.start_timeout_s
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_child(self.process)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        self._dir.cleanup()


class SpeculateServer(Child):
    """``speculate serve`` with the given settings (as SPECULATE_* variables)."""

    ready_path = "/readyz"

    def __init__(self, env: dict[str, str], config: str | None = None) -> None:
        port = free_port()
        command = [sys.executable, "-m", "speculate.cli", "serve", "--port", str(port)]
        if config:
            command += ["--config", config]
        quiet = {"SPECULATE_STORE__REQUEST_LOG": "false", "SPECULATE_SERVER__RATE_PER_MINUTE": "0"}
        super().__init__(command, {**quiet, **env}, port)


class MinimalServer(Child):
    """The capacity suite's minimal app (:mod:`speculate.bench.baseline`) under the same
    uvicorn settings: a stream's first frame goes out as soon as its request is read, so
    the time a client waits for it is what the transport alone costs."""

    ready_path = "/healthz"

    def __init__(self, tokens: int = 1) -> None:
        port = free_port()
        command = [sys.executable, "-m", "speculate.bench.fakeserver", "--port", str(port)]
        super().__init__([*command, "--baseline", str(tokens), "--tps", "1000"], {}, port)


class LiteLLMProxy(Child):
    """LiteLLM's proxy serving ``alias`` from an OpenAI-compatible ``upstream`` (its /v1
    URL); ``url`` + "/v1" is what clients call, with ``LITELLM_MASTER_KEY``."""

    ready_path = "/health/liveliness"

    def __init__(self, upstream: str, alias: str, model: str = "standin") -> None:
        port = free_port()
        super().__init__([], {}, port)
        config = {
            "model_list": [
                {
                    "model_name": alias,
                    "litellm_params": {
                        "model": f"openai/{model}",
                        "api_base": upstream,
                        "api_key": "none",
                    },
                }
            ]
        }
        path = Path(self._dir.name) / "litellm.yaml"
        path.write_text(yaml.safe_dump(config))
        self.command = [
            sys.executable,
            "-m",
            "litellm.proxy.proxy_cli",
            "--config",
            str(path),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        self.env = {
            "LITELLM_MASTER_KEY": LITELLM_MASTER_KEY,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no price list fetched from the internet
            "LITELLM_LOG": "ERROR",
        }
