"""supervisord generation and a real supervisord running the pipeline."""

from __future__ import annotations

import base64
import json
import os
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis

from pipeline import config
from pipeline.core.keys import Keys
from pipeline.errors import ConfigError, PluginError
from pipeline.ops.supervisord import generate, set_enabled
from pipeline.plugin import load as load_plugin
from tests.support.faults import Scenario
from tests.support.procs import REPO, count_seq
from tests.support.servers import free_port, wait_for

BODY = """
[worker_parse]
type = parser
listento = raw
pushto = parsed
plugin = accesslog
numprocs = 2

[logger_out]
type = filelogger
listento = parsed
logfile = out.log

[logger_quiet]
type = filelogger
listento = nothing
logfile = quiet.log
enabled = no
"""


def cfg_file(tmp_path: Path, body: str = BODY, supervisor: str = "password = pw\n") -> Path:
    path = tmp_path / "loglines.cfg"
    path.write_text(f"[supervisor]\nport = {free_port()}\n{supervisor}\n[redis]\nembedded = yes\nport = {free_port()}\n{body}")
    return path


def test_generation_modes_links_and_numprocs(tmp_path: Path) -> None:
    cfg = config.load(cfg_file(tmp_path, BODY.replace("logfile = out.log\n", "logfile = out.log\nuser = nobody\n")))
    result = generate(cfg)
    assert sorted(result.enabled) == ["logger_out", "worker_parse"]
    for path in result.files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    conf = (tmp_path / "supervisord.conf").read_text()
    inet = conf[conf.index("[inet_http_server]"):conf.index("[supervisord]")]
    assert "port = 127.0.0.1:" in inet and "password = {SHA}" in inet and "pw" not in inet
    assert f"files = {tmp_path}/workers_enabled/*.conf" in conf
    parse = (tmp_path / "workers_available" / "worker_parse.conf").read_text()
    assert "numprocs = 2" in parse and "%(process_num)02d" in parse and "stopsignal = TERM" in parse
    assert (tmp_path / "workers_enabled" / "worker_parse.conf").is_symlink()
    assert "\nuser = nobody\n" in (tmp_path / "workers_available" / "logger_out.conf").read_text()
    assert not (tmp_path / "workers_enabled" / "logger_quiet.conf").exists()
    assert "appendonly yes" in (tmp_path / "var" / "redis.conf").read_text()


def test_regeneration_never_touches_the_users_links(tmp_path: Path) -> None:
    cfg = config.load(cfg_file(tmp_path))
    generate(cfg)
    assert set_enabled(cfg, "worker_parse", False)
    assert set_enabled(cfg, "logger_quiet", True)
    custom = tmp_path / "workers_enabled" / "mine.conf"
    custom.write_text("[program:mine]\ncommand = /bin/true\n")
    result = generate(cfg)
    assert result.enabled == []
    enabled = tmp_path / "workers_enabled"
    assert not (enabled / "worker_parse.conf").exists()
    assert (enabled / "logger_quiet.conf").is_symlink() and custom.exists()


def test_console_without_password_is_refused(tmp_path: Path) -> None:
    cfg = config.load(cfg_file(tmp_path, supervisor=""))
    with pytest.raises(ConfigError, match="needs a password"):
        generate(cfg)


def loglines(cfg: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "pipeline", "-c", str(cfg), *args],
                          capture_output=True, text=True, env=env, cwd=cfg.parent, check=check, timeout=60)


def http_status(url: str, auth: tuple[str, str] | None = None, data: bytes | None = None) -> int:
    request = urllib.request.Request(url, data=data)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a socket listening on ``port`` (from /proc/net/tcp*)."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for row in Path(table).read_text().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:
                raw = bytes.fromhex(address)
                if width == 8:
                    found.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
                else:
                    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                    found.add(socket.inet_ntop(socket.AF_INET6, words))
    return found


@pytest.mark.slow
def test_real_supervisord_runs_the_pipeline(tmp_path: Path) -> None:
    access = tmp_path / "access.log"
    access.write_text("")
    body = BODY + f"""
[logger_access]
type = watcher
logfile = {access}
pushto = raw
"""
    cfg = cfg_file(tmp_path, body)
    port = config.load(cfg).supervisor.port
    up = loglines(cfg, "up")
    assert "password: 'password' in [supervisor]" in up.stdout and "pw" not in up.stdout.split("password:")[1]
    try:
        wait_for(lambda: '"RUNNING"' in loglines(cfg, "status", "--json", check=False).stdout, timeout=30,
                 what="workers running")
        from bench.genlog import lines

        every = list(lines(23000, seq=True))
        with access.open("a") as handle:
            handle.write("\n".join(every[:3000]) + "\n")
        out = tmp_path / "out.log"
        wait_for(lambda: len(count_seq(out)[0]) == 3000, timeout=60, what="3000 lines through supervisord")

        wait_for(lambda: json.loads(loglines(cfg, "status", "--json").stdout)["workers"]["logger_out"]
                 ["items_total"] == 3000, timeout=10, what="stats flushed")
        status = json.loads(loglines(cfg, "status", "--json").stdout)
        assert status["supervisord"] == "running"
        assert status["workers"]["worker_parse"]["processes"] == {
            "worker_parse_00": "RUNNING", "worker_parse_01": "RUNNING"}
        assert status["workers"]["logger_out"]["items_total"] == 3000
        assert status["queues"].get("raw", 0) == 0 and status["dead_letters"] == 0
        assert all(c["alive"] for c in status["consumers"].values())

        # stop a worker mid-stream: it exits within stopwaitsecs and nothing is lost
        with access.open("a") as handle:
            handle.write("\n".join(every[3000:]) + "\n")
        scenario = Scenario("3 graceful stop (supervisorctl stop) mid-batch")
        ctl = [str(Path(sys.executable).parent / "supervisorctl"), "-c", str(tmp_path / "supervisord.conf")]
        stopwaitsecs = config.load(cfg).worker("logger_out").stopwaitsecs
        wait_for(lambda: len(count_seq(out)[0]) > 3500, timeout=60, what="the file logger at work")
        started = time.monotonic()
        stopped = subprocess.run(ctl + ["stop", "logger_out"], capture_output=True, text=True, timeout=120)
        took = time.monotonic() - started
        assert "stopped" in stopped.stdout and took < stopwaitsecs, (stopped.stdout, took)
        from pipeline.core.connection import connect

        client = connect(config.load(cfg).redis["redis"])  # with the embedded server's password
        keys = Keys()
        mine = [c.decode() for c in client.hkeys(keys.consumers) if c.endswith(b"/logger_out")]
        held = {c: client.llen(keys.inflight(c)) for c in mine}
        assert mine and not any(held.values()), f"in flight after a graceful stop: {held}"
        subprocess.run(ctl + ["start", "logger_out"], capture_output=True, text=True, timeout=60, check=True)
        wait_for(lambda: len(count_seq(out)[0]) == 23000, timeout=90, what="all 23000 lines")
        time.sleep(1)
        scenario.check("file", count_seq(out)[0], 23000, note=f"stopped in {took:.1f}s")

        # the console: 127.0.0.1 only, 401 without credentials, 200 with
        base = f"http://127.0.0.1:{port}/"
        assert http_status(base) == 401
        assert http_status(base + "RPC2", data=b"<?xml version='1.0'?><methodCall><methodName>"
                           b"supervisor.getState</methodName></methodCall>") == 401
        assert http_status(base, auth=("admin", "pw")) == 200
        assert http_status(base, auth=("admin", "wrong")) == 401
        assert listening_addresses(port) == {"127.0.0.1"}

        # the known XML-RPC command-execution path answers a fault and runs nothing
        marker = tmp_path / "pwned"
        probe = ("<?xml version='1.0'?><methodCall><methodName>"
                 "supervisor.supervisord.options.warnings.linecache.os.system</methodName><params>"
                 f"<param><value><string>touch {marker}</string></value></param></params></methodCall>")
        assert http_status(base + "RPC2", data=probe.encode()) == 401
        request = urllib.request.Request(base + "RPC2", data=probe.encode())
        request.add_header("Authorization", "Basic " + base64.b64encode(b"admin:pw").decode())
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = response.read()
        assert b"<fault>" in answer, answer
        time.sleep(0.5)
        assert not marker.exists()
    finally:
        loglines(cfg, "down", check=False)
        pidfile = tmp_path / "var" / "supervisord.pid"
        wait_for(lambda: not pidfile.exists(), timeout=60, what="supervisord to exit")


@pytest.mark.slow
def test_04_redis_down_while_workers_start_under_supervisord(tmp_path: Path) -> None:
    """Workers started before their Redis wait and retry; supervisord never sees them die."""
    from bench.genlog import lines
    from tests.support.servers import RedisServer

    scenario = Scenario("4 Redis down while workers start (supervisord)")
    access = tmp_path / "access.log"
    access.write_text("")
    redis_port = free_port()
    body = BODY + f"""
[logger_access]
type = watcher
logfile = {access}
pushto = raw
"""
    path = tmp_path / "loglines.cfg"
    path.write_text(f"[supervisor]\nport = {free_port()}\npassword = pw\n\n[redis]\n"
                    f"url = redis://127.0.0.1:{redis_port}/0\nheartbeat_ttl = 3\n{body}")
    loglines(path, "up")
    server = RedisServer(tmp_path / "redis", redis_port)
    ctl = [str(Path(sys.executable).parent / "supervisorctl"), "-c", str(tmp_path / "supervisord.conf")]

    def status() -> str:
        return subprocess.run(ctl + ["status"], capture_output=True, text=True, timeout=60).stdout

    try:
        wait_for(lambda: "RUNNING" in status(), timeout=30, what="workers started")
        time.sleep(12)  # well past startsecs x startretries: a dying worker would be FATAL by now
        states = status()
        rows = [row.split()[:2] for row in states.splitlines() if row.strip()]
        assert rows and all(state == "RUNNING" for _, state in rows), states
        assert "uptime 0:00:1" in states  # still the first start of each: never restarted
        server.start()
        every = list(lines(5000, seq=True))
        access.write_text("\n".join(every) + "\n")
        out = tmp_path / "out.log"
        wait_for(lambda: len(count_seq(out)[0]) == 5000, timeout=90, what="5000 lines once Redis is up")
        time.sleep(1)
        scenario.check("file", count_seq(out)[0], 5000)
    finally:
        loglines(path, "down", check=False)
        pidfile = tmp_path / "var" / "supervisord.pid"
        wait_for(lambda: not pidfile.exists(), timeout=60, what="supervisord to exit")
        server.kill()


def test_embedded_redis_on_a_port_has_a_password_and_no_config_command(tmp_path: Path) -> None:
    """On 127.0.0.1 any local user reaches the port: as nobody, CONFIG SET dir + dbfilename +
    SAVE wrote a root-owned file anywhere, read the dead letters and pushed records. The
    embedded server now has a generated password (0600 file) and no CONFIG, DEBUG or MODULE."""
    from pipeline.core.connection import connect
    from pipeline.ops.supervisord import _redis_server

    cfg = config.load(cfg_file(tmp_path, ""))
    rc = cfg.redis["redis"]
    assert rc.port and rc.secret_file == tmp_path / "var" / "redis.secret"
    generate(cfg)
    assert stat.S_IMODE(rc.secret_file.stat().st_mode) == 0o600 and len(rc.resolved_password()) >= 32
    conf = (tmp_path / "var" / "redis.conf").read_text()
    assert f"requirepass {rc.resolved_password()}" in conf and 'rename-command CONFIG ""' in conf
    server = subprocess.Popen([_redis_server(rc), str(tmp_path / "var" / "redis.conf")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        anonymous = redis.Redis(port=rc.port, socket_timeout=2)
        wait_for(lambda: _answers(anonymous), what="the embedded server up")
        with pytest.raises(redis.AuthenticationError):
            anonymous.llen("{loglines}:dlq")
        client = connect(rc)  # what every worker does: the password from its file
        assert client.ping()
        for command in (("CONFIG", "SET", "dir", "/tmp"), ("DEBUG", "SLEEP", "0"), ("MODULE", "LIST")):
            with pytest.raises(redis.ResponseError, match="unknown command"):
                client.execute_command(*command)
        generate(cfg)  # generating again keeps the password
        assert f"requirepass {rc.resolved_password()}" in (tmp_path / "var" / "redis.conf").read_text()
    finally:
        server.terminate()
        server.wait(timeout=30)


def _answers(client: redis.Redis) -> bool:
    try:
        client.ping()
    except redis.AuthenticationError:
        return True
    except redis.ConnectionError:
        return False
    return True


def test_generated_programs_carry_a_digest_of_what_they_read(tmp_path: Path) -> None:
    """Editing a worker's section changes its program file, so that an update restarts it (it
    reads loglines.cfg once, at its start); other sections leave it as it is."""
    path = cfg_file(tmp_path)
    generate(config.load(path))
    conf = tmp_path / "workers_available"
    before = {name: (conf / f"{name}.conf").read_text() for name in ("worker_parse", "logger_out")}
    assert "environment = LOGLINES_SECTION_SHA=" in before["worker_parse"]
    path.write_text(path.read_text().replace("numprocs = 2", "numprocs = 2 ; two\naccept = kind=download"))
    generate(config.load(path))
    assert (conf / "worker_parse.conf").read_text() != before["worker_parse"]
    assert (conf / "logger_out.conf").read_text() == before["logger_out"]
    path.write_text(path.read_text().replace("listento = parsed\n", "listento = parsed\nenvironment = A=1\n"))
    generate(config.load(path))
    assert "environment = LOGLINES_SECTION_SHA=" in (conf / "logger_out.conf").read_text()
    assert (conf / "logger_out.conf").read_text().rstrip().endswith(",A=1")


def test_a_changed_plugin_file_changes_the_program_of_the_workers_loading_it(tmp_path: Path) -> None:
    """A plugin is read once, at a worker's start, like its section: editing the plugin's file
    changes the program file of every worker loading it (so that reload restarts them), and of
    no other."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "mine.py").write_text("def parse(item):\n    return {'n': 1}\n")
    body = BODY.replace("plugin = accesslog", "plugin = mine") + (
        "\n[worker_original]\ntype = parser\nlistento = raw\npushto = parsed\nplugin = plugins.mine\n"
        "\n[worker_builtin]\ntype = parser\nlistento = raw\npushto = parsed\nplugin = accesslog\n")
    path = cfg_file(tmp_path, body)
    names = ("worker_parse", "worker_original", "worker_builtin", "logger_out")
    conf = tmp_path / "workers_available"

    def programs() -> dict[str, str]:
        generate(config.load(path))
        return {name: (conf / f"{name}.conf").read_text() for name in names}

    before = programs()
    assert programs() == before  # the same file, the same programs
    (plugins / "mine.py").write_text("def parse(item):\n    return {'n': 2}\n")
    after = programs()
    assert [name for name in names if after[name] != before[name]] == ["worker_parse", "worker_original"]


def test_a_plugin_package_raising_on_import_leaves_generation_to_name_it_at_load(tmp_path: Path) -> None:
    """Generating programs looks for plugin files without running them; a dotted plugin whose
    package raises on import gives no digest (and no traceback), and loading it names the error."""
    (tmp_path / "plugins").mkdir()
    (tmp_path / "raising_pkg").mkdir()
    (tmp_path / "raising_pkg" / "__init__.py").write_text("raise RuntimeError('broken on purpose')\n")
    path = cfg_file(tmp_path, BODY.replace("plugin = accesslog", "plugin = raising_pkg.mine"))
    cfg = config.load(path)
    generate(cfg)
    assert "LOGLINES_SECTION_SHA=" in (tmp_path / "workers_available" / "worker_parse.conf").read_text()
    with pytest.raises(PluginError, match="'raising_pkg.mine' failed to import: RuntimeError: broken on purpose"):
        load_plugin("raising_pkg.mine", cfg.plugin_dirs)


@pytest.mark.slow
def test_up_twice_a_busy_port_reload_enable_disable_and_down(tmp_path: Path) -> None:
    """What a user does on a running system: up again (says so, applies), a busy console port
    (named), a link made by hand and an edited section (taken by reload), enable and disable
    that apply even when the link is already as asked, and down that waits."""
    cfg = cfg_file(tmp_path, BODY.replace("numprocs = 2\n", ""))
    port = config.load(cfg).supervisor.port

    def states() -> dict[str, str]:
        status = json.loads(loglines(cfg, "status", "--json", check=False).stdout)
        return {f"{name}/{p}": s for name, w in status["workers"].items() for p, s in w["processes"].items()}

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        refused = loglines(cfg, "up", check=False)
        assert refused.returncode == 1
        assert f"loglines: error: 127.0.0.1:{port} is in use: set `[supervisor] port`" in refused.stderr
        assert "web console" not in refused.stdout
    up = loglines(cfg, "up")
    pid = int((tmp_path / "var" / "supervisord.pid").read_text())
    try:
        assert f"supervisord is running (pid {pid})" in up.stdout and "web console: http://127.0.0.1:" in up.stdout
        wait_for(lambda: states().get("worker_parse/worker_parse") == "RUNNING", timeout=30, what="running")
        again = loglines(cfg, "up")
        assert f"already running (pid {pid})" in again.stdout
        assert "nothing to change in the running supervisord" in again.stdout

        # a link made by hand: reload starts the worker
        link = tmp_path / "workers_enabled" / "logger_quiet.conf"
        link.symlink_to("../workers_available/logger_quiet.conf")
        reload = loglines(cfg, "reload")
        assert "logger_quiet: added and started" in reload.stdout
        wait_for(lambda: states().get("logger_quiet/logger_quiet") == "RUNNING", timeout=30, what="logger_quiet")

        # a link removed by hand, then disable (the link is already gone): the worker stops
        link.unlink()
        disabled = loglines(cfg, "disable", "logger_quiet")
        assert "logger_quiet: disabled already" in disabled.stdout
        assert "logger_quiet: stopped and removed" in disabled.stdout
        assert "logger_quiet/logger_quiet" not in states()

        # a worker stopped by hand: enable (its link is there) starts it again
        ctl = [str(Path(sys.executable).parent / "supervisorctl"), "-c", str(tmp_path / "supervisord.conf")]
        subprocess.run(ctl + ["stop", "logger_out"], capture_output=True, timeout=60, check=True)
        enabled = loglines(cfg, "enable", "logger_out")
        assert "logger_out: enabled already" in enabled.stdout and "logger_out: started" in enabled.stdout
        wait_for(lambda: states().get("logger_out/logger_out") == "RUNNING", timeout=30, what="logger_out again")

        # an edited section: reload restarts that worker only
        cfg.write_text(cfg.read_text().replace("plugin = accesslog\n", "plugin = accesslog\naccept = kind=download\n"))
        edited = loglines(cfg, "reload")
        assert edited.stdout.strip().splitlines() == ["worker_parse: restarted (its configuration changed)"]
        wait_for(lambda: states().get("worker_parse/worker_parse") == "RUNNING", timeout=30, what="restarted")
    finally:
        down = loglines(cfg, "down", check=False)
    assert down.returncode == 0 and down.stdout.strip().endswith("stopped"), down
    from pipeline.ops.control import alive

    assert not alive(pid)  # down returned once supervisord and its workers had exited
    assert "supervisord is not running" in loglines(cfg, "down").stdout
