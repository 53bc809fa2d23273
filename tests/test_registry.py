"""A worker type is one module plus one registry entry: a throwaway type registered here shows
up in the config loader, ``loglines check``, ``loglines status`` and the generated program files,
with nothing else in the tree knowing about it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline import config, registry
from pipeline.cli import main
from pipeline.config import datatypes as dt
from pipeline.config.options import key as option
from pipeline.errors import ConfigError


@dataclass(frozen=True)
class EchoOptions:
    listento: str = option(dt.name, "queue the items come from")
    echo_to: tuple[str, ...] = option(dt.name_list, "queues each item is copied to")
    loudness: int = option(dt.integer(0, 11), "how loud", 3)


def run(cfg: Any, program: Any, flags: Any) -> int:
    return 0


ECHO = registry.Component("echo", "copies items (a test type)", EchoOptions, run,
                          reads=("listento",), writes=("echo_to",), single_process=True)


@pytest.fixture
def echo() -> Iterator[registry.Component]:
    registry.register(ECHO)
    yield ECHO
    registry.unregister("echo")


def test_a_registered_type_is_loaded_checked_shown_and_generated(echo, write_cfg, r, tmp_path: Path,
                                                                capsys) -> None:  # type: ignore[no-untyped-def]
    path = write_cfg("[worker_echo]\ntype = echo\nlistento = in\necho_to = out1, out2\nloudness = 11\n")
    cfg = config.load(path)
    program = cfg.programs["worker_echo"]
    assert isinstance(program.options, EchoOptions) and program.options.echo_to == ("out1", "out2")

    assert main(["-c", str(path), "check"]) == 0
    assert "worker_echo" in capsys.readouterr().out

    assert main(["-c", str(path), "status", "--json"]) == 0
    status = orjson.loads(capsys.readouterr().out)
    assert status["workers"]["worker_echo"]["type"] == "echo"
    assert {"in", "out1", "out2"} <= set(status["queues"])

    assert main(["-c", str(path), "supervisord-config"]) == 0
    conf = (tmp_path / "workers_available" / "worker_echo.conf").read_text()
    assert "[program:worker_echo]" in conf and "worker worker_echo" in conf

    path.write_text(path.read_text().replace("loudness = 11", "loudness = 12"))
    with pytest.raises(ConfigError, match="<= 11"):
        config.load(path)
    path.write_text(path.read_text().replace("loudness = 12", "loudness = 1\nnumprocs = 2"))
    with pytest.raises(ConfigError, match="one process"):
        config.load(path)
    path.write_text(path.read_text().replace("loudness = 1", "loudnes = 1"))
    with pytest.raises(ConfigError, match="did you mean 'loudness'"):
        config.load(path)


def test_every_builtin_type_is_declared_once() -> None:
    types = registry.components()
    assert list(types)[:7] == ["watcher", "parser", "broker", "filelogger", "tracker", "esindexer",
                               "schedule"]
    for name, component in types.items():
        assert component.type == name and component.doc
        fields = set(component.options.__dataclass_fields__)
        assert set(component.reads) | set(component.writes) <= fields, name
    assert registry.original_commands() == {"logfilewatcher.py": "watcher", "broker.py": "broker",
                                            "logfromqueue.py": "filelogger", "pirus2.py": "tracker"}


def test_loading_every_type_leaves_the_heavy_libraries_to_the_workers_using_them() -> None:
    """Every worker loads every type's module (its section's options are checked against the
    registry): what only HTTP workers, the monitor or a forwarder use is imported where used,
    so that a watcher or an indexer does not carry it (about 5 MiB a process)."""
    import subprocess
    import sys

    probe = ("import sys; from pipeline import registry, cli; registry.components(); "
             "print(sorted(m for m in ('uvicorn', 'prometheus_client', 'supervisor.xmlrpc', 'sqlite3') "
             "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]", done.stdout
