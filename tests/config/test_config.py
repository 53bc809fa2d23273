"""loglines.cfg: every error names file, section, key and value; original configs load."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import config
from pipeline.errors import ConfigError
from pipeline.sinks.filelogger import FileLoggerOptions
from pipeline.sources.watcher import WatcherOptions
from pipeline.transforms.parser import ParserOptions

ORIGINAL = """
[supervisor]
port = 9001
username = admin
password = s3cret

[redis]
host = 127.0.0.1
port = 6379
db = 0

[process_redis]
command = /usr/bin/redis-server /etc/redis/pirus.conf

[logger_apache]
command = ./logfilewatcher.py
logfile = /var/log/apache2/access.log
pushto = apache
servicename = repository
stdout_logfile = log/watcher.log

[worker_broker]
command = ./broker.py
listento = apache
fanout = parse, archive
numprocs = 2

[logger_archive]
command = ./logfromqueue.py
listento = archive
logfile = archive/access.log
user = www-data
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "loglines.cfg"
    path.write_text(text)
    return path


def test_original_style_config_loads(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, ORIGINAL))
    assert cfg.redis["redis"].url == "redis://127.0.0.1:6379/0" and not cfg.redis["redis"].embedded
    assert cfg.programs["process_redis"].type == "" and "redis-server" in cfg.programs["process_redis"].command
    watcher = cfg.programs["logger_apache"]
    assert watcher.type == "watcher" and watcher.command == ""
    assert isinstance(watcher.options, WatcherOptions)
    assert watcher.options.pushto == "apache" and watcher.options.servicename == "repository"
    assert watcher.stdout_logfile == str(tmp_path / "log/watcher.log")
    broker = cfg.programs["worker_broker"]
    assert broker.type == "broker" and broker.options.fanout == ("parse", "archive") and broker.numprocs == 2
    archive = cfg.programs["logger_archive"]
    assert isinstance(archive.options, FileLoggerOptions) and archive.user == "www-data"
    assert archive.options.logfile == str(tmp_path / "archive/access.log")


def test_repository_plugin_is_the_original_name_of_plugin(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, "[worker_p]\ntype = parser\nlistento = a\npushto = b\n"
                                      "repository_plugin = plugins.dspace\n"))
    options = cfg.programs["worker_p"].options
    assert isinstance(options, ParserOptions) and options.plugin == "plugins.dspace"


def test_defaults_embedded_redis(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, "[supervisor]\npassword = x\n"))
    rc = cfg.redis["redis"]
    assert rc.embedded and rc.unix_socket == tmp_path / "var" / "redis.sock"
    assert rc.connection_url().startswith("unix://")
    assert cfg.supervisor.host == "127.0.0.1"


@pytest.mark.parametrize(
    "body, section, key, value, expected",
    [
        ("[worker_x]\ntype = parser\nlistento = a\npushto = b\nplugin = p\nbogus = 1\n",
         "worker_x", "bogus", None, "unknown key"),
        ("[worker_x]\ntype = parser\nlistento = a\nplugin = p\n", "worker_x", "pushto", None,
         "required key is missing"),
        ("[worker_x]\ntype = watcher\nlogfile = a.log\npushto = q\nbatch_lines = many\n",
         "worker_x", "batch_lines", "many", "whole number"),
        ("[worker_x]\ntype = watcher\nlogfile = a.log\npushto = q\nbatch_lines = 0\n",
         "worker_x", "batch_lines", "0", ">= 1"),
        ("[worker_x]\ntype = watcher\nlogfile = a.log\npushto = q\nstart = middle\n",
         "worker_x", "start", "middle", "beginning, end"),
        ("[worker_x]\ntype = watcher\nlogfile = a.log\npushto = q\nnumprocs = 2\n",
         "worker_x", "numprocs", "2", "one process"),
        ("[worker_x]\ntype = teleporter\n", "worker_x", "type", "teleporter", "unknown worker type"),
        ("[worker_x]\nlistento = a\n", "worker_x", "type", None, "needs 'type'"),
        ("[worker_x]\ntype = filelogger\nlistento = a\nlogfile = f\nformat = xml\n",
         "worker_x", "format", "xml", "raw, ndjson"),
        ("[worker_x]\ntype = filelogger\nlistento = a b!\nlogfile = f\n",
         "worker_x", "listento", "a b!", "expected a name"),
        ("[worker_x]\ntype = broker\nlistento = a\nfanout = b\nfsync = maybe\n",
         "worker_x", "fsync", None, "unknown key"),
        ("[redis]\nurl = http://example\n", "redis", "url", "http://example", "redis://"),
        ("[redis]\nembedded = perhaps\n", "redis", "embedded", "perhaps", "boolean"),
        ("[redis]\nurl = redis://h/0\nsocket_timeout = 1\nblock_timeout = 2\n", "redis",
         "block_timeout", "2.0", "below socket_timeout"),
        ("[redis]\nurl = redis://h/0\nsocket_timeout = 1\nblock_timeout = 0.5\nmin_replicas = 1\n"
         "min_replicas_timeout_ms = 1000\n", "redis", "min_replicas_timeout_ms", "1000", "below socket_timeout"),
        ("[supervisor]\nport = 99999\n", "supervisor", "port", "99999", "<= 65535"),
        ("[process_x]\ntype = watcher\n", "process_x", "type", "watcher", "plain program"),
        ("[worker_x]\ntype = parser\nlistento = a\npushto = b\nplugin = p\naccept = kind\n",
         "worker_x", "accept", "kind", "field=value"),
        ("[worker_x]\ntype = esindexer\nlistento = a\nid_scheme = random\n",
         "worker_x", "id_scheme", "random", "expected one of: auto, ordered, sha1"),
    ],
)
def test_errors_name_file_section_key_value(
    tmp_path: Path, body: str, section: str, key: str, value: str | None, expected: str
) -> None:
    path = write(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    err = info.value
    assert err.file == str(path) and err.section == section and err.key == key
    if value is not None:
        assert err.value == value
    text = str(err)
    assert expected in text and str(path) in text and f"[{section}]" in text and repr(key) in text


def test_unknown_section_and_bad_ini(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"section \[mystery\]: unknown section"):
        config.load(write(tmp_path, "[mystery]\na = 1\n"))
    with pytest.raises(ConfigError, match="not a valid INI file"):
        config.load(write(tmp_path, "no section header\n"))
    with pytest.raises(ConfigError, match="file not found"):
        config.load(tmp_path / "missing.cfg")


def test_config_objects_are_frozen(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, ORIGINAL))
    with pytest.raises(AttributeError):
        cfg.programs["logger_apache"].options.pushto = "x"  # type: ignore[misc]


def test_raw_parser_is_what_original_plugins_get(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, ORIGINAL))
    raw = cfg.raw_parser()
    assert raw.get("worker_broker", "fanout") == "parse, archive"


def test_the_file_is_read_once(tmp_path: Path) -> None:
    path = write(tmp_path, ORIGINAL)
    cfg = config.load(path)
    path.write_text(ORIGINAL.replace("fanout = parse, archive", "fanout = elsewhere"))
    assert cfg.raw_parser() is cfg.raw_parser()
    assert cfg.raw_parser().get("worker_broker", "fanout") == "parse, archive"


def test_inline_comments_as_in_supervisord(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, "[worker_b]\ntype = broker\nlistento = a   ; the raw lines\n"
                                      "fanout = b, c ; two copies\n"))
    assert cfg.programs["worker_b"].options.fanout == ("b", "c")


def test_every_blocking_call_ends_within_stopwaitsecs(tmp_path: Path) -> None:
    base = "[worker_es]\ntype = esindexer\nlistento = q\n"
    config.load(write(tmp_path, base))  # the defaults fit
    with pytest.raises(ConfigError) as info:
        config.load(write(tmp_path, base + "request_timeout = 60\n"))
    assert info.value.key == "request_timeout" and "stopwaitsecs (30 s)" in str(info.value)
    config.load(write(tmp_path, base + "request_timeout = 60\nstopwaitsecs = 90\n"))
    with pytest.raises(ConfigError, match="socket_timeout of \\[redis\\]"):
        config.load(write(tmp_path, "[redis]\nurl = redis://h/0\nsocket_timeout = 40\nblock_timeout = 1\n"
                                    "[worker_b]\ntype = broker\nlistento = a\nfanout = b\n"))
    with pytest.raises(ConfigError) as info:
        config.load(write(tmp_path, "[worker_t]\ntype = tracker\nlistento = a\nplugin = repository\n"
                                    "endpoint_url = http://127.0.0.1:1/x\ntimeout = 28\n"))
    assert info.value.key == "timeout"


def test_a_line_always_fits_in_a_message(tmp_path: Path) -> None:
    base = "[logger_w]\ntype = watcher\nlogfile = a.log\npushto = q\n"
    config.load(write(tmp_path, base + "max_line_bytes = 2m\n"))
    with pytest.raises(ConfigError) as info:
        config.load(write(tmp_path, base + "max_line_bytes = 4m\n"))
    assert info.value.key == "max_line_bytes" and "max_payload_bytes" in str(info.value)
    config.load(write(tmp_path, "[redis]\nmax_payload_bytes = 64m\n" + base + "max_line_bytes = 4m\n"))
    with pytest.raises(ConfigError, match="half of max_payload_bytes"):
        config.load(write(tmp_path, "[redis]\nmessage_bytes = 10m\n"))


def test_an_unknown_key_is_named_even_when_a_required_key_is_missing_too(tmp_path: Path) -> None:
    """A misspelt required key is both: the misspelling is what the user needs to read."""
    with pytest.raises(ConfigError) as info:
        config.load(write(tmp_path, "[logger_f]\ntype = filelogger\nlistento = a\nlogfil = f\nfsycn = no\n"))
    assert info.value.key == "logfil" and "did you mean 'logfile'?" in str(info.value)
    with pytest.raises(ConfigError) as info:
        config.load(write(tmp_path, "[logger_f]\ntype = filelogger\nlistento = a\nfsycn = no\n"))
    assert info.value.key == "fsycn" and "did you mean 'fsync'?" in str(info.value)
