"""Queue messages: what travels through the Redis lists.

A message is JSON (never pickle, never eval): either one item (an object, as an outside
producer such as a web application RPUSHes it) or a batch (an array of objects, what loglines
itself pushes). A line item keeps the original shape ``{"service", "logline"}`` and adds what
identifies it: ``src`` (the source file's identity) and ``off`` (the byte offset of the line),
plus ``trunc`` (original length) for a truncated line and ``raw_b64`` for bytes that were not
valid UTF-8.

The watcher writes consecutive lines of one file compactly, as a *run*: an object with exactly
the keys ``service``, ``src``, ``off`` and ``loglines`` (a list of lines) stands for one item per
line, the first at ``off`` and each next one at the previous offset plus the line's length in
UTF-8 plus one (the newline). :func:`decode` expands runs, so every consumer sees items.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Mapping
from itertools import accumulate, repeat
from operator import add
from typing import Any

import orjson

from pipeline.errors import PayloadError

Item = dict[str, Any]


def encode(items: list[Item]) -> bytes:
    return orjson.dumps(items)


def decode(raw: bytes, max_bytes: int) -> list[Item]:
    """The items of a message; :class:`PayloadError` says why when it is not one."""
    if len(raw) > max_bytes:
        raise PayloadError(f"message of {len(raw)} bytes exceeds the cap of {max_bytes} bytes")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"not JSON: {exc}") from None
    if isinstance(value, dict):
        value = [value]
    elif not isinstance(value, list):
        raise PayloadError(f"a JSON {type(value).__name__}, not an object or an array of objects")
    items: list[Item] = []
    for index, element in enumerate(value):
        if type(element) is not dict:
            raise PayloadError(f"item {index} is a {type(element).__name__}, not an object")
        if "loglines" in element and element.keys() == RUN_KEYS:
            items += _expand(element, index)
        else:
            items.append(element)
    return items


RUN_KEYS = frozenset(("service", "src", "off", "loglines"))


def _expand(run: Item, index: int) -> list[Item]:
    service, src, offset, lines = run["service"], run["src"], run["off"], run["loglines"]
    if not (type(offset) is int and offset >= 0 and type(lines) is list and all(map(_is_str, lines))):
        raise PayloadError(f"item {index}: a run of lines needs an offset >= 0 and a list of strings")
    sizes = map(len, lines) if all(map(str.isascii, lines)) else [len(line.encode()) for line in lines]
    offsets = accumulate(map(add, sizes, repeat(1)), initial=offset)  # one more than lines
    return [{"service": service, "src": src, "off": o, "logline": line}
            for o, line in zip(offsets, lines, strict=False)]


def _is_str(value: object) -> bool:
    return type(value) is str


def item_id(item: Mapping[str, Any]) -> str | None:
    """The stable id of a line item (``src:off``), or None for a record that has none."""
    src, off = item.get("src"), item.get("off")
    if src is None or off is None:
        return None
    return f"{src}:{off}"


def digest(raw: bytes) -> str:
    return hashlib.sha1(raw).hexdigest()


def dead_letter(
    *,
    reason: str,
    worker: str,
    queue: str,
    item: Any = None,
    raw: bytes | None = None,
    detail: str = "",
) -> bytes:
    """A dead-letter entry: why, where from, and the payload so it can be replayed."""
    entry: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "worker": worker,
        "queue": queue,
        "reason": reason,
    }
    if detail:
        entry["detail"] = detail
    if item is not None:
        entry["item"] = item
    if raw is not None:
        try:
            entry["payload"] = raw.decode("utf-8")
        except UnicodeDecodeError:
            entry["payload_b64"] = base64.b64encode(raw).decode("ascii")
    return orjson.dumps(entry)


def dead_letter_payload(entry: Mapping[str, Any]) -> bytes | None:
    """What a dead-letter entry replays: the original message, or its one item as a batch."""
    if "payload" in entry:
        return str(entry["payload"]).encode("utf-8")
    if "payload_b64" in entry:
        return base64.b64decode(entry["payload_b64"])
    if "item" in entry:
        return orjson.dumps([entry["item"]])
    return None
