"""The local cloud stand-in: a real ``llama_cpp.server`` child process on loopback.

Used when no ``cloud.base_url`` is configured, through exactly the same HTTP client
as vLLM, and asked in vLLM's request shapes (see :mod:`speculate.backends.standin_app`).
The child is tied to us three ways so it never outlives the server: it is
stopped on shutdown, it gets SIGKILL from the kernel if we die (``PR_SET_PDEATHSIG``,
Linux), and it runs in its own process group so stopping it takes its helpers too.

It is also supervised: a child that dies is reaped at once and started again on the same
port after an exponential backoff (``restart_base_s``, doubling, at most ``restart_cap_s``),
up to ``restart_attempts`` tries in a row, each one logged; ``state`` says where it stands.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal

import anyio
import httpx

from speculate.errors import StandInError

log = logging.getLogger("speculate.standin")

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    os.setpgrp()
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class StandInServer:
    def __init__(
        self,
        model_path: Path,
        *,
        alias: str,
        n_ctx: int = 2048,
        n_threads: int = 1,
        startup_timeout_s: float = 120.0,
        port: int = 0,
        logits_all: bool = True,
        n_batch: int = 512,
        reuse_prefix: bool = True,
        restart_base_s: float = 1.0,
        restart_cap_s: float = 30.0,
        restart_attempts: int = 6,
    ) -> None:
        """``port`` 0: a free loopback port, chosen at start."""
        self.model_path = model_path
        self.alias = alias
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.startup_timeout_s = startup_timeout_s
        self.port = port
        self.logits_all = logits_all
        self.n_batch = n_batch
        self.reuse_prefix = reuse_prefix
        self.restart_base_s = restart_base_s
        self.restart_cap_s = restart_cap_s
        self.restart_attempts = restart_attempts
        self.state: Literal["stopped", "up", "restarting", "failed"] = "stopped"
        self.restarts = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the child

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "speculate.backends.standin_app",
            "--model",
            str(self.model_path),
            "--model_alias",
            self.alias,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.n_ctx),
            "--n_threads",
            str(self.n_threads),
            "--n_threads_batch",
            str(self.n_threads),
            "--verbose",
            "False",
            # By default llama_cpp.server cuts a streaming answer short, silently, when
            # another request (even GET /models, our health probe) waits for the model.
            # vLLM batches instead; queue like it.
            "--interrupt_requests",
            "False",
            # Log-probabilities of every prompt token: how verify mode scores a draft.
            "--logits_all",
            str(self.logits_all),
            "--n_batch",
            str(self.n_batch),
            "--n_ubatch",
            str(self.n_batch),
            "--reuse_prefix",
            str(self.reuse_prefix),
        ]

    async def start(self) -> str:
        """Start the child and wait until it answers ``/v1/models``; return its base URL."""
        self.port = self.port or free_port()
        # Popen from the event-loop thread: PDEATHSIG follows the thread that forked.
        self.process = subprocess.Popen(  # noqa: ASYNC220 - forks in microseconds
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + self.startup_timeout_s
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                if self.process.poll() is not None:
                    raise StandInError(
                        f"the cloud stand-in exited with code {self.process.returncode}:\n"
                        f"{self.output()[-2000:]}"
                    )
                try:
                    response = await client.get(f"{self.base_url}/models")
                    if response.status_code == 200:
                        self.state = "up"
                        return self.base_url
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    await self.stop()
                    raise StandInError(
                        f"the cloud stand-in did not answer within {self.startup_timeout_s:g} s"
                    )
                # A child process gives no readiness event to wait on: poll, bounded above.
                await anyio.sleep(0.1)

    async def supervise(self, restarted: Callable[[], Awaitable[object]] | None = None) -> None:
        """Watch the child (for the app's lifespan task group): reap it when it dies and
        start it again with backoff; ``restarted`` is awaited after each comeback."""
        while (process := self.process) is not None:
            code = await anyio.to_thread.run_sync(process.wait, abandon_on_cancel=True)
            if self.process is not process:  # stopped on purpose
                return
            self.process = None
            self.state = "restarting"
            log.warning("the cloud stand-in exited with code %s; restarting it", code)
            if not await self._restart():
                self.state = "failed"
                log.error(
                    "the cloud stand-in did not come back after %d attempts; the edge answers "
                    "alone and refinements stay queued",
                    self.restart_attempts,
                )
                return
            self.restarts += 1
            if restarted is not None:
                await restarted()

    async def _restart(self) -> bool:
        for attempt in range(self.restart_attempts):
            delay = min(self.restart_cap_s, self.restart_base_s * 2.0**attempt)
            log.info(
                "restarting the cloud stand-in in %.1f s (attempt %d of %d)",
                delay,
                attempt + 1,
                self.restart_attempts,
            )
            await anyio.sleep(delay)
            try:
                await self.start()
            except StandInError as exc:
                log.warning("the cloud stand-in failed to start: %s", exc.message.splitlines()[0])
                continue
            log.info("the cloud stand-in is back at %s", self.base_url)
            return True
        return False

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    async def stop(self, grace_s: float = 5.0) -> None:
        process, self.process = self.process, None
        self.state = "stopped"
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        with anyio.move_on_after(grace_s):
            await anyio.to_thread.run_sync(process.wait, abandon_on_cancel=True)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            await anyio.to_thread.run_sync(process.wait)
