"""speculate: an on-device draft at once, corrected live by a cloud model.

The public names are imported lazily so that ``import speculate.core`` stays free of
I/O libraries (the core is sans-I/O and a test holds it to that).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "Backends",
    "Orchestrator",
    "Settings",
    "SpeculateError",
    "SpeculateRequest",
    "__version__",
    "create_app",
]

_LAZY = {
    "Backends": "speculate.engine.context",
    "Orchestrator": "speculate.engine.orchestrator",
    "SpeculateRequest": "speculate.core.request",
    "Settings": "speculate.settings",
    "SpeculateError": "speculate.errors",
    "create_app": "speculate.server",
    "__version__": "speculate.version",  # reading package metadata loads socket, threading
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'speculate' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
