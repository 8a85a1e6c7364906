"""Counting anyio's cancellations: a cancel scope's ``cancel()`` formats the calling task's
repr and takes turns of the loop to deliver, too dear for every stream's end when hundreds
end together, so the paths that end by themselves are checked to cancel nothing."""

from __future__ import annotations

import sys
from typing import Any

import anyio
import pytest


def count_cancels(monkeypatch: pytest.MonkeyPatch, called_from: str | None = None) -> list[Any]:
    """The scopes cancelled from now on (in any thread), or only those cancelled by code
    in the file ``called_from``.  Call it from async code: the class patched is the running
    backend's."""
    cancelled: list[Any] = []
    scope_class = type(anyio.CancelScope())
    cancel = scope_class.cancel

    def counted(self: Any, *args: Any) -> None:
        if called_from is None or sys._getframe(1).f_code.co_filename == called_from:
            cancelled.append(self)
        cancel(self, *args)

    monkeypatch.setattr(scope_class, "cancel", counted)
    return cancelled
