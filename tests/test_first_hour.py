"""The README's "The first hour", run as it is written: its commands (``loglines ...``, in the
folder of the config, no ``-c``), its ini blocks and the messages it quotes, in its order, with
real traffic through a real supervisord, an embedded Redis and a local server playing IRUS.

The test does by hand only what the README says in words: the log's path, a free console
port, the endpoint (the local tracker), uncommenting the IRUS section, and the two
``listento`` changes of step 5."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.sinks.test_tracker import BOT, line
from tests.support.procs import REPO, count_seq
from tests.support.servers import free_port, wait_for
from tests.support.tracker_server import TrackerServer

README = REPO / "README.md"
BLOCK = re.compile(r"^( *)```(\w+)\n(.*?)^\1```", re.S | re.M)


def first_hour() -> tuple[str, list[tuple[str, str]]]:
    """The section's text (whitespace folded) and its code blocks, (language, text), in order."""
    text = README.read_text()
    section = text[text.index("## The first hour\n"):text.index("\n## ", text.index("## The first hour\n"))]
    return " ".join(section.split()), [(m.group(2), textwrap.dedent(m.group(3))) for m in BLOCK.finditer(section)]


def quoted(prose: str, start: str, mark: str = '"') -> str:
    """The README's words between two ``mark`` that begin with ``start``."""
    found = re.search(re.escape(mark + start) + "[^" + mark + "]*" + mark, prose)
    assert found, f"the README no longer says {start!r}"
    return found.group(0)[1:-1]


def commands(block: str) -> list[list[str]]:
    return [row.split("#")[0].split() for row in block.splitlines() if row.startswith("loglines ")]


def replace_section(text: str, block: str) -> str:
    name = re.match(r"\[(\w+)\]", block)
    assert name
    pattern = re.compile(r"^\[" + name.group(1) + r"\]\n.*?(?=^\[|^# --|\Z)", re.S | re.M)
    text, count = pattern.subn(lambda _: block + "\n", text)
    assert count == 1, name.group(1)
    return text


def set_key(text: str, section: str, key: str, value: str) -> str:
    pattern = re.compile(r"(^\[" + section + r"\]\n(?:(?!^\[).)*?^" + key + r" = )[^\n]*", re.S | re.M)
    text, count = pattern.subn(lambda m: m.group(1) + value, text)
    assert count == 1, (section, key)
    return text


def traffic(log: Path, first: int, count: int) -> None:
    """Lines of six kinds, by seq % 6: a download, an item page, a thumbnail, a robot's
    download, a download answered 404, a static file."""
    rows = []
    for n in range(first, first + count):
        kind = n % 6
        path = (f"/bitstream/handle/123456789/{n}/thesis.pdf?seq={n}", f"/handle/123456789/{n}?seq={n}",
                f"/bitstream/handle/123456789/{n}/thesis.pdf.jpg?seq={n}",
                f"/bitstream/handle/123456789/{n}/thesis.pdf?seq={n}",
                f"/bitstream/handle/123456789/{n}/gone.pdf?seq={n}", f"/static/style.css?seq={n}")[kind]
        rows.append(line(path, status=404 if kind == 4 else 200, agent=BOT if kind == 3 else
                         "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"))
    with log.open("a") as handle:
        handle.write("\n".join(rows) + "\n")


def seqs(kinds: set[int], upto: int, since: int = 0) -> dict[int, int]:
    return {n: 1 for n in range(since, upto) if n % 6 in kinds}


@pytest.mark.slow
def test_the_first_hour_of_the_readme(tmp_path: Path) -> None:
    prose, blocks = first_hour()
    assert [kind for kind, _ in blocks] == ["sh", "ini", "sh", "sh", "ini", "ini", "sh", "sh"]
    (start, parse_block, go, look, archive_block, copy_block, apply, stop) = [b for _, b in blocks]
    env = {k: v for k, v in os.environ.items() if k != "LOGLINES_CONFIG"} | {"PYTHONPATH": str(REPO)}

    def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
        assert argv[0] == "loglines"
        return subprocess.run([sys.executable, "-m", "pipeline", *argv[1:]], capture_output=True,
                              text=True, env=env, cwd=tmp_path, timeout=300)

    cfg = tmp_path / "loglines.cfg"
    log = tmp_path / "access.log"
    with TrackerServer() as tracker:
        # 1. init, check; init again leaves it as it is
        init, check = (run(argv) for argv in commands(start))
        assert init.returncode == 0 and "wrote" in init.stdout
        assert check.returncode == 0, check.stderr
        if not Path("/var/log/apache2/access.log").exists():
            assert "logfile '/var/log/apache2/access.log' matches no file yet" in check.stderr
        written = cfg.read_text()
        assert "exists: left unchanged" in run(["loglines", "init"]).stdout and cfg.read_text() == written

        # 2. the edits the README names
        text = written.replace("/var/log/apache2/access.log", str(log)).replace("port = 9001", f"port = {free_port()}")
        text = replace_section(text, parse_block)
        head, _, irus = text.partition("#[worker_irus]")
        irus = "\n".join(row[1:] if row.startswith("#") else row for row in ("#[worker_irus]" + irus).splitlines())
        text = set_key(head + irus + "\n", "worker_irus", "endpoint_url", tracker.url)
        cfg.write_text(text)
        log.write_text("")

        # 3. check, up
        check, up = (run(argv) for argv in commands(go))
        assert check.returncode == 0, check.stderr
        assert quoted(prose, "OK (6 workers:", "`") in " ".join(check.stdout.split())
        assert up.returncode == 0, up.stderr
        port = re.search(r"^port = (\d+)$", text, re.M)
        assert port and f"web console: http://127.0.0.1:{port.group(1)}/" in up.stdout
        try:
            # 4. traffic, status
            traffic(log, 0, 60)
            wait_for(lambda: len(tracker.accepted()) >= 20, timeout=90, what="20 events at the tracker")
            (status_argv,) = commands(look)
            expected = ("worker_irus: sent 20, not counted 20, refused 0, parked 0, retrying 0 "
                        "(in the failed list)")
            wait_for(lambda: expected in run(status_argv).stdout, timeout=30, what=expected)
            status = run(status_argv).stdout
            size = log.stat().st_size
            assert f"{log} logger_access {size} {size} 0".split() in [row.split() for row in status.splitlines()]
            shown = re.sub(r"\d+", "N", quoted(prose, "worker_irus: sent", "`"))
            assert shown == re.sub(r"\d+", "N", expected)  # the README shows the line as it is

            # 5. the mistake: a file logger on the watcher's queue; check and reload refuse it
            cfg.write_text(cfg.read_text() + "\n" + archive_block)
            refused = run(["loglines", "check"])
            assert refused.returncode == 1
            said = quoted(prose, "queue `access` is read by")
            assert said.endswith("use a broker `fanout` or chain them")
            assert said in " ".join(refused.stderr.split())
            assert run(["loglines", "reload"]).returncode == 1

            # the README's way out: a broker's copies
            text = set_key(cfg.read_text() + "\n" + copy_block, "worker_parse", "listento", "to_parse")
            cfg.write_text(set_key(text, "logger_archive", "listento", "to_archive"))
            check, reload = (run(argv) for argv in commands(apply))
            assert check.returncode == 0, check.stderr
            assert reload.returncode == 0, reload.stderr
            assert {"worker_copy: added and started", "logger_archive: added and started",
                    "worker_parse: restarted (its configuration changed)"} <= set(reload.stdout.splitlines())
            traffic(log, 60, 60)
            out = tmp_path / "var" / "out"
            wait_for(lambda: len(count_seq(out / "access-archive.log")[0]) >= 60 and len(tracker.accepted()) >= 40,
                     timeout=90, what="the second 60 lines through")
            wait_for(lambda: len(count_seq(out / "not_counted.ndjson")[0]) >= 40, timeout=30, what="not counted")

            # every line where it belongs, once
            assert count_seq(out / "downloads.ndjson")[0] == seqs({0, 1, 3, 4}, 120)
            assert count_seq(out / "other.log")[0] == seqs({2, 5}, 120)
            assert count_seq(out / "not_counted.ndjson")[0] == seqs({3, 4}, 120)
            assert count_seq(out / "access-archive.log")[0] == seqs(set(range(6)), 120, since=60)
            sent = [int(p["svc_dat"].rsplit("=", 1)[1]) for p in tracker.accepted()]
            assert sorted(sent) == sorted(seqs({0, 1}, 120))
            assert {p["rft_dat"] for p in tracker.accepted()} == {"Request", "Investigation"}
        finally:
            # 6. down
            (down_argv,) = commands(stop)
            down = run(down_argv)
        assert down.returncode == 0 and down.stdout.strip().endswith("stopped"), down
        assert not (tmp_path / "var" / "supervisord.pid").exists()
