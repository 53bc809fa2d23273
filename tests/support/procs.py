"""Starting loglines workers as real processes for end-to-end tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SEQ = re.compile(r"seq=(\d+)")


class Worker:
    def __init__(self, cfg: Path, name: str, logdir: Path, process_name: str = "") -> None:
        self.cfg, self.name, self.logdir = cfg, name, logdir
        self.process_name = process_name  # as supervisord's numprocs names them: a distinct consumer
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def logfile(self) -> Path:
        return self.logdir / f"{self.process_name or self.name}.log"

    def start(self) -> Worker:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        if self.process_name:
            env["SUPERVISOR_PROCESS_NAME"] = self.process_name
        log = open(self.logfile, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "-c", str(self.cfg), "worker", self.name],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.cfg.parent)
        return self

    def kill(self, sig: int = signal.SIGKILL) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill(signal.SIGTERM)

    def restart(self) -> None:
        self.kill()
        self.start()


def count_seq(path: Path) -> tuple[dict[int, int], int]:
    """seq -> times seen in a file, and how many lines carry no seq."""
    seen: dict[int, int] = {}
    other = 0
    if not path.exists():
        return seen, other
    with path.open("rb") as handle:
        for line in handle:
            match = SEQ.search(line.decode("utf-8", "replace"))
            if match:
                n = int(match.group(1))
                seen[n] = seen.get(n, 0) + 1
            else:
                other += 1
    return seen, other


def oracle(seen: dict[int, int], written: int) -> dict[str, int]:
    """lost, duplicated and unexpected sequence numbers."""
    return {
        "lost": sum(1 for n in range(written) if n not in seen),
        "duplicated": sum(c - 1 for c in seen.values() if c > 1),
        "unexpected": sum(1 for n in seen if not 0 <= n < written),
    }
