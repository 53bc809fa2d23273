"""What ``loglines query`` and ``loglines report`` need besides the query modules: which
section's settings to use, and a progress bar (on stderr, only when it is a terminal)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TextIO

from pipeline.config import Config
from pipeline.errors import ConfigError
from pipeline.query.api import ApiOptions
from pipeline.query.source import Source, source


@dataclass(frozen=True)
class Target:
    src: Source
    api: ApiOptions | None  # the api section's options, when there is one to follow


def target(cfg: Config, api: str = "", esindexer: str = "") -> Target:
    """The api section named (or the only one, unless an esindexer is named), else the
    esindexer named (or the only one) with the default settings."""
    apis = cfg.workers("api")
    if api and api not in apis:
        raise ConfigError(f"no api section {api!r} (api sections: {', '.join(apis) or 'none'})", file=str(cfg.path))
    if not api and not esindexer and len(apis) == 1:
        api = next(iter(apis))
    if api:
        opts: ApiOptions = apis[api].options
        return Target(source(cfg, esindexer or opts.esindexer, opts.request_timeout, api), opts)
    return Target(source(cfg, esindexer, 60.0), None)


class Progress:
    """``[#####     ]  45.0%  90,000 / 200,000 events`` (or a count when the total is unknown),
    redrawn at most 5 times a second."""

    def __init__(self, what: str, total: int = 0, quiet: bool = False, out: TextIO | None = None) -> None:
        self.out = out or sys.stderr
        self.what, self.total = what, total
        self.on = not quiet and self.out.isatty()
        self.shown = 0.0
        self.done = 0

    def update(self, done: int) -> None:
        self.done = done
        if not self.on or time.monotonic() - self.shown < 0.2:
            return
        self.shown = time.monotonic()
        self._draw()

    def _draw(self) -> None:
        if self.total:
            share = min(1.0, self.done / self.total)
            bar = "#" * int(30 * share)
            self.out.write(f"\r[{bar:<30}] {100 * share:5.1f}%  {self.done:,} / {self.total:,} {self.what}")
        else:
            self.out.write(f"\r{self.done:,} {self.what}")
        self.out.flush()

    def finish(self) -> None:
        if self.on:
            self._draw()
            self.out.write("\n")
            self.out.flush()
