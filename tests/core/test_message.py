"""Messages: bounded in bytes, items and depth; what cannot be encoded is set aside alone."""

from __future__ import annotations

import orjson
import pytest

from pipeline.core import message
from pipeline.errors import PayloadError


def deep(levels: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"x": value}
    return value


def test_pack_splits_by_bytes_and_sets_aside_what_cannot_be_encoded() -> None:
    items = [{"n": n, "pad": "x" * 300} for n in range(20)]
    messages, bad = message.pack(items, 1000)
    assert bad == [] and len(messages) > 5 and all(len(m) <= 1000 for m in messages)
    assert [i for m in messages for i in orjson.loads(m)] == items
    one, _ = message.pack(items, 1 << 20)
    assert len(one) == 1
    huge = {"n": 99999999999999999999}
    messages, bad = message.pack([{"a": 1}, huge, deep(300), {"b": 2}], 1 << 20)
    assert [i for m in messages for i in orjson.loads(m)] == [{"a": 1}, {"b": 2}]
    assert [item for item, _ in bad] == [huge, deep(300)] and all("JSON" in why for _, why in bad)
    alone, _ = message.pack([{"big": "y" * 5000}, {"n": 1}], 1000)
    assert len(alone) == 2  # an item longer than the bound goes alone


def test_a_dead_letter_keeps_an_item_orjson_cannot_encode_and_replays_it() -> None:
    import json  # orjson reads integers beyond 64 bits as floats: the standard library keeps them

    entry = json.loads(message.dead_letter(reason="r", worker="w", queue="q",
                                           item={"n": 99999999999999999999}))
    assert entry["item"] == {"n": 99999999999999999999}
    assert json.loads(message.dead_letter_payload(entry) or b"") == [{"n": 99999999999999999999}]
    too_deep = orjson.loads(message.dead_letter(reason="r", worker="w", queue="q", item=deep(5000)))
    assert "item_repr" in too_deep


def test_decode_refuses_deep_items_and_too_many_items() -> None:
    assert message.decode(orjson.dumps([deep(message.MAX_DEPTH)]), 1 << 20)
    with pytest.raises(PayloadError, match="deeper than 200"):
        message.decode(orjson.dumps([{"ok": 1}, deep(message.MAX_DEPTH + 1)]), 1 << 20)
    run = {"service": "s", "src": "f", "off": 0, "loglines": [""] * 10}
    assert len(message.decode(orjson.dumps([run]), 1 << 20, max_items=10)) == 10
    with pytest.raises(PayloadError, match="more than 10 items"):
        message.decode(orjson.dumps([run, {"one": "more"}]), 1 << 20, max_items=10)
    with pytest.raises(PayloadError, match="more than 10 items"):
        message.decode(orjson.dumps([{"n": n} for n in range(11)]), 1 << 20, max_items=10)


def test_the_one_encoding_that_finds_shallow_messages_agrees_with_walking_them() -> None:
    """``all_shallow`` (one encoding of the message) must pass exactly what ``too_deep`` (a walk
    of every item) passes, at the limit, for objects and for arrays, alone or among others."""
    def nested_lists(levels: int) -> dict[str, object]:
        value: object = 1
        for _ in range(levels - 1):
            value = [value]
        return {"v": value}

    for levels in range(message.MAX_DEPTH - 3, message.MAX_DEPTH + 4):
        for item in (deep(levels), nested_lists(levels)):
            walked = message.too_deep(item)
            assert message.all_shallow([{"flat": 1}, item]) is not walked, levels
            refused = pytest.raises(PayloadError, match="item 1 nests deeper") if walked else None
            if refused:
                with refused:
                    message.decode(orjson.dumps([{"flat": 1}, item]), 1 << 20)
            else:
                assert message.decode(orjson.dumps([{"flat": 1}, item]), 1 << 20)[1] == item
    assert message.too_deep(deep(message.MAX_DEPTH + 1)) and not message.too_deep(deep(message.MAX_DEPTH))
