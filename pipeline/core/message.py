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
UTF-8 plus one (the newline). :func:`decode` expands runs, so a consumer that wants items sees
items; :func:`decode_elements` keeps them as :class:`Run` objects (checked, not expanded), so the
parser can hand a plugin a whole run at once and never build a dict per line it does not need.
"""

from __future__ import annotations

import base64
import hashlib
import json
import reprlib
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


def pack(items: list[Any], max_bytes: int) -> tuple[list[bytes], list[tuple[Any, str]]]:
    """``items`` as messages of about ``max_bytes`` at most (an item longer than that goes
    alone), and the items that cannot be encoded with the reason (an integer beyond 64 bits,
    nesting deeper than JSON encoding allows): those are dead-lettered, the rest flows on."""
    try:
        whole = orjson.dumps(items)
    except (orjson.JSONEncodeError, TypeError):
        whole = b""
    if whole and len(whole) <= max_bytes:
        return [whole], []
    bad: list[tuple[Any, str]] = []
    messages: list[bytes] = []
    chunk: list[bytes] = []
    size = 0
    for item in items:
        try:
            encoded = orjson.dumps(item)
        except (orjson.JSONEncodeError, TypeError) as exc:
            bad.append((item, f"cannot be encoded as JSON: {exc}"))
            continue
        if chunk and size + len(encoded) > max_bytes:
            messages.append(b"[" + b",".join(chunk) + b"]")
            chunk, size = [], 0
        chunk.append(encoded)
        size += len(encoded) + 1
    if chunk:
        messages.append(b"[" + b",".join(chunk) + b"]")
    return messages, bad


#: Nesting below what encoding accepts (orjson: 254), with room for a dead-letter entry's levels.
MAX_DEPTH = 200
#: Items one message may expand to: a run of empty lines costs 3 bytes a line and ~400 decoded.
MAX_ITEMS = 100_000


class Run:
    """A run of lines as it travelled: the lines of one file, the first at ``off``. Consumers
    that can work on lines (a parser whose plugin has ``parse_batch``) take it as it is; the
    others get it expanded into items (:func:`expand`)."""

    __slots__ = ("service", "src", "off", "lines")

    def __init__(self, service: Any, src: Any, off: int, lines: list[str]) -> None:
        self.service, self.src, self.off, self.lines = service, src, off, lines

    def offsets(self) -> list[int]:
        """The offset of every line (one more: the offset just past the last)."""
        lines = self.lines
        sizes = map(len, lines) if all(map(str.isascii, lines)) else [len(line.encode()) for line in lines]
        return list(accumulate(map(add, sizes, repeat(1)), initial=self.off))

    def items(self) -> list[Item]:
        service, src = self.service, self.src
        return [{"service": service, "src": src, "off": o, "logline": line}
                for o, line in zip(self.offsets(), self.lines, strict=False)]


Element = Item | Run


def decode(raw: bytes, max_bytes: int, max_items: int = MAX_ITEMS) -> list[Item]:
    """The items of a message; :class:`PayloadError` says why when it is not one (not JSON, not
    objects, over ``max_bytes``, more than ``max_items`` items, nested deeper than
    :data:`MAX_DEPTH`)."""
    return expand(decode_elements(raw, max_bytes, max_items))


def decode_elements(raw: bytes, max_bytes: int, max_items: int = MAX_ITEMS) -> list[Element]:
    """The message's items, its runs of lines left as :class:`Run` (checked, not expanded);
    :class:`PayloadError` as for :func:`decode`."""
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
    elements: list[Element] = []
    count = 0
    shallow: bool | None = None  # whether no item can nest too deep (found out at the first item)
    for index, element in enumerate(value):
        if type(element) is not dict:
            raise PayloadError(f"item {index} is a {type(element).__name__}, not an object")
        if "loglines" in element and element.keys() == RUN_KEYS:
            run = _run(element, index)
            count += len(run.lines)
            elements.append(run)
        else:
            if shallow is None:
                shallow = all_shallow(value)
            if not shallow and too_deep(element):
                raise PayloadError(f"item {index} nests deeper than {MAX_DEPTH} levels")
            count += 1
            elements.append(element)
        if count > max_items:
            raise PayloadError(f"more than {max_items} items in one message")
    return elements


def expand(elements: list[Element]) -> list[Item]:
    """Items only: every run as one item per line."""
    if all(type(e) is dict for e in elements):
        return elements  # type: ignore[return-value]  # no run among them
    items: list[Item] = []
    for element in elements:
        if type(element) is Run:
            items += element.items()
        else:
            items.append(element)  # type: ignore[arg-type]
    return items


def size(elements: list[Element]) -> int:
    """How many items the elements stand for."""
    return sum(len(e.lines) if type(e) is Run else 1 for e in elements)


def count_items(raw: bytes) -> int:
    """How many items a message holds (a run counts its lines), without building them; a
    message that is not a batch counts as one (it is dead-lettered whole)."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return 1
    elements = value if isinstance(value, list) else [value]
    return sum(len(e["loglines"]) if type(e) is dict and e.keys() == RUN_KEYS
               and type(e["loglines"]) is list else 1 for e in elements)


def _deepest_encodable() -> int:
    """How many levels of arrays orjson encodes (254 in the versions we know)."""
    value: Any = 0
    for depth in range(1, 100_000):
        value = [value]
        try:
            orjson.dumps(value)
        except orjson.JSONEncodeError:
            return depth - 1
    return 100_000


#: Arrays around a message that leave its items exactly MAX_DEPTH levels to be encoded in.
_ROOM = _deepest_encodable() - 1 - MAX_DEPTH


def all_shallow(elements: list[Any]) -> bool:
    """True when no element nests deeper than :data:`MAX_DEPTH` (a False may be for another
    reason: :func:`too_deep` then tells). One encoding inside enough arrays to leave exactly
    that depth: a fifth of the time of walking records that hold a list."""
    if _ROOM < 0:
        return False
    wrapped: Any = elements
    for _ in range(_ROOM):
        wrapped = [wrapped]
    try:
        orjson.dumps(wrapped)
    except orjson.JSONEncodeError:
        return False
    return True


def too_deep(value: dict[str, Any]) -> bool:
    if not any(type(v) is dict or type(v) is list for v in value.values()):
        return False  # the common flat record
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        children = node.values() if type(node) is dict else node
        stack.extend((child, depth + 1) for child in children if type(child) is dict or type(child) is list)
    return False


RUN_KEYS = frozenset(("service", "src", "off", "loglines"))


def _run(run: Item, index: int) -> Run:
    offset, lines = run["off"], run["loglines"]
    if not (type(offset) is int and offset >= 0 and type(lines) is list and not {*map(type, lines)} - _STR):
        raise PayloadError(f"item {index}: a run of lines needs an offset >= 0 and a list of strings")
    return Run(run["service"], run["src"], offset, lines)


_STR = {str}  # the one type a run's lines have (exactly: checked a run at a time, in C)


def item_id(item: Mapping[str, Any]) -> str | None:
    """The stable id of a line item (``src:off``), or None for a record that has none."""
    src, off = item.get("src"), item.get("off")
    if src is None or off is None:
        return None
    return f"{src}:{off}"


def digest(raw: bytes) -> str:
    """A message's key in the recoveries hash (the acknowledging script makes the same with
    ``redis.sha1hex``: keep the two alike)."""
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
    return dumps_anyway(entry)


def dumps_anyway(value: Any) -> bytes:
    """JSON of a dead-letter entry whatever its item holds: orjson, else the standard library
    (integers beyond 64 bits, deeper nesting), else the item's text (never lose the entry)."""
    try:
        return orjson.dumps(value)
    except (orjson.JSONEncodeError, TypeError):
        pass
    try:
        return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    except (ValueError, TypeError, RecursionError):
        fallback = dict(value)
        fallback["item_repr"] = _SHORT.repr(fallback.pop("item", None))
        return orjson.dumps(fallback)


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxdict, _SHORT.maxlist, _SHORT.maxstring = 20, 200, 200, 10_000


def dead_letter_payload(entry: Mapping[str, Any]) -> bytes | None:
    """What a dead-letter entry replays: the original message, or its one item as a batch."""
    if "payload" in entry:
        return str(entry["payload"]).encode("utf-8")
    if "payload_b64" in entry:
        return base64.b64decode(entry["payload_b64"])
    if "item" in entry:
        return dumps_anyway([entry["item"]])
    return None
