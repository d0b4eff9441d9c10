"""Dotted field paths ("victim.name") compiled to getters over decoded event dicts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Getter = Callable[[dict[str, Any]], Any]


def getter(path: str) -> Getter:
    parts = path.split(".")
    if len(parts) == 1:
        key = parts[0]
        return lambda event: event.get(key)
    if len(parts) == 2:
        outer, inner = parts

        def get2(event: dict[str, Any]) -> Any:
            node = event.get(outer)
            return node.get(inner) if isinstance(node, dict) else None

        return get2

    def get_n(event: dict[str, Any]) -> Any:
        node: Any = event
        for part in parts:
            if not isinstance(node, dict):
                return None
            node = node.get(part)
        return node

    return get_n
