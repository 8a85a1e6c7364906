"""A chat message as every layer passes it: ``{"role": ..., "content": ...}``."""

from __future__ import annotations

Message = dict[str, str]
