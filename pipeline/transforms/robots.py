"""The COUNTER robots list: user agents that are not people.

The list ships in ``pipeline/data/COUNTER_Robots_list.json`` (MIT licence beside it). A user
agent is a robot when any pattern matches it (case-insensitive regular-expression search),
as COUNTER R5 prescribes. Results are cached per distinct user agent.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from functools import lru_cache
from importlib import resources
from pathlib import Path

import orjson

LIST_NAME = "COUNTER_Robots_list.json"
AGENT_CHARS = 2048
CACHED_AGENTS = 8192
#: Set (by the worker, from ``loglines robots update``) to use a newer list than the shipped one.
OVERRIDE_ENV = "LOGLINES_ROBOTS_LIST"


def override_path(var_dir: Path) -> Path:
    return var_dir / "robots" / LIST_NAME


def load_patterns(path: Path | None = None) -> list[str]:
    if path is None and os.environ.get(OVERRIDE_ENV):
        path = Path(os.environ[OVERRIDE_ENV])
    raw = path.read_bytes() if path else resources.files("pipeline.data").joinpath(LIST_NAME).read_bytes()
    entries = orjson.loads(raw)
    if not isinstance(entries, list):
        raise ValueError("the robots list must be a JSON array of {\"pattern\": ...} objects")
    return [str(e["pattern"]) for e in entries if isinstance(e, dict) and e.get("pattern")]


class RobotFilter:
    def __init__(self, patterns: Iterable[str]) -> None:
        compiled = []
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"bad robots pattern {pattern!r}: {exc}") from None
            compiled.append(f"(?:{pattern})")
        self._regex = re.compile("|".join(compiled) or r"(?!)", re.IGNORECASE)
        self._seen: dict[str, bool] = {}

    def is_robot(self, user_agent: str) -> bool:
        """Whether the agent matches; only its first :data:`AGENT_CHARS` characters are looked
        at (no real agent is longer, and a hostile megabyte costs no more than they do). The
        answers for at most :data:`CACHED_AGENTS` agents of real length are remembered."""
        seen = self._seen.get(user_agent)
        if seen is None:
            seen = self._regex.search(user_agent[:AGENT_CHARS]) is not None
            if len(user_agent) <= AGENT_CHARS:
                if len(self._seen) >= CACHED_AGENTS:
                    self._seen.clear()
                self._seen[user_agent] = seen
        return seen


@lru_cache(maxsize=1)
def counter_robots() -> RobotFilter:
    return RobotFilter(load_patterns())


def install(source: Path, var_dir: Path) -> int:
    """Validate a robots list and make it the one workers use; how many patterns it has."""
    try:
        patterns = load_patterns(source)
        RobotFilter(patterns)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{source}: not a usable COUNTER robots list: {exc}") from None
    if not patterns:
        raise ValueError(f"{source}: the list has no patterns")
    target = override_path(var_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(source.read_bytes())
    tmp.replace(target)
    return len(patterns)
