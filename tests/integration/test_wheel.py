"""The package as users install it: ``pip install`` of the built wheel (not editable) into
a fresh virtualenv, run from outside the repository, serves the UI and finds its configs."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import httpx
import pytest

from speculate.backends.standin import free_port
from tests.servers import wait_until_ok

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def run(*command: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(c) for c in command],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_built_wheel_installs_and_serves_the_ui(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "build", "--wheel", "--outdir", dist, ROOT, cwd=tmp_path)
    wheel = next(dist.glob("speculate-*.whl"))
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    # The dependencies are the ones this environment already has (llama-cpp-python takes
    # minutes to build): its site-packages is appended to the new venv's path, after the
    # venv's own, so `speculate` itself comes from the wheel.
    site = Path(
        run(
            python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=tmp_path
        ).strip()
    )
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    run(python, "-m", "pip", "install", "--no-deps", "--no-index", wheel, cwd=tmp_path)
    where = run(
        python,
        "-c",
        "import speculate, speculate.assets as a, speculate.settings as s;"
        "print(speculate.__file__); print(a.web_dir()); print(s.DEFAULT_CONFIG)",
        cwd=tmp_path,
    ).split()
    assert all(str(venv) in line for line in where), where
    assert Path(where[2]).is_file()

    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [venv / "bin" / "speculate", "serve", "--port", str(port)],
        cwd=tmp_path,  # nowhere near the repository's web/ and configs/
        stdout=log,
        stderr=subprocess.STDOUT,
        env={
            **os.environ,
            "SPECULATE_CLOUD__ENABLED": "false",
            "SPECULATE_STORE__PATH": str(tmp_path / "speculate.db"),
        },
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ok(f"{url}/readyz", server, str(tmp_path / "serve.log"))
        page = httpx.get(f"{url}/", timeout=10)
        script = httpx.get(f"{url}/app.js", timeout=10)
        vendored = httpx.get(f"{url}/vendor/diff.js", timeout=10)
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assert "<script" in page.text
    assert script.status_code == 200
    assert vendored.status_code == 200
