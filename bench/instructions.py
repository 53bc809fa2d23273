"""The parser's work in CPU instructions per line, counted by callgrind: the same figure on a
quiet machine and a loaded one (lines/s move with the machine; instructions do not), so that a
change to a plugin or to the parser can be judged anywhere, to a fraction of a percent.

Two figures for ``accesslog`` (``kontext`` with ``--plugin``): the plugin's ``parse_batch`` over
runs of 500 lines, and the parser's whole processing of a delivery (decoding the message, the
plugin, the carried fields, encoding the records), Redis left out. Each is the difference
between a run that does the work and one that stops just before it, so interpreter start-up and
imports cancel out. String hashing is fixed (``PYTHONHASHSEED=0``): dictionaries then lay out the
same way every run, and the count repeats exactly. Needs ``valgrind`` (Debian's package); an
instruction is not a nanosecond (a cache miss costs many), so quote lines/s from
``bench.parser_bench`` beside it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import row

RUN_LINES = 500
_COLLECTED = re.compile(rb"Collected\s*:\s*(\d+)")


def child(path: Path, plugin_name: str, what: str, work: bool) -> None:
    """Runs under callgrind: prepares everything, then does the work (or not)."""
    import orjson

    from pipeline import plugin
    from pipeline.core import message
    from pipeline.transforms.parser import ParserOptions, make_processor

    lines = path.read_text().splitlines()
    runs = [lines[i:i + RUN_LINES] for i in range(0, len(lines), RUN_LINES)]
    raws, off = [], 0
    for run in runs:
        raws.append(orjson.dumps([{"service": "bench", "src": "bench:1", "off": off, "loglines": run}]))
        off += sum(len(line.encode()) + 1 for line in run)
    options = {"timezone": "Europe/Prague"} if plugin_name == "kontext" else None
    loaded = plugin.load(plugin_name, options=options)
    process = make_processor(loaded, ParserOptions(listento="raw", pushto=("parsed",), plugin=plugin_name), "bench")
    parse_batch = loaded.parse_batch
    assert parse_batch is not None, f"plugin {plugin_name} has no parse_batch"
    process(message.decode_elements(raws[0], 1 << 26), "raw")  # caches and lazy imports warmed
    if not work:
        return
    if what == "parse_batch":
        for run in runs:
            parse_batch(run)
    else:
        for raw in raws:
            process(message.decode_elements(raw, 1 << 26), "raw")


def count(path: Path, plugin_name: str, what: str, work: bool) -> int:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("bench.instructions needs valgrind (apt-get install valgrind)")
    command = [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, "-m",
               "bench.instructions", "--child", str(path), "--plugin", plugin_name, "--what", what]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(command + (["--work"] if work else []), capture_output=True, env=env, check=False)
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"callgrind run failed ({done.returncode}): {done.stderr[-2000:].decode(errors='replace')}")
    return int(found.group(1))


def per_line(path: Path, plugin_name: str, what: str, lines: int) -> int:
    """Instructions per line: the run with the work less the run without it (both at once)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        without, with_work = pool.map(lambda work: count(path, plugin_name, what, work), (False, True))
    return round((with_work - without) / lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--plugin", default="accesslog")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--what", default="process", help=argparse.SUPPRESS)
    parser.add_argument("--work", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.plugin, args.what, args.work)
        return
    from bench import genlog

    with tempfile.TemporaryDirectory(prefix="loglines-bench-") as work:
        path = Path(work) / "lines.txt"
        made = (genlog.kontext_lines(args.lines) if args.plugin == "kontext" else genlog.lines(args.lines))
        path.write_text("\n".join(made) + "\n")
        for what in ("parse_batch", "process"):
            figure = per_line(path, args.plugin, what, args.lines)
            label = "the plugin's parse_batch" if what == "parse_batch" else "the parser's processing"
            print(f"{label} ({args.plugin}): {figure:,} instructions a line ({args.lines:,} lines)")
            row(f"P2 instructions a line, {label} ({args.plugin}, callgrind)", f"{figure:,}")


if __name__ == "__main__":
    main()
