"""The COUNTER keys the access-log plugin adds, and the double-click rule, without a server."""

from __future__ import annotations

import hashlib
import random

import pytest

from pipeline import plugin as plugin_mod
from pipeline.plugins import _counter, accesslog


def line(ip: str = "192.1.1.168", stamp: str = "15/Jun/2024:13:35:00 +0000", path: str = "/handle/1/2",
         agent: str = "Mozilla/5.0 (X11)", user: str = "-", trailer: str = "") -> str:
    return (f'{ip} - {user} [{stamp}] "GET {path} HTTP/1.1" 200 1 "-" "{agent}"'
            + (f' "{trailer}"' if trailer else ""))


def test_the_session_key_is_the_code_of_practice_example() -> None:
    record = accesslog.parse_line(line())
    assert record["session"] == "192.1.1.168|Mozilla/5.0 (X11)|2024-06-15|13"  # §7.3's own example's shape
    assert record["user_key"] == "192.1.1.168|Mozilla/5.0 (X11)"
    assert record["session_hash"] == hashlib.sha1(record["session"].encode()).hexdigest()[:16]
    assert accesslog.parse_line(line(stamp="15/Jun/2024:15:35:00 +0200"))["session"] == record["session"]  # UTC
    assert accesslog.parse_line(line(stamp="15/Jun/2024:14:00:00 +0000"))["session"].endswith("|2024-06-15|14")


def test_the_user_is_the_user_name_then_the_session_id_then_ip_and_agent() -> None:
    assert accesslog.parse_line(line(user="alice"))["user_key"] == "user:alice"
    with_session = plugin_mod.load("accesslog", options={"trailing": "session"}).parse(
        {"logline": line(trailer="0F3A9C")})
    assert with_session is not None and with_session["session_id"] == "0F3A9C" and with_session["xff"] == ""
    assert with_session["user_key"] == "session:0F3A9C"
    assert with_session["session"] == "session:0F3A9C|2024-06-15"  # a logged session id and the date
    plain = accesslog.parse_line(line(trailer="198.51.100.7"))
    assert plain["xff"] == "198.51.100.7" and "session_id" not in plain
    with pytest.raises(Exception, match="opt_trailing"):
        plugin_mod.load("accesslog", options={"trailing": "cookie"})


@pytest.mark.parametrize("shape", [{"path": "/static/app.css"}, {"path": "/discover?query=x"},
                                   {"agent": "Mozilla/5.0 (compatible; Googlebot/2.1)"}, {"path": "/bitstream/handle/1/2/a.pdf"}])
def test_only_records_counter_may_count_carry_the_keys(shape: dict[str, str]) -> None:
    """A static file, a search, a robot, or a 404: ``robot`` and no other key (no report counts
    them); the same download by a person, with status 200 or 304, has all of them."""
    keys = {"user_key", "session", "session_hash", "click", "click_slots"}
    for status in (200, 304, 404):
        record = accesslog.parse_line(line(**shape).replace(" 200 1 ", f" {status} 1 "))
        counted = status != 404 and shape.get("path", "").startswith("/bitstream/")
        assert "robot" in record and (keys <= set(record) if counted else not keys & set(record)), (status, record)


def test_long_agents_are_bounded_and_kept_apart() -> None:
    first, second = "A" * 5000 + "1", "A" * 5000 + "2"
    one, two = (accesslog.parse_line(line(agent=a)) for a in (first, second))
    assert len(one["session"]) < 500 and one["session"] != two["session"] and one["click"] != two["click"]
    assert one["user_agent"] == first  # the field itself is untouched


def test_the_original_fields_are_unchanged_and_robots_are_flagged() -> None:
    record = accesslog.parse_line(line(path="/bitstream/handle/1/2/a.pdf", agent="Mozilla/5.0"))
    assert {k: record[k] for k in ("client_ip", "url", "status", "kind", "item_id", "time")} == {
        "client_ip": "192.1.1.168", "url": "/bitstream/handle/1/2/a.pdf", "status": 200, "kind": "download",
        "item_id": "1/2", "time": "2024-06-15T13:35:00+00:00"}
    assert record["robot"] is True  # a bare "Mozilla/5.0" is on the COUNTER list
    assert accesslog.parse_line(line(agent="Mozilla/5.0 (X11; Linux x86_64) Firefox/121.0"))["robot"] is False
    assert accesslog.parse_line(line(agent="Mozilla/5.0 (compatible; Googlebot/2.1)"))["robot"] is True


def test_two_clicks_at_most_30_seconds_apart_always_share_a_slot() -> None:
    rng = random.Random(5)
    pairs = [(t, t + gap) for t in range(1_700_000_000, 1_700_000_000 + 180) for gap in range(31)]
    pairs += [(t, t + rng.randint(0, 30)) for t in (rng.randrange(10**9, 2 * 10**9) for _ in range(20_000))]
    for first, second in pairs:
        assert set(_counter.slots("k", first)) & set(_counter.slots("k", second)), (first, second)
    for first in range(1_700_000_000, 1_700_000_000 + 120):
        assert not set(_counter.slots("k", first)) & set(_counter.slots("k", first + 61))


def test_utc_date_and_hour_for_every_zone_shape() -> None:
    """The hour kept per local hour must not carry its UTC hour over to a later minute: in a
    zone of +05:30 the UTC hour changes at half past, of -09:30 too; seconds past :59 and other
    shapes take the slow path. Each time checked against datetime."""
    from datetime import UTC, datetime

    zones = ["+00:00", "+01:00", "+05:30", "+05:45", "-09:30", "-03:00", "+14:00"]
    rng = random.Random(11)
    for _ in range(20_000):
        stamp = f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:" \
                f"{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}{rng.choice(zones)}"
        when = datetime.fromisoformat(stamp).astimezone(UTC)
        assert _counter.utc_parts(stamp) == (when.date().isoformat(), f"{when.hour:02d}", int(when.timestamp())), stamp
    assert _counter.utc_parts("2024-06-15T13:35:00Z")[1] == "13"


def test_access_log_times_read_from_their_hour_are_those_of_datetime() -> None:
    """A new second of an hour already seen is a few slices (accesslog._stamp): its ISO time,
    UTC date, hour and Unix time must be those datetime gives, in every zone shape."""
    from datetime import UTC, datetime

    months = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
    zones = ["+0000", "+0100", "+0530", "+0545", "-0930", "-0300", "+1400"]
    rng = random.Random(12)
    for _ in range(20_000):
        stamp = f"{rng.randint(1, 28):02d}/{rng.choice(months)}/{rng.randint(1990, 2030)}:" \
                f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d} {rng.choice(zones)}"
        when = datetime.strptime(stamp, "%d/%b/%Y:%H:%M:%S %z")
        utc = when.astimezone(UTC)
        assert accesslog._stamp(stamp) == (when.isoformat(), utc.date().isoformat(), f"{utc.hour:02d}",
                                           int(when.timestamp())), stamp


def test_a_leap_second_counts_as_the_first_second_after_it() -> None:
    """``23:59:60`` (a leap second, which datetime refuses) keeps its time as written, and its
    COUNTER date, hour and Unix time are those of the next second, in any zone; a second of a
    minute seen before it is read as usual."""
    accesslog._stamp("31/Dec/2016:23:59:59 +0000")  # its minute is known: the leap second is not
    assert accesslog._stamp("31/Dec/2016:23:59:60 +0000") == (
        "2016-12-31T23:59:60+00:00", "2017-01-01", "00", 1483228800)
    assert accesslog._stamp("01/Jan/2017:00:59:60 +0100") == (
        "2017-01-01T00:59:60+01:00", "2017-01-01", "00", 1483228800)
    assert accesslog._stamp("01/Jan/2017:00:59:59 +0100") == (
        "2017-01-01T00:59:59+01:00", "2016-12-31", "23", 1483228799)
    record = accesslog.parse_line(line(stamp="31/Dec/2016:23:59:60 +0000"))
    assert record["time"] == "2016-12-31T23:59:60+00:00"
    assert record["session"].endswith("|2017-01-01|00")


def test_a_time_that_cannot_be_is_the_line_s_error_alone() -> None:
    """Hour 25 or day 31 of June is not an access-log time: that line is refused with why (it
    would otherwise reach the index as a time no one can read), the next line is read."""
    good = line(stamp="15/Jun/2024:13:35:00 +0000")
    results = accesslog.parse_batch([line(stamp="15/Jun/2024:25:00:00 +0000"), good,
                                     line(stamp="31/Jun/2024:10:00:00 +0200"), good])
    assert [type(r).__name__ for r in results] == ["ValueError", "dict", "ValueError", "dict"]
    assert "hour" in str(results[0]) and "day" in str(results[2])
    assert results[1] == results[3] == accesslog.parse_line(good)
