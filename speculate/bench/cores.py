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
from pathlib import Path

__all__ = ["pin", "split_off_one_core"]


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of ``pid`` onto ``cpus`` (threads made later inherit it)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(task.name), cpus)


def split_off_one_core(pid: int) -> bool:
    """``pid`` gets the last core, this process the others; False where that cannot be
    (one core, or no affinity on this platform), and then nothing changes."""
    if not hasattr(os, "sched_setaffinity"):
        return False
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return False
    pin(pid, {cpus[-1]})
    pin(os.getpid(), set(cpus[:-1]))
    return True
