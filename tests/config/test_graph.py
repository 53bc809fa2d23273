"""loglines check reads the pipeline as a graph of queues: split queues, loops, queues with one
end missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import config
from pipeline.cli import main
from pipeline.config import graph

HEAD = "[supervisor]\npassword = x\n\n[redis]\nurl = redis://127.0.0.1:1/0\n\n"

STARTER = """
[logger_access]
type = watcher
logfile = {log}
pushto = access

[worker_parse]
type = parser
listento = access
plugin = accesslog
pushto = downloads
accept = kind=download
other_queue = other

[logger_downloads]
type = filelogger
listento = downloads
logfile = downloads.ndjson

[logger_other]
type = filelogger
listento = other
logfile = other.log
"""

TRACKER_ON_ACCESS = """
[worker_irus]
type = tracker
listento = access
repository_plugin = repository
endpoint_url = https://irus.jisc.ac.uk/counter/
opt_oai_host = repo.example.ac.uk
"""


def problems(tmp_path: Path, body: str, head: str = HEAD) -> list[graph.Problem]:
    path = tmp_path / "loglines.cfg"
    (tmp_path / "access.log").touch()
    path.write_text(head + body.replace("{log}", str(tmp_path / "access.log")))
    return graph.check(config.load(path))


def test_the_starter_pipeline_has_nothing_to_say(tmp_path: Path) -> None:
    assert problems(tmp_path, STARTER) == []


def test_two_sections_reading_one_queue_is_an_error(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """The README's old tracker block pasted beside the starter parser: each took about half of
    `access`, and each sink silently lost the other half."""
    found = problems(tmp_path, STARTER + TRACKER_ON_ACCESS)
    assert found[0].error
    assert found[0].message.startswith(
        "queue `access` is read by worker_parse and worker_irus: each message reaches only one of "
        "them; use a broker `fanout` or chain them")
    assert "set `shared_queue = yes` in worker_parse and worker_irus" in found[0].message
    path = tmp_path / "loglines.cfg"
    assert main(["-c", str(path), "check"]) == 1
    err = capsys.readouterr().err
    assert "loglines: error: queue `access` is read by worker_parse and worker_irus: each message " \
           "reaches only one of them; use a broker `fanout` or chain them" in err
    assert "1 error above" in err


def test_a_split_can_be_meant_and_numprocs_is_not_a_split(tmp_path: Path) -> None:
    body = STARTER.replace("other_queue = other\n", "other_queue = other\nnumprocs = 4\n")
    assert problems(tmp_path, body) == []
    meant = (STARTER.replace("other_queue = other\n", "other_queue = other\nshared_queue = yes\n")
             + TRACKER_ON_ACCESS + "shared_queue = yes\n")
    assert not any(p.error for p in problems(tmp_path, meant))
    half = (STARTER.replace("other_queue = other\n", "other_queue = other\nshared_queue = yes\n")
            + TRACKER_ON_ACCESS)
    found = problems(tmp_path, half)
    assert found[0].error and found[0].message.endswith("set `shared_queue = yes` in worker_irus)")
    lonely = problems(tmp_path, STARTER.replace("other_queue = other\n", "other_queue = other\nshared_queue = yes\n"))
    assert [p.message for p in lonely] == [
        "[worker_parse] says shared_queue = yes, but no other section reads queue `access`"]


def test_a_typo_between_two_workers_is_named_from_both_ends(tmp_path: Path) -> None:
    body = STARTER.replace("listento = downloads", "listento = download")
    found = problems(tmp_path, body)
    assert not any(p.error for p in found)
    assert [p.message for p in found] == [
        "queue `downloads` is pushed to by worker_parse and read by no worker: its messages pile "
        "up in Redis (did you mean `download`, read by logger_downloads?); if a program of your "
        "own reads it, name it in `[loglines] external_queues`",
        "queue `download` is read by logger_downloads and pushed to by no worker: nothing will "
        "arrive (did you mean `downloads`, pushed to by worker_parse?); if a program of your own "
        "pushes to it, name it in `[loglines] external_queues`",
    ]


def test_outside_producers_and_consumers_are_declared(tmp_path: Path) -> None:
    body = """
[worker_kontext]
type = parser
listento = kontext
plugin = kontext
pushto = records
"""
    assert [p.message.split(":")[0] for p in problems(tmp_path, body)] == [
        "queue `kontext` is read by worker_kontext and pushed to by no worker",
        "queue `records` is pushed to by worker_kontext and read by no worker"]
    declared = HEAD + "[loglines]\nexternal_queues = kontext, records\n\n"
    assert problems(tmp_path, body, declared) == []
    typo = HEAD + "[loglines]\nexternal_queues = kontext, records, kontekst\n\n"
    assert [p.message for p in problems(tmp_path, body, typo)] == [
        "`[loglines] external_queues` names `kontekst`, which no worker reads or pushes to"]


def test_a_worker_pushing_to_its_own_queue_is_an_error(tmp_path: Path) -> None:
    body = STARTER.replace("other_queue = other", "other_queue = access")
    found = problems(tmp_path, body)
    assert found[0].error and found[0].message == (
        "[worker_parse] reads and pushes to queue `access`: its messages would come back to it forever")


def test_queues_of_different_servers_are_different_queues(tmp_path: Path) -> None:
    body = STARTER + TRACKER_ON_ACCESS + "redis = redis_b\n"
    head = HEAD + "[redis_b]\nurl = redis://127.0.0.1:2/0\n\n"
    found = problems(tmp_path, body, head)
    assert not any(p.error for p in found)
    assert [p.message.split(":")[0] for p in found] == [
        "queue `access` on [redis_b] is read by worker_irus and pushed to by no worker"]


@pytest.mark.parametrize("command", ["up", "reload"])
def test_up_and_reload_refuse_a_split_queue(tmp_path: Path, capsys, command: str) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "access.log").touch()
    path = tmp_path / "loglines.cfg"
    path.write_text(HEAD + (STARTER + TRACKER_ON_ACCESS).replace("{log}", str(tmp_path / "access.log")))
    assert main(["-c", str(path), command]) == 1
    err = capsys.readouterr().err
    assert "queue `access` is read by worker_parse and worker_irus" in err
    assert "nothing was started or changed" in err
    assert not (tmp_path / "supervisord.conf").exists()


def test_a_queue_served_only_by_disabled_workers_is_named(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """The links in workers_enabled/ are what runs: a parser disabled by hand leaves the watcher's
    queue piling up and the sinks' queues empty; a section saying `enabled = no` does the same
    before its program file is first made."""
    (tmp_path / "access.log").touch()
    path = tmp_path / "loglines.cfg"
    path.write_text(HEAD + STARTER.replace("{log}", str(tmp_path / "access.log")))
    assert main(["-c", str(path), "supervisord-config"]) == 0
    assert main(["-c", str(path), "disable", "worker_parse"]) == 0
    capsys.readouterr()
    assert main(["-c", str(path), "check"]) == 0
    err = capsys.readouterr().err
    assert "warning: queue `access` is read only by worker_parse, not enabled (no link in workers_enabled/): " \
           "what logger_access pushes piles up in Redis until it is (`loglines enable worker_parse`)" in err
    for sink in ("logger_downloads", "logger_other"):
        assert f"nothing arrives for {sink} until it is (`loglines enable worker_parse`)" in err
    assert err.count("not enabled") == 3
    assert main(["-c", str(path), "enable", "worker_parse"]) == 0
    capsys.readouterr()
    assert main(["-c", str(path), "check"]) == 0
    assert "not enabled" not in capsys.readouterr().err

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    found = problems(fresh, STARTER.replace("[worker_parse]\n", "[worker_parse]\nenabled = no\n"))
    assert found == []  # the graph alone does not know what runs
    from pipeline.ops.supervisord import enabled_programs

    cfg = config.load(fresh / "loglines.cfg")
    assert "worker_parse" not in enabled_programs(cfg) and "logger_access" in enabled_programs(cfg)
    assert sum("not enabled" in p.message for p in graph.check(cfg, enabled_programs(cfg))) == 3
