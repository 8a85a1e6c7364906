"""Where the files shipped beside the code live: the browser UI and the YAML configs.

In the repository they are the top-level ``web/`` and ``configs/`` folders (the layout
the product is specified with); a wheel carries them as package data inside the package
(``speculate/_web``, ``speculate/_configs``, mapped in ``pyproject.toml``).  Installed
either way, these functions find them.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _shipped(packaged: str, in_repository: str) -> Path:
    inside = _PACKAGE / packaged
    return inside if inside.is_dir() else _PACKAGE.parent / in_repository


def web_dir() -> Path:
    return _shipped("_web", "web")


def configs_dir() -> Path:
    return _shipped("_configs", "configs")
