"""Where queries and reports read: the indices an ``esindexer`` section writes.

A :class:`Source` is that section's connection, the pattern that matches every index its
``index`` makes (``access-%Y.%m.%d`` -> ``access-*``, which also holds
``access-out-of-range``) and its ``time_field``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

from elasticsearch import Elasticsearch

from pipeline.config import Config
from pipeline.errors import ConfigError
from pipeline.ops.esops import index_pattern
from pipeline.query.params import ParamError
from pipeline.sinks.esindexer import EsIndexerOptions, client


@dataclass(frozen=True)
class Source:
    name: str  # the esindexer section
    es: Elasticsearch
    index: str  # the search pattern
    time_field: str
    template: str  # what `loglines es setup` installs for it: none, access, kontext
    _fields: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def search(self, **kwargs: Any) -> dict[str, Any]:
        """A search over every index of the section (none yet is an empty answer, not an error)."""
        return dict(self.es.search(index=self.index, ignore_unavailable=True, allow_no_indices=True,
                                   **kwargs))

    def fields(self, ttl: float = 60.0) -> dict[str, set[str]]:
        """Field name -> its mapped types across the indices (cached ``ttl`` seconds)."""
        cached = self._fields.get("at")
        if cached is None or time.monotonic() - cached > ttl:
            caps = self.es.field_caps(index=self.index, fields="*", ignore_unavailable=True,
                                      allow_no_indices=True)
            found = {name: {t for t in kinds if not t.startswith("_")}
                     for name, kinds in dict(caps.get("fields") or {}).items() if not name.startswith("_")}
            self._fields.update(at=time.monotonic(), value={k: v for k, v in found.items() if v})
        value: dict[str, set[str]] = self._fields["value"]
        return value

    def aggregatable(self, param: str, field: str) -> str:
        """``field`` if it can be counted or sorted on; else a :class:`ParamError` saying what
        to use."""
        types = self.fields().get(field)
        if types is None:
            raise ParamError(param, f"no field {field[:100]!r} in {self.index}")
        if types <= {"text", "match_only_text", "object", "nested", "flattened"}:
            better = f" (use {field}.keyword)" if f"{field}.keyword" in self.fields() else ""
            raise ParamError(param, f"{field!r} is {'/'.join(sorted(types))}, which cannot be counted "
                                    f"or sorted on{better}")
        return field


def esindexers(cfg: Config) -> dict[str, EsIndexerOptions]:
    return {name: p.options for name, p in cfg.programs.items() if p.type == "esindexer"}


def esindexer_options(cfg: Config, name: str, section: str = "", key: str = "esindexer") -> EsIndexerOptions:
    """The options of the esindexer section ``name`` (the only one when ``name`` is empty), or a
    :class:`ConfigError` naming what is wrong."""
    indexers = esindexers(cfg)
    if not name:
        if len(indexers) != 1:
            raise ConfigError("name the esindexer section to read (" + (", ".join(indexers) or
                              "there is none") + ")", file=str(cfg.path), section=section or None,
                              key=key if section else None)
        name = next(iter(indexers))
    if name not in indexers:
        kind = cfg.programs[name].type or "plain program" if name in cfg.programs else ""
        raise ConfigError(f"[{name}] is {'a ' + kind if kind else 'not a section'}, not an esindexer "
                          f"(esindexers: {', '.join(indexers) or 'none'})", file=str(cfg.path),
                          section=section or None, key=key if section else None, value=name)
    return indexers[name]


def source(cfg: Config, name: str, request_timeout: float = 0.0, section: str = "") -> Source:
    opts = esindexer_options(cfg, name, section)
    if request_timeout:
        opts = replace(opts, request_timeout=request_timeout)
    resolved = name or next(iter(esindexers(cfg)))
    return Source(resolved, client(opts), index_pattern(opts.index), opts.time_field, opts.template)
