"""§7.2's double-click rule as :mod:`pipeline.query.doubleclick` applies it to what it reads."""

from __future__ import annotations

from pipeline.query.doubleclick import Click, removed_clicks


def _clicks(*seconds: int, key: str = "k") -> list[Click]:
    return [Click(key, s * 1000, f"{key}{i}", ("item", "dspace", "s", "download")) for i, s in enumerate(seconds)]


def test_the_double_click_rule() -> None:
    def kept(*seconds: int) -> list[int]:
        clicks = _clicks(*seconds)
        removed = {c.doc_id for c in removed_clicks(clicks)}
        return sorted(c.at_ms // 1000 for c in clicks if c.doc_id not in removed)

    assert kept(60, 89) == [89]  # 10:01:00 and 10:01:29: one action, the second kept
    assert kept(60, 95) == [60, 95]  # 10:01:00 and 10:01:35: two
    assert kept(0, 30) == [30]  # 30 seconds is still within the window
    assert kept(0, 20, 45, 70, 200) == [70, 200]  # a chain: each one within 30 s of the next
    assert kept(100, 0, 20) == [20, 100]  # order of arrival does not matter
    other = _clicks(10, key="other")
    assert list(removed_clicks(_clicks(0) + other)) == []  # another user or URL is another key
