from __future__ import annotations

import subprocess
import sys
from pathlib import Path

IO_LIBRARIES = {
    "asyncio",
    "anyio",
    "httpx",
    "starlette",
    "sse_starlette",
    "websockets",
    "llama_cpp",
    "uvicorn",
    "sqlite3",
    "socket",
    "threading",
}


PACKAGE = Path(__file__).resolve().parent.parent.parent / "speculate"
PURE_MODULES = sorted(
    ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    for folder in ("core", "policy")
    for path in (PACKAGE / folder).glob("*.py")
)


def test_pure_layers_load_no_io_library_even_indirectly() -> None:
    """Every module of core/ and policy/, with all it imports, in a fresh interpreter."""
    code = (
        f"import sys, importlib\nfor m in {PURE_MODULES!r}: importlib.import_module(m)\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    loaded = set(subprocess.check_output([sys.executable, "-c", code], text=True).split())
    assert len(PURE_MODULES) > 10
    assert not loaded & IO_LIBRARIES, loaded & IO_LIBRARIES
