"""A loglines.cfg of the original system's shape loads unchanged and runs end to end.

The file below has every section and key the original distributor's config and scripts used:
the console as ``host:port``, ``[redis]`` by host/port/db, the ``[queues]`` prefix, the Redis
server itself as a ``[process_*]``, the scripts named by ``command``, the broker's ``idletime``
and ``fanout_status_queue``, the PIRUS2 sender's keys and a plugin written to the original
contract. It runs under a real supervisord: the Redis of ``[process_redis]``, the watcher, the
broker, the tracker sender (against a local HTTP server playing the tracker) and the file logger.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from pipeline import config
from pipeline.errors import ConfigError
from tests.ops.test_supervisord import loglines
from tests.support.procs import count_seq
from tests.support.servers import free_port, redis_server_binary, wait_for
from tests.support.tracker_server import TrackerServer

UA = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"

ORIGINAL_PLUGIN = '''
"""A repository plugin written for the original system: parseline and get_openurl_params."""
import json
import re

LINE = re.compile(r'(\\S+) \\S+ \\S+ \\[([^\\]]+)\\] "GET (\\S+) [^"]*" (\\d{3}) \\S+ "([^"]*)" "([^"]*)"')


def parseline(jmsg):
    msg = json.loads(jmsg)
    m = LINE.match(msg["logline"])
    if not m:
        return {}
    ip, stamp, path, status, referrer, agent = m.groups()
    return {"ip": ip, "path": path, "status": status, "agent": agent, "referrer": referrer}


def get_openurl_params(c, worker_section, pl):
    if not pl or pl.get("status") != "200" or "/download/" not in pl.get("path", ""):
        return {}
    return {
        "url_ver": c.get(worker_section, "url_ver"),
        "url_tim": "2024-10-10T11:55:36Z",
        "req_id": pl["ip"],
        "req_dat": pl["agent"],
        "rft.artnum": "oai:ora.example.ac.uk:" + pl["path"].split("/")[2],
        "svc_dat": "https://ora.example.ac.uk" + pl["path"],
        "rfr_dat": pl["referrer"],
        "rfr_id": c.get(worker_section, "rfr_id"),
    }
'''


def original_cfg(tmp: Path, console: int, redis_port: int, tracker_url: str) -> str:
    return textwrap.dedent(f"""\
        [supervisor]
        port = 127.0.0.1:{console}
        username = guest
        password = mypassword

        [redis]
        host = 127.0.0.1
        port = {redis_port}
        db = 0

        [queues]
        prefix = q:

        [process_redis]
        command = {redis_server_binary()} --port {redis_port} --bind 127.0.0.1 --dir {tmp} --appendonly yes --save ""
        stdout_logfile = workerlogs/redis.log
        priority = 1

        [logger_apache]
        command = ./logfilewatcher.py
        logfile = {tmp}/access.log
        pushto = apache
        servicename = ora
        stdout_logfile = workerlogs/apachelogger.log

        [worker_broker]
        command = ./broker.py
        listento = apache
        fanout = pirus2, archive
        fanout_status_queue = broker_temp
        idletime = 1
        numprocs = 2
        stdout_logfile = workerlogs/broker.log
        redirect_stderr = True
        autorestart = true
        startsecs = 1
        startretries = 3
        stopwaitsecs = 10
        process_name = %(program_name)s_%(process_num)s

        [worker_pirus2]
        command = ./pirus2.py
        listento = pirus2
        numprocs = 1
        repository_plugin = plugins.ora
        endpoint_url = {tracker_url}
        url_ver = Z39.88-2004
        rfr_id = ora.example.ac.uk
        success = 200
        timeout = 10
        pauseonfail = 1
        ratelimit = 0
        success_queue = pirus2_success
        other_queue = pirus2_other
        stdout_logfile = workerlogs/pirus2.log

        [logger_archive]
        command = ./logfromqueue.py
        listento = archive
        logfile = {tmp}/archive/access.log
        stdout_logfile = workerlogs/archive.log
    """)


def test_original_config_loads_with_one_warning_per_retired_key(tmp_path: Path) -> None:
    path = tmp_path / "loglines.cfg"
    path.write_text(original_cfg(tmp_path, 9001, 6379, "http://127.0.0.1:1/counter/"))
    cfg = config.load(path)
    assert (cfg.supervisor.host, cfg.supervisor.port, cfg.supervisor.username) == ("127.0.0.1", 9001, "guest")
    assert {name: p.type for name, p in cfg.programs.items()} == {
        "process_redis": "", "logger_apache": "watcher", "worker_broker": "broker",
        "worker_pirus2": "tracker", "logger_archive": "filelogger"}
    warned = sorted((section, text.split("key ")[-1].split(":")[0]) for section, text in cfg.warnings)
    assert warned == [("queues", f"file {str(path)!r}, section [queues]"),
                      ("worker_broker", "'fanout_status_queue'"), ("worker_broker", "'idletime'"),
                      ("worker_broker", "'process_name'"), ("worker_broker", "'redirect_stderr'")]
    assert all("not needed" in text or "ignored" in text for _, text in cfg.warnings)
    broker = cfg.programs["worker_broker"]
    assert (broker.numprocs, broker.startretries, broker.stopwaitsecs) == (2, 3, 10)
    tracker = cfg.programs["worker_pirus2"].options
    assert (tracker.plugin, tracker.pauseonfail, tracker.success_queue) == ("plugins.ora", 1.0, "pirus2_success")


@pytest.mark.parametrize(("value", "host", "port"), [("9001", "127.0.0.1", 9001),
                                                     ("127.0.0.1:9002", "127.0.0.1", 9002),
                                                     (":9003", "127.0.0.1", 9003),
                                                     ("localhost:9004", "localhost", 9004)])
def test_console_port_takes_supervisords_forms(tmp_path: Path, value: str, host: str, port: int) -> None:
    path = tmp_path / "loglines.cfg"
    path.write_text(f"[supervisor]\nport = {value}\npassword = x\n")
    sup = config.load(path).supervisor
    assert (sup.host, sup.port) == (host, port)


def test_console_opened_beyond_loopback_only_on_purpose(tmp_path: Path) -> None:
    path = tmp_path / "loglines.cfg"
    path.write_text("[supervisor]\nport = 0.0.0.0:9001\npassword = x\n")
    with pytest.raises(ConfigError, match="set 'host = 0.0.0.0'"):
        config.load(path)
    path.write_text("[supervisor]\nport = 0.0.0.0:9001\nhost = 0.0.0.0\npassword = x\n")
    assert config.load(path).supervisor.host == "0.0.0.0"
    path.write_text("[supervisor]\nport = 10.0.0.1:9001\nhost = 0.0.0.0\npassword = x\n")
    with pytest.raises(ConfigError, match="give the host once"):
        config.load(path)


def test_unknown_keys_are_still_refused_with_the_nearest_known_one(tmp_path: Path) -> None:
    path = tmp_path / "loglines.cfg"
    path.write_text("[worker_b]\ncommand = ./broker.py\nlisten_to = a\nfanout = b\n")
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert info.value.key == "listen_to" and "did you mean 'listento'?" in str(info.value)
    path.write_text("[logger_f]\ntype = filelogger\nlistento = a\nlogfile = f\nfsycn = no\n")
    with pytest.raises(ConfigError, match="did you mean 'fsync'"):
        config.load(path)


@pytest.mark.slow
def test_original_config_runs_end_to_end_under_supervisord(tmp_path: Path) -> None:
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "ora.py").write_text(ORIGINAL_PLUGIN)
    (tmp_path / "access.log").write_text("")
    with TrackerServer() as tracker:
        cfg = tmp_path / "loglines.cfg"
        cfg.write_text(original_cfg(tmp_path, free_port(), free_port(), tracker.url))
        up = loglines(cfg, "up", check=False)
        assert up.returncode == 0, up.stderr
        assert "idletime" in up.stderr and "warning" in up.stderr
        try:
            wait_for(lambda: json.loads(loglines(cfg, "status", "--json", check=False).stdout or "{}")
                     .get("supervisord") == "running", timeout=30, what="supervisord up")
            lines = []
            for n in range(300):
                path = f"/download/{n}/paper.pdf" if n % 3 else f"/item/{n}"
                lines.append(f'192.0.2.{n % 200 + 1} - - [10/Oct/2024:13:55:36 +0200] '
                             f'"GET {path}?seq={n} HTTP/1.1" 200 1234 "-" "{UA}"')
            with (tmp_path / "access.log").open("a") as handle:
                handle.write("\n".join(lines) + "\n")
            archive = tmp_path / "archive" / "access.log"
            wait_for(lambda: len(count_seq(archive)[0]) == 300, timeout=90, what="300 lines archived")
            downloads = {n for n in range(300) if n % 3}
            wait_for(lambda: len(tracker.accepted()) >= len(downloads), timeout=90,
                     what=f"{len(downloads)} downloads at the tracker")
            seen, _ = count_seq(archive)
            assert seen == dict.fromkeys(range(300), 1)
            sent = [int(p["svc_dat"].rsplit("=", 1)[1]) for p in tracker.accepted()]
            assert sorted(sent) == sorted(downloads)
            assert all(p["url_ver"] == "Z39.88-2004" and p["rfr_id"] == "ora.example.ac.uk"
                       for p in tracker.accepted())
            status = json.loads(loglines(cfg, "status", "--json").stdout)
            assert status["workers"]["worker_broker"]["processes"] == {
                "worker_broker_00": "RUNNING", "worker_broker_01": "RUNNING"}
            assert (tmp_path / "workerlogs" / "pirus2.log").exists()
        finally:
            loglines(cfg, "down", check=False)
            wait_for(lambda: not (tmp_path / "var" / "supervisord.pid").exists(), timeout=60,
                     what="supervisord stopped")
