"""Keeping two processes of one benchmark off each other's cores.

On a small machine the cloud stand-in and the device share the CPU; a real cloud runs
elsewhere, so whatever the device does cannot slow it.  Giving the stand-in a core of its
own (every thread of it, as a process's affinity covers only its main thread) and the rest
to the benchmark measures what the device's work costs the answer, not what two models
fighting over two cores cost each other.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["pin", "split_off_one_core"]


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of ``pid`` onto ``cpus`` (threads made later inherit it)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(task.name), cpus)


@contextlib.contextmanager
def split_off_one_core(pid: int) -> Iterator[bool]:
    """``pid`` on the last core, this process on the others, until the block ends (then
    this process gets its cores back).  Yields False where that cannot be (one core, or
    no affinity on this platform), and then nothing changes."""
    if not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2:
        yield False
        return
    mine = os.sched_getaffinity(0)
    cpus = sorted(mine)
    pin(pid, {cpus[-1]})
    pin(os.getpid(), set(cpus[:-1]))
    try:
        yield True
    finally:
        pin(os.getpid(), mine)
