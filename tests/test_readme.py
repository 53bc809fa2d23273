"""The README's examples work: every ini block loads (a fragment with a minimal [supervisor]
and [redis] head), its plugins load and its queues hold no error; the IRUS section that
``loglines init`` offers, uncommented as it says, is a whole pipeline."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from pipeline import config, registry
from pipeline.config import graph
from pipeline.config.starter import starter_config

README = Path(__file__).resolve().parents[1] / "README.md"
HEAD = "[supervisor]\npassword = x\n\n[redis]\nurl = redis://127.0.0.1:1/0\n\n"
BLOCK = re.compile(r"^( *)```ini\n(.*?)^\1```", re.S | re.M)


def ini_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, text) of every ```ini block, list indentation removed."""
    return [(text.count("\n", 0, m.start()) + 1, textwrap.dedent(m.group(2)))
            for m in BLOCK.finditer(text)]


def load_whole(tmp_path: Path, text: str) -> config.Config:
    """Load a block as ``loglines check`` would: the file, every plugin, the queues."""
    path = tmp_path / "loglines.cfg"
    etc = tmp_path / "etc"
    etc.mkdir(exist_ok=True)
    for name in set(re.findall(r"= /etc/loglines/([\w.-]+)", text)):  # the tokens files it names
        (etc / name).write_text("reader:0123456789abcdef0123\n")
    text = text.replace("= /etc/loglines/", f"= {etc}/")
    path.write_text(text if "[supervisor]" in text else HEAD + text)
    cfg = config.load(path)
    for program in cfg.programs.values():
        loader = registry.get(program.type).plugin if program.type else None
        if loader is not None:
            loader(cfg, program)
    errors = [p.message for p in graph.check(cfg) if p.error]
    assert not errors, errors
    return cfg


BLOCKS = ini_blocks(README.read_text())


def test_the_readme_has_its_examples() -> None:
    sections = {name for _, text in BLOCKS for name in re.findall(r"^\[(\w+)\]", text, re.M)}
    assert len(BLOCKS) >= 6
    assert {"worker_irus", "worker_es", "worker_weekly", "worker_parse", "logger_not_counted",
            "logger_archive", "worker_copy"} <= sections


@pytest.mark.parametrize("line, text", BLOCKS, ids=[f"README.md:{n}" for n, _ in BLOCKS])
def test_every_ini_block_of_the_readme_loads(tmp_path: Path, line: int, text: str) -> None:
    load_whole(tmp_path, text)


def test_the_irus_pipeline_of_the_readme_is_whole(tmp_path: Path) -> None:
    """Watcher -> parser (downloads and item pages) -> tracker, what is not counted -> a file:
    every queue has both its ends."""
    text = README.read_text()
    irus = text[text.index("## Reporting downloads to IRUS"):]
    block = ini_blocks(irus)[0][1]
    cfg = load_whole(tmp_path, block)
    assert [p.type for p in cfg.programs.values()] == ["watcher", "parser", "tracker", "filelogger"]
    assert cfg.programs["worker_parse"].options.accept == ("kind=download|item",)
    assert cfg.programs["logger_access"].options.start == "end"
    assert graph.check(cfg) == []


def uncomment_irus(text: str) -> str:
    """What the commented IRUS section of the starter config says to do."""
    head, _, tail = text.partition("#[worker_irus]")
    tail = "\n".join(line[1:] if line.startswith("#") else line for line in ("#[worker_irus]" + tail).splitlines())
    parse = re.compile(r"(\[worker_parse\].*?)pushto = downloads\n(accept = )kind=download\n", re.S)
    head, count = parse.subn(r"\1pushto = downloads, counted\n\2kind=download|item\n", head)
    assert count == 1
    return head + tail + "\n"


def test_init_offers_the_irus_pipeline_as_a_commented_section(tmp_path: Path) -> None:
    starter = starter_config("a-password")
    assert "start = beginning (the default)" in starter and "#start = end" in starter
    assert "loglines backfill" in starter
    plain = load_whole(tmp_path, starter)
    assert "worker_irus" not in plain.programs
    log = tmp_path / "access.log"
    log.touch()
    cfg = load_whole(tmp_path, uncomment_irus(starter).replace("/var/log/apache2/access.log", str(log)))
    assert list(cfg.programs) == ["logger_access", "worker_parse", "logger_downloads", "logger_other",
                                  "worker_irus", "logger_not_counted"]
    assert cfg.programs["worker_irus"].options.listento == "counted"
    assert graph.check(cfg) == []
