"""JSON lines passed through: each log line is a JSON object; bare records pass as they are.

It declares no ``FIELDS``: its records are whatever the lines hold.
"""

from __future__ import annotations

from typing import Any

import orjson


def parse(item: dict[str, Any]) -> dict[str, Any]:
    line = item.get("logline")
    if line is None:
        return item
    value = orjson.loads(line)
    if not isinstance(value, dict):
        raise ValueError(f"a JSON {type(value).__name__}, not an object")
    return value
