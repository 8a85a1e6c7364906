"""The installed package's version, read from its metadata (pyproject.toml is the one home)."""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("speculate")
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
