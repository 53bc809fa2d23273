"""The watcher against a real Redis: offsets, rotation, truncation, inode reuse, odd bytes."""

from __future__ import annotations

import base64
import dataclasses
import os
import random
import time
from pathlib import Path

import redis

from pipeline.core import message
from pipeline.core.keys import Keys
from pipeline.core.lifecycle import Flags
from pipeline.sources.fileid import FileState
from pipeline.sources.tailer import Tail
from pipeline.sources.watcher import Watcher, WatcherOptions

K = Keys()


def make(path: Path | str, **kw: object) -> WatcherOptions:
    base = {"logfile": (str(path),), "pushto": "out", "servicename": "svc", "close_after_s": 0.0}
    base.update(kw)
    return WatcherOptions(**base)  # type: ignore[arg-type]


def start(r: redis.Redis, opts: WatcherOptions) -> Watcher:
    w = Watcher("w", opts, r, K, Flags())
    w.load_state()
    w.rescan(first=True)
    return w


def step(w: Watcher) -> None:
    w.pump()
    w.flush_due(force=True)
    w.rescan()
    w.close_finished()
    w.pump()
    w.flush_due(force=True)


def read_only(w: Watcher) -> None:
    """Read every file to its end without committing (what a watcher killed mid-pump holds)."""
    for tail in w.tails.values():
        while tail.read(1 << 20):
            pass


def pushed(r: redis.Redis) -> list[dict]:
    return [item for raw in r.lrange(K.queue("out"), 0, -1) for item in message.decode(raw, 1 << 30)]


def lines_of(r: redis.Redis) -> list[str]:
    return [i["logline"] for i in pushed(r)]


def stop(w: Watcher) -> None:
    for tail in w.tails.values():
        tail.close()


def test_lines_batches_and_ids(r: redis.Redis, tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("".join(f"line {n}\n" for n in range(1200)))
    w = start(r, make(log, batch_lines=500))
    step(w)
    sizes = [len(message.decode(x, 1 << 30)) for x in r.lrange(K.queue("out"), 0, -1)]
    assert sizes == [500, 500, 200]
    items = pushed(r)
    assert [i["logline"] for i in items] == [f"line {n}" for n in range(1200)]
    assert items[1]["off"] == len("line 0\n") and items[0]["service"] == "svc"
    text = log.read_bytes()
    assert all(text[i["off"]:].startswith(f'{i["logline"]}\n'.encode()) for i in items)  # across commits too
    assert len({(i["src"], i["off"]) for i in items}) == 1200
    state = FileState.loads(r.hget(K.offsets("w"), next(iter(w.tails))))
    assert state.offset == log.stat().st_size
    stop(w)


def test_offset_saved_with_push_and_resume_after_restart(r: redis.Redis, tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("one\ntwo\n")
    w = start(r, make(log))
    step(w)
    stop(w)  # crash: nothing else kept
    with log.open("a") as f:
        f.write("three\n")
    w2 = start(r, make(log))
    step(w2)
    assert lines_of(r) == ["one", "two", "three"]
    stop(w2)


def test_partial_line_waits_for_its_newline(r: redis.Redis, tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("full\npart")
    w = start(r, make(log))
    step(w)
    assert lines_of(r) == ["full"]
    with log.open("a") as f:
        f.write("ial\n")
    step(w)
    assert lines_of(r) == ["full", "partial"]
    stop(w)


def test_start_end_skips_existing_content_only_on_first_sight(r: redis.Redis, tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("old\n")
    w = start(r, make(log, start="end"))
    with log.open("a") as f:
        f.write("new\n")
    step(w)
    assert lines_of(r) == ["new"]
    stop(w)


def test_rename_rotation_finishes_old_then_new(r: redis.Redis, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_text("a1\n")
    w = start(r, make(log))
    step(w)
    with log.open("a") as f:
        f.write("a2\n")  # written before rotation, not read yet
    log.rename(tmp_path / "access.log.1")
    with (tmp_path / "access.log.1").open("a") as f:
        f.write("a3\n")  # the server still writes the old file briefly
    log.write_text("b1\n")
    step(w)
    assert lines_of(r) == ["a1", "a2", "a3", "b1"]
    assert len(w.tails) == 1
    stop(w)


def test_rotation_while_stopped(r: redis.Redis, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_text("a1\n")
    w = start(r, make(log))
    step(w)
    stop(w)
    with log.open("a") as f:
        f.write("a2\n")
    log.rename(tmp_path / "access.log.1")
    log.write_text("b1\nb2\n")
    w2 = start(r, make(log))
    step(w2)
    assert lines_of(r) == ["a1", "a2", "b1", "b2"]
    stop(w2)


def test_file_rotated_and_watcher_killed_before_its_first_commit(r: redis.Redis, tmp_path: Path) -> None:
    """The watcher opened a file, read lines it had not committed yet, the file was rotated
    and the watcher died: the next start still knows the file and reads it from the start."""
    log = tmp_path / "access.log"
    log.write_text("")
    w = start(r, make(log))
    with log.open("a") as f:
        f.write("a1\na2\n")
    read_only(w)  # read, not committed yet
    assert lines_of(r) == []
    stop(w)  # killed
    log.rename(tmp_path / "access.log.1")
    log.write_text("b1\n")
    w2 = start(r, make(log))
    step(w2)
    assert sorted(lines_of(r)) == ["a1", "a2", "b1"]
    stop(w2)


def test_rotated_file_deleted_while_stopped_reports_gap(r: redis.Redis, tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    log = tmp_path / "access.log"
    log.write_text("a1\n")
    w = start(r, make(log))
    step(w)
    stop(w)
    log.rename(tmp_path / "access.log.1")
    (tmp_path / "access.log.1").unlink()
    log.write_text("b1\n")
    w2 = start(r, make(log))
    step(w2)
    assert lines_of(r) == ["a1", "b1"]
    assert "GAP" in caplog.text
    stop(w2)


def test_a_folder_that_cannot_be_read_is_named_once_and_the_other_files_flow(  # type: ignore[no-untyped-def]
        r: redis.Redis, tmp_path: Path, caplog) -> None:
    """A folder the watcher cannot list (here a path through a regular file) is said once, by
    name and error, and the files of the other patterns are read."""
    log = tmp_path / "access.log"
    log.write_text("a1\n")
    (tmp_path / "plain").write_text("not a folder\n")
    w = start(r, make(log, logfile=(str(log), str(tmp_path / "plain" / "*.log"))))
    step(w)
    log.write_text("a1\na2\n")
    step(w)
    assert lines_of(r) == ["a1", "a2"]
    assert caplog.text.count("cannot read the folder") == 1
    assert "plain" in caplog.text and "Not a directory" in caplog.text
    stop(w)


def test_copytruncate_and_truncation_restart_from_zero(r: redis.Redis, tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    log = tmp_path / "a.log"
    log.write_text("one\ntwo\nthree\n")
    w = start(r, make(log))
    step(w)
    os.truncate(log, 0)
    with log.open("a") as f:
        f.write("four\n")
    step(w)
    assert lines_of(r) == ["one", "two", "three", "four"]
    assert "truncated" in caplog.text
    stop(w)


def test_truncation_refilled_past_offset_is_detected_by_fingerprint(r: redis.Redis, tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("aaaa\n")
    w = start(r, make(log))
    step(w)
    with log.open("r+") as f:  # truncated and rewritten longer before the watcher looked
        f.truncate(0)
        f.write("bbbbbbbbbb\ncc\n")
    step(w)
    assert lines_of(r) == ["aaaa", "bbbbbbbbbb", "cc"]
    stop(w)


def test_inode_reuse_is_not_mistaken_for_the_old_file(r: redis.Redis, tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("old file line\n")
    w = start(r, make(log))
    step(w)
    stop(w)
    state = FileState.loads(next(iter(r.hvals(K.offsets("w")))))
    log.unlink()
    log.write_text("new\n")
    new_ino = log.stat().st_ino
    if new_ino != state.ino:  # make the saved state claim this inode, as a recycled inode would
        fake = FileState(state.path, log.stat().st_dev, new_ino, state.sid, state.fplen, state.fp, state.offset)
        r.delete(K.offsets("w"))
        r.hset(K.offsets("w"), fake.key, fake.dumps())
    w2 = start(r, make(log))
    step(w2)
    assert lines_of(r) == ["old file line", "new"]
    stop(w2)


def test_runs_and_odd_lines_keep_file_order_offsets_and_batch_sizes(r: redis.Redis, tmp_path: Path) -> None:
    """Plain lines travel as runs, odd ones (control characters, bad UTF-8, too long) as whole
    items between them; every item's offset points at its line in the file."""
    log = tmp_path / "a.log"
    lines = []
    for n in range(1300):
        line = f'{n} caf\u00e9 "q" back\\slash \u65e5\u672c'.encode()
        if n % 97 == 5:
            line = b"ctl\x01" + line
        elif n % 89 == 7:
            line = b"bad\xff" + line
        elif n % 83 == 9:
            line = b"L" * 300 + line
        lines.append(line)
    data = b"\n".join(lines) + b"\n"
    cut = data.index("\u65e5".encode(), 20000) + 1  # the second read starts inside a character
    log.write_bytes(data[:cut])
    w = start(r, make(log, batch_lines=100, max_line_bytes=250))
    step(w)
    with log.open("ab") as f:
        f.write(data[cut:])
    step(w)
    raws = r.lrange(K.queue("out"), 0, -1)
    assert max(len(message.decode(raw, 1 << 30)) for raw in raws) == 100
    assert any(b'"loglines":' in raw for raw in raws)
    items = pushed(r)
    assert len(items) == 1300
    for item, line in zip(items, lines, strict=True):
        off = item["off"]
        if "trunc" in item:
            assert item["trunc"] == len(line) and data[off:off + len(line)] == line
        elif "raw_b64" in item:
            assert base64.b64decode(item["raw_b64"]) == line == data[off:off + len(line)]
        else:
            assert item["logline"].encode() == line == data[off:off + len(line)]
        assert data[off + len(line):off + len(line) + 1] == b"\n"
    stop(w)


def test_long_lines_truncated_and_flagged_tailing_goes_on(r: redis.Redis, tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"x" * 5000 + b"\nshort\n" + b"y" * 3000)
    w = start(r, make(log, max_line_bytes=1000))
    step(w)
    with log.open("ab") as f:
        f.write(b"y" * 3000 + b"\nafter\n")
    step(w)
    items = pushed(r)
    assert [(len(i["logline"]), i.get("trunc")) for i in items] == [(1000, 5000), (5, None), (1000, 6000), (5, None)]
    assert items[2]["off"] == 5007 and items[3]["off"] == 5007 + 6001
    stop(w)


def test_invalid_utf8_and_binary_carried_without_loss(r: redis.Redis, tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    raw = [b"caf\xc3\xa9 ok", b"bad \xff\xfe bytes", bytes(range(0, 10)) + bytes(range(11, 256))]
    log.write_bytes(b"\n".join(raw) + b"\n")
    w = start(r, make(log))
    step(w)
    items = pushed(r)
    assert items[0]["logline"] == "café ok" and "raw_b64" not in items[0]
    for item, original in zip(items[1:], raw[1:], strict=True):
        assert base64.b64decode(item["raw_b64"]) == original
    stop(w)


def test_glob_and_symlink_outside_allowed_roots(r: redis.Redis, tmp_path: Path) -> None:
    root, outside = tmp_path / "logs", tmp_path / "secret"
    root.mkdir()
    outside.mkdir()
    (root / "a.log").write_text("a\n")
    (root / "b.log").write_text("b\n")
    (outside / "passwd").write_text("root:x:0:0\n")
    (root / "c.log").symlink_to(outside / "passwd")
    w = start(r, make(root / "*.log", allowed_roots=(str(root),)))
    step(w)
    assert sorted(lines_of(r)) == ["a", "b"]
    stop(w)


def test_uncertain_commit_is_not_pushed_twice(r: redis.Redis, tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("one\n")
    w = start(r, make(log))
    read_only(w)
    tail = next(iter(w.tails.values()))
    w._commit([(tail, 1)])
    # pretend the reply was lost: the same lines are pending again and the commit is uncertain
    tail._add_run(0, [b"one"])
    tail.state = FileState(**{**tail.state.__dict__, "offset": 0})

    w._commit([(tail, 1)])
    assert lines_of(r) == ["one"]
    stop(w)


def test_commit_whose_reply_was_lost_is_not_repeated_by_a_larger_one(r: redis.Redis, tmp_path: Path) -> None:
    """A commit went through, Redis died before replying, and more lines were read before it
    came back: the watcher goes on after what Redis holds instead of pushing all of it."""
    log = tmp_path / "a.log"
    log.write_text("one\ntwo\n")
    w = start(r, make(log, batch_lines=2))
    w.pump()  # a full batch: committed
    assert lines_of(r) == ["one", "two"]
    tail = next(iter(w.tails.values()))
    tail._add_run(0, [b"one", b"two"])  # the reply was lost: memory is still before the commit
    tail.state = FileState(**{**tail.state.__dict__, "offset": 0})

    with log.open("a") as f:
        f.write("three\nfour\n")
    tail.read(1 << 20)  # read while Redis was away
    w.resync()  # what the run loop does once Redis answers again
    step(w)
    assert lines_of(r) == ["one", "two", "three", "four"]
    stop(w)


def _random_line(rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.55:
        return "".join(rng.choice('ab "\\/-[]\t') for _ in range(rng.randint(0, 90))).encode()
    if roll < 0.75:
        return "".join(rng.choice("a\u00e9\u65e5\U0001f600 \"") for _ in range(rng.randint(0, 60))).encode()
    if roll < 0.85:
        return bytes(rng.choice([b for b in range(256) if b != 10]) for _ in range(rng.randint(1, 40)))
    return b"L" * rng.randint(100, 400)


def _commit_some(tail: Tail, n: int, size: int, items: list[dict]) -> None:
    """What the watcher's commit does with a tail, without Redis."""
    batch, end = tail.messages(n, size)
    for raw in batch:
        items.extend(message.decode(raw, 1 << 30))
    tail.drop(n, end)
    tail.state = dataclasses.replace(tail.state, offset=end)


def test_tail_delivers_every_line_once_whatever_the_read_and_commit_sizes(tmp_path: Path) -> None:
    """Random text, UTF-8, binary and over-long lines, read in random pieces and committed in
    random amounts and message sizes: the items are exactly the file's lines, at their offsets."""
    from pipeline.sources.fileid import new_state

    rng = random.Random(100)
    for trial in range(150):
        lines = [_random_line(rng) for _ in range(rng.randint(1, 300))]
        terminated = rng.random() < 0.7
        data = b"\n".join(lines) + (b"\n" if terminated else b"")
        path = tmp_path / f"t{trial}.log"
        path.write_bytes(data)
        fd = os.open(path, os.O_RDONLY)
        max_line = rng.choice([40, 150, 1000])
        tail = Tail(str(path), fd, new_state(str(path), fd, 0), "svc", max_line)
        items: list[dict] = []
        while tail.read(rng.randint(1, 700)):
            if rng.random() < 0.5:
                _commit_some(tail, rng.randint(0, tail.pending), rng.randint(1, 60), items)
        tail.flush_partial()
        _commit_some(tail, tail.pending, rng.randint(1, 60), items)
        os.close(fd)
        assert tail.state.offset == len(data) and tail.pending == 0
        expected = lines if terminated or lines[-1] else lines[:-1]  # an empty unterminated one is none
        assert len(items) == len(expected), trial
        offset = 0
        for item, line in zip(items, expected, strict=True):
            head = line[:max_line]
            assert item["off"] == offset and item["service"] == "svc"
            if "raw_b64" in item:
                assert base64.b64decode(item["raw_b64"]) == head
            else:
                assert item["logline"].encode() == head, trial
            assert item.get("trunc", 0) == (len(line) if len(line) > max_line else 0)
            offset += len(line) + 1


def _seq_line(rng: random.Random, seq: int) -> bytes:
    body = _random_line(rng) if rng.random() < 0.5 else b"GET /x"
    return f"{seq} seq= ".encode() + body.replace(b"\n", b" ") + b"\n"


def test_watcher_delivers_each_line_once_through_random_rotations_restarts_and_reads(
        r: redis.Redis, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Random appends (some cut mid-line), rename rotations, crashes (the process forgets what
    it had not committed) and read sizes: every line reaches the queue exactly once."""
    import re

    import pipeline.sources.files as files_mod

    rng = random.Random(21)
    log = tmp_path / "access.log"
    log.write_bytes(b"")
    opts = make(log, batch_lines=rng.choice([3, 7, 50]), max_line_bytes=120)
    w = start(r, opts)
    written, rotations, rest = 0, 0, b""
    for _ in range(400):
        roll = rng.random()
        if roll < 0.4:
            with log.open("ab") as f:
                f.write(rest)
                rest = b""
                for _ in range(rng.randint(1, 25)):
                    line = _seq_line(rng, written)
                    written += 1
                    if rng.random() < 0.1:  # the writer is cut off mid-line; the rest comes later
                        cut = rng.randint(1, len(line) - 1)
                        f.write(line[:cut])
                        rest = line[cut:]
                        break
                    f.write(line)
        elif roll < 0.5 and not rest:
            # the watcher has seen the file (it rescans every rescan_ms: one created and rotated
            # away between two rescans is never seen; a glob such as access.log* would find it)
            w.rescan()
            rotations += 1
            log.rename(tmp_path / f"access.log.{rotations}")
            log.write_bytes(b"")
        elif roll < 0.58:
            stop(w)  # a crash: lines read but not committed are forgotten
            w = start(r, opts)
        else:
            monkeypatch.setattr(files_mod, "READ_BUDGET", rng.randint(1, 600))
            w.pump()
            w.flush_due(force=rng.random() < 0.5)
            if rng.random() < 0.3:
                w.rescan()
                w.close_finished()
    with log.open("ab") as f:
        f.write(rest)
    monkeypatch.setattr(files_mod, "READ_BUDGET", 1 << 20)
    for _ in range(3):
        step(w)
    stop(w)
    seqs = [int(m.group(1)) for m in (re.match(r"(\d+) seq= ", line) for line in lines_of(r)) if m]
    assert len(seqs) == len(lines_of(r)) and rotations > 3
    assert sorted(seqs) == list(range(written))


def test_stop_after_a_commit_whose_reply_was_lost_pushes_nothing_twice(r: redis.Redis, redis_server,  # type: ignore[no-untyped-def]
                                                                       tmp_path: Path) -> None:
    """Driven through run() with the stop flag: a commit goes through but its reply is lost,
    Redis then refuses connections while more lines are read, and the stop comes right after
    it answers again: the last flush must follow what Redis holds (the bug fixed in bb1820b
    lived on on the stop path)."""
    import threading

    from pipeline.config import RedisConfig
    from pipeline.core.connection import connect
    from tests.support.proxy import FaultProxy
    from tests.support.servers import wait_for

    proxy = FaultProxy(redis_server.port)
    client = connect(RedisConfig(url=proxy.url, embedded=False, socket_timeout=1, block_timeout=0.5))
    log = tmp_path / "a.log"
    log.write_bytes(b"")
    flags = Flags()
    w = Watcher("w", make(log, batch_lines=500, batch_ms=50, poll_ms=20), client, K, flags)
    thread = threading.Thread(target=w.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: w.tails, what="the watcher tailing")
        proxy.swallow_reply_to = b"EXEC"  # the next transaction is applied; its reply never comes
        with log.open("a") as f:
            f.write("".join(f"line {n}\n" for n in range(20)))
        assert proxy.swallowed.wait(10)
        with proxy.refusing():
            wait_for(lambda: len(lines_of(r)) == 20, what="the swallowed commit applied")
            with log.open("a") as f:
                f.write("".join(f"line {n}\n" for n in range(20, 25)))
            time.sleep(1.5)  # read while Redis refuses
        flags.stop = True
        thread.join(30)
        assert not thread.is_alive()
        assert lines_of(r) == [f"line {n}" for n in range(25)]
    finally:
        flags.stop = True
        proxy.close()


def test_messages_stay_under_the_cap_and_a_small_bulk_limit(tmp_path: Path) -> None:
    """Lines near max_line_bytes make messages of their own, never one message over the cap;
    with a Redis whose proto-max-bulk-len is 1 MB, three 600 KB lines no longer make a message
    it refuses (and retries forever, holding back every other file)."""
    from tests.support.servers import RedisServer

    server = RedisServer(tmp_path / "redis", None, "--proto-max-bulk-len", "1mb").start()
    try:
        r = server.client()
        big, small = tmp_path / "big.log", tmp_path / "small.log"
        big.write_bytes(b"".join(bytes([97 + n]) * 600_000 + b"\n" for n in range(3)))
        small.write_text("".join(f"small {n}\n" for n in range(10)))
        w = start(r, make(tmp_path / "*.log"))
        step(w)
        raws = r.lrange(K.queue("out"), 0, -1)
        assert max(map(len, raws)) < 1024 * 1024
        lines = [i["logline"] for raw in raws for i in message.decode(raw, 1 << 24)]
        assert sorted(lines) == sorted([chr(97 + n) * 600_000 for n in range(3)] +
                                       [f"small {n}" for n in range(10)])
        stop(w)
        huge = tmp_path / "huge.log"
        huge.write_bytes(b"".join(b"%d" % n + b"y" * 999_000 + b"\n" for n in range(70)))
        r.delete(K.queue("out"))
        w = start(r, make(huge))
        while w.pump():  # what run() does: pump again while there is more to read
            pass
        w.flush_due(force=True)
        raws = r.lrange(K.queue("out"), 0, -1)
        assert len(raws) == 70 and all(len(raw) < 1_100_000 for raw in raws)
        assert [len(i["logline"]) for raw in raws for i in message.decode(raw, 1 << 24)] == \
            [len(b"%d" % n) + 999_000 for n in range(70)]
        stop(w)
    finally:
        server.stop()


def _copytruncate(log: Path, copy: Path) -> None:
    import shutil

    shutil.copyfile(log, copy)
    os.truncate(log, 0)


def test_copytruncate_with_a_glob_that_matches_the_copy_reads_each_line_once(
        r: redis.Redis, tmp_path: Path) -> None:
    """100 lines, copytruncate, 10 lines, with logfile = access.log*: 110 lines (before: 210,
    the copy read again from 0 under a new source id). Whether the watcher sees the truncation
    first, the copy first, or both between two looks."""
    for order in ("truncation first", "copy first", "both at once"):
        r.flushall()
        folder = tmp_path / order.replace(" ", "-")
        folder.mkdir()
        log = folder / "access.log"
        log.write_text("".join(f"line {n}\n" for n in range(100)))
        w = start(r, make(folder / "access.log*"))
        step(w)
        with log.open("a") as f:
            f.write("".join(f"line {n}\n" for n in range(100, 105)))  # unread when rotated
        if order == "copy first":
            import shutil

            shutil.copyfile(log, folder / "access.log.1")
            w.rescan()
            os.truncate(log, 0)
        elif order == "truncation first":
            _copytruncate(log, folder / "access.log.1")
            (folder / "access.log.1").rename(folder / "hidden")
            w.pump()  # sees the truncation
            (folder / "hidden").rename(folder / "access.log.1")
        else:
            _copytruncate(log, folder / "access.log.1")
        with log.open("a") as f:
            f.write("".join(f"line {n}\n" for n in range(105, 115)))
        for _ in range(3):
            step(w)
        assert sorted(lines_of(r), key=lambda t: int(t.split()[1])) == [f"line {n}" for n in range(115)], order
        stop(w)


def test_watcher_delivers_each_line_once_through_random_copytruncates_restarts_and_reads(
        r: redis.Redis, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """As the rename test, with copytruncate rotations and a glob that matches the copies
    (the copy and the truncation happen with no write between them: what copytruncate loses
    by nature, the lines written between its two steps, is not the watcher's to keep)."""
    import re

    import pipeline.sources.files as files_mod

    rng = random.Random(22)
    log = tmp_path / "access.log"
    log.write_bytes(b"")
    opts = make(tmp_path / "access.log*", batch_lines=rng.choice([3, 7, 50]), max_line_bytes=120)
    w = start(r, opts)
    written, rotations, rest = 0, 0, b""
    for _ in range(400):
        roll = rng.random()
        if roll < 0.4:
            with log.open("ab") as f:
                f.write(rest)
                rest = b""
                for _ in range(rng.randint(1, 25)):
                    line = _seq_line(rng, written)
                    written += 1
                    if rng.random() < 0.1:
                        cut = rng.randint(1, len(line) - 1)
                        f.write(line[:cut])
                        rest = line[cut:]
                        break
                    f.write(line)
        elif roll < 0.5 and not rest and log.stat().st_size > 0:
            rotations += 1
            _copytruncate(log, tmp_path / f"access.log.{rotations}")
            if rng.random() < 0.5:
                w.rescan()
        elif roll < 0.58:
            stop(w)  # a crash: lines read but not committed are forgotten
            w = start(r, opts)
        else:
            monkeypatch.setattr(files_mod, "READ_BUDGET", rng.randint(1, 600))
            w.pump()
            w.flush_due(force=rng.random() < 0.5)
            if rng.random() < 0.3:
                w.rescan()
                w.close_finished()
    with log.open("ab") as f:
        f.write(rest)
    monkeypatch.setattr(files_mod, "READ_BUDGET", 1 << 20)
    for _ in range(4):
        step(w)
    stop(w)
    seqs = [int(m.group(1)) for m in (re.match(r"(\d+) seq= ", line) for line in lines_of(r)) if m]
    assert len(seqs) == len(lines_of(r)) and rotations > 3
    assert sorted(seqs) == list(range(written))


def test_allowed_roots_cannot_be_raced_by_swapping_a_name(r: redis.Redis, tmp_path: Path) -> None:
    """race.log flips between an empty file and a symlink to a file outside allowed_roots while
    the watcher rescans: the decision is made on the open descriptor, so the outside file's
    content never reaches the queue (before: 38 dead letters of it within a second)."""
    import threading

    root, outside = tmp_path / "logs", tmp_path / "secret"
    root.mkdir()
    outside.mkdir()
    (outside / "shadow").write_text("".join(f"root:SECRET{n}\n" for n in range(50)))
    race = root / "race.log"
    stop_flag = threading.Event()

    def swap() -> None:
        while not stop_flag.is_set():
            for make_link in (True, False):
                tmp = root / "race.tmp"
                if make_link:
                    tmp.symlink_to(outside / "shadow")
                else:
                    tmp.write_text("")
                os.replace(tmp, race)

    race.write_text("")
    w = start(r, make(root / "*.log", allowed_roots=(str(root),)))
    swapper = threading.Thread(target=swap, daemon=True)
    swapper.start()
    try:
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            w.rescan()
            w.pump()
            w.flush_due(force=True)
    finally:
        stop_flag.set()
        swapper.join(5)
    stop(w)
    assert not any("SECRET" in line for line in lines_of(r))


def test_a_fifo_swapped_in_is_skipped_and_hangs_nothing(r: redis.Redis, tmp_path: Path) -> None:
    import threading

    log = tmp_path / "a.log"
    log.write_text("one\n")
    w = start(r, make(tmp_path / "*.log"))
    step(w)
    os.mkfifo(tmp_path / "b.log")  # no writer: a blocking open would never return
    done = threading.Event()

    def scan() -> None:
        step(w)
        done.set()

    threading.Thread(target=scan, daemon=True).start()
    assert done.wait(5), "the watcher hung on a FIFO"
    with log.open("a") as f:
        f.write("two\n")
    step(w)
    assert lines_of(r) == ["one", "two"]
    stop(w)


def test_more_files_than_descriptors_are_all_read_once(r: redis.Redis, tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    """A glob matching far more files than max_open_files (or the descriptor limit allows):
    idle files are closed and reopened by identity when they grow, every line read once,
    and no warning repeats on every rescan."""
    import resource

    for n in range(300):
        (tmp_path / f"f{n:03d}.log").write_text(f"{n} first\n")
    w = start(r, make(tmp_path / "*.log", max_open_files=40))
    for _ in range(12):
        step(w)
    assert len(w.tails) <= 40
    for n in range(0, 300, 7):
        with (tmp_path / f"f{n:03d}.log").open("a") as f:
            f.write(f"{n} second\n")
    (tmp_path / "f005.log").rename(tmp_path / "rotated.old")  # rotated away while closed
    with (tmp_path / "rotated.old").open("a") as f:
        f.write("5 late\n")
    for _ in range(12):
        step(w)
    expected = [f"{n} first" for n in range(300)] + [f"{n} second" for n in range(0, 300, 7)] + ["5 late"]
    assert sorted(lines_of(r)) == sorted(expected)
    assert caplog.text.count("files are open") <= 1
    stop(w)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        assert Watcher("w", make(tmp_path / "*.log"), r, K, Flags()).files.max_open == 256 - 64
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_batch_goes_out_as_soon_as_the_file_has_no_more(r: redis.Redis, tmp_path: Path) -> None:
    """batch_ms is an hour, the batch far from full: the lines still go out on the first pump
    that reads the file to its end; only lines read while the file keeps growing wait."""
    log = tmp_path / "a.log"
    log.write_text("".join(f"line {n}\n" for n in range(3)))
    w = start(r, make(log, batch_lines=500, batch_ms=3_600_000))
    try:
        w.pump()  # no flush_due: nothing is due for an hour
        assert lines_of(r) == ["line 0", "line 1", "line 2"]
        assert r.llen(K.queue("out")) == 1
        with log.open("a") as f:
            f.write("line 3\n")
        w.pump()
        assert lines_of(r)[-1] == "line 3" and w.first_pending_at is None
    finally:
        stop(w)
