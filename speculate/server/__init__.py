"""The HTTP and WebSocket server."""

from __future__ import annotations

from speculate.server.app import create_app

__all__ = ["create_app"]
