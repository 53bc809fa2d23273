"""``loglines es``: set up index templates, run migrations, take snapshots.

Templates give the built-in record kinds proper mappings (``ip`` for client addresses, dates,
keywords). Migrations are Python modules ``NNNN_name.py`` with ``migrate(es)``, applied in
number order and recorded in the ``loglines-migrations`` index, so running twice does nothing
new. Snapshots go to a filesystem repository (registered when asked).
"""

from __future__ import annotations

import importlib.util
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elastic_transport import ConnectionError as EsConnectionError
from elasticsearch import ApiError, Elasticsearch

from pipeline.errors import ConfigError, LoglinesError
from pipeline.sinks.esids import MARK, ORDERED
from pipeline.sinks.esindexer import EsIndexerOptions

MIGRATIONS_INDEX = "loglines-migrations"
_MIGRATION = re.compile(r"^(\d+)_(\w+)\.py$")

_KEYWORD = {"type": "keyword", "ignore_above": 2048}
_STORED = {"type": "keyword", "index": False, "doc_values": False}  # in _source only
_COMMON = {"service": _KEYWORD, "src": _KEYWORD, "off": {"type": "long"}, "@timestamp": {"type": "date"},
           "time": {"type": "date"}}
MAPPINGS: dict[str, dict[str, Any]] = {
    "access": {"properties": {
        **_COMMON,
        "client_ip": {"type": "ip"}, "remote_host": _KEYWORD, "ident": _KEYWORD, "user": _KEYWORD,
        "method": _KEYWORD, "url": _KEYWORD, "protocol": _KEYWORD, "status": {"type": "short"},
        "bytes": {"type": "long"}, "referrer": _KEYWORD,
        "user_agent": {**_KEYWORD, "fields": {"text": {"type": "text"}}}, "xff": _KEYWORD,
        "kind": _KEYWORD, "repository": _KEYWORD, "item_id": _KEYWORD, "logline": _STORED,
        # the COUNTER keys (pipeline/plugins/_counter.py), which reports aggregate on
        "user_key": _KEYWORD, "session": _KEYWORD, "session_hash": _KEYWORD, "session_id": _KEYWORD,
        "click": _KEYWORD, "click_slots": _KEYWORD, "robot": {"type": "boolean"},
    }},
    "kontext": {"properties": {
        **_COMMON,
        "ip": {"type": "ip"}, "user_id": _KEYWORD, "action": _KEYWORD, "proc_time": {"type": "float"},
        "user_agent": {**_KEYWORD, "fields": {"text": {"type": "text"}}}, "is_bot": {"type": "boolean"},
        "id": _KEYWORD, "pid": {"type": "long"}, "params": {"type": "object", "dynamic": True},
    }},
}


class EsOpsError(LoglinesError):
    pass


def index_pattern(index: str) -> str:
    """``access-%Y.%m.%d`` -> ``access-*``."""
    return re.sub(r"(%[a-zA-Z])+([^a-zA-Z0-9]*(%[a-zA-Z])+)*", "*", index)


def check(es: Elasticsearch) -> str:
    """Cluster name and version, or an :class:`EsOpsError` saying what is wrong."""
    try:
        health = es.cluster.health()
        nodes = es.nodes.info(node_id="_local")["nodes"]
    except EsConnectionError as exc:
        raise EsOpsError(f"cannot reach Elasticsearch: {exc}") from None
    except ApiError as exc:
        hint = {401: "wrong username/password or api_key", 403: "the user lacks privileges"}
        raise EsOpsError(f"Elasticsearch answered {exc.meta.status}: "
                         f"{hint.get(exc.meta.status, exc.message)}") from None
    version = next(iter(nodes.values()))["version"]
    return f"cluster {health['cluster_name']!r}, Elasticsearch {version}, status {health['status']}"


def setup(es: Elasticsearch, indexers: dict[str, EsIndexerOptions]) -> list[str]:
    done = []
    for name, opts in indexers.items():
        if opts.template == "none":
            continue
        template = f"loglines-{name}"
        # the id scheme the indices it makes take (an index the indexer creates itself is marked
        # by the indexer; this covers those a bulk request makes, for instance after a deletion)
        ids = "sha1" if opts.id_scheme == "sha1" else ORDERED
        es.indices.put_index_template(
            name=template, index_patterns=[index_pattern(opts.index)], priority=200,
            template={"mappings": {**MAPPINGS[opts.template], "_meta": {MARK: ids}}},
            meta={"managed_by": "loglines", "kind": opts.template})
        done.append(f"{template}: {opts.template} mappings for {index_pattern(opts.index)}")
    return done


@dataclass(frozen=True)
class Migration:
    number: int
    name: str
    path: Path


def migrations(folder: Path) -> list[Migration]:
    found: dict[int, Migration] = {}
    if not folder.is_dir():
        raise ConfigError(f"no migrations folder {folder}")
    for path in sorted(folder.iterdir()):
        match = _MIGRATION.match(path.name)
        if not match:
            continue
        number = int(match.group(1))
        if number in found:
            raise ConfigError(f"two migrations numbered {number}: {found[number].path.name} and {path.name}")
        found[number] = Migration(number, match.group(2), path)
    return [found[n] for n in sorted(found)]


def migrate(es: Elasticsearch, folder: Path) -> list[str]:
    """Apply what is not applied yet, in order; what was applied now."""
    todo = migrations(folder)
    es.options(ignore_status=400).indices.create(
        index=MIGRATIONS_INDEX, mappings={"properties": {"name": _KEYWORD, "applied": {"type": "date"}}})
    applied = {hit["_id"] for hit in es.search(index=MIGRATIONS_INDEX, size=10_000, source=False)["hits"]["hits"]}
    done = []
    for migration in todo:
        if str(migration.number) in applied:
            continue
        spec = importlib.util.spec_from_file_location(f"loglines_migration_{migration.number}", migration.path)
        if spec is None or spec.loader is None:
            raise EsOpsError(f"cannot load {migration.path}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if not callable(getattr(module, "migrate", None)):
            raise EsOpsError(f"{migration.path.name} has no migrate(es) function")
        module.migrate(es)
        es.create(index=MIGRATIONS_INDEX, id=str(migration.number), refresh=True,
                  document={"name": migration.name, "applied": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        done.append(f"{migration.number:04d} {migration.name}")
    return done


def register_repository(es: Elasticsearch, repository: str, location: str) -> None:
    es.snapshot.create_repository(name=repository, repository={"type": "fs", "settings": {"location": location}})


def snapshot_create(es: Elasticsearch, repository: str, name: str = "", indices: str = "") -> dict[str, Any]:
    name = name or time.strftime("loglines-%Y.%m.%d-%H%M%S", time.gmtime())
    body: dict[str, Any] = {"wait_for_completion": True}
    if indices:
        body["indices"] = indices
    result = es.snapshot.create(repository=repository, snapshot=name, **body)
    return dict(result["snapshot"])


def snapshot_list(es: Elasticsearch, repository: str) -> list[dict[str, Any]]:
    return list(es.snapshot.get(repository=repository, snapshot="_all")["snapshots"])


def snapshot_status(es: Elasticsearch, repository: str, name: str) -> dict[str, Any]:
    return dict(es.snapshot.status(repository=repository, snapshot=name)["snapshots"][0])
