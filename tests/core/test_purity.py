from __future__ import annotations

import subprocess
import sys

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


def test_core_imports_no_io_library() -> None:
    code = (
        "import sys, speculate.core, speculate.core.session, speculate.core.diff\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    loaded = set(subprocess.check_output([sys.executable, "-c", code], text=True).split())
    assert not loaded & IO_LIBRARIES, loaded & IO_LIBRARIES
