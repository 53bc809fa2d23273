"""loglines es setup / migrate / snapshot against a real Elasticsearch node."""

from __future__ import annotations

from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from pipeline.cli import main
from pipeline.ops.esops import index_pattern

pytestmark = pytest.mark.slow


def cfg_for(write_cfg, url: str, index: str = "access-%Y.%m.%d", template: str = "access") -> Path:  # type: ignore[no-untyped-def]
    return write_cfg(f"[worker_es]\ntype = esindexer\nlistento = parsed\nhosts = {url}\nindex = {index}\n"
                     f"template = {template}\n")


def test_index_pattern() -> None:
    assert index_pattern("access-%Y.%m.%d") == "access-*"
    assert index_pattern("kontext-%Y-%m") == "kontext-*"
    assert index_pattern("plain") == "plain"


def test_setup_checks_the_cluster_and_installs_mappings(es_url: str, write_cfg, capsys) -> None:  # type: ignore[no-untyped-def]
    cfg = cfg_for(write_cfg, es_url, "setupcheck-%Y.%m.%d")
    assert main(["-c", str(cfg), "es", "setup"]) == 0
    out = capsys.readouterr().out
    assert "cluster 'loglines-test', Elasticsearch 8." in out and "setupcheck-*" in out
    es = Elasticsearch(es_url)
    es.index(index="setupcheck-2024.10.10", id="1", refresh=True,
             document={"client_ip": "2001:db8::7", "time": "2024-10-10T13:55:36+02:00", "status": 200,
                       "logline": "2001:db8::7 - - [10/Oct/2024:13:55:36 +0200] ..."})
    mapping = es.indices.get_mapping(index="setupcheck-2024.10.10")["setupcheck-2024.10.10"]["mappings"]
    assert mapping["properties"]["client_ip"]["type"] == "ip"
    assert mapping["properties"]["time"]["type"] == "date"
    hits = es.search(index="setupcheck-*", query={"term": {"client_ip": "2001:db8::/32"}})
    assert hits["hits"]["total"]["value"] == 1
    assert hits["hits"]["hits"][0]["_source"]["logline"].startswith("2001:db8::7 - - [")  # kept, not indexed
    assert mapping["properties"]["logline"]["index"] is False
    assert mapping["_meta"] == {"loglines_ids": "ordered"}  # an index the template makes takes ordered ids


def test_setup_says_what_is_wrong_when_unreachable(write_cfg, capsys) -> None:  # type: ignore[no-untyped-def]
    from tests.support.servers import free_port

    cfg = cfg_for(write_cfg, f"http://127.0.0.1:{free_port()}")
    assert main(["-c", str(cfg), "es", "setup"]) == 1
    assert "cannot reach Elasticsearch" in capsys.readouterr().err


def test_migrations_in_order_once_and_no_duplicate_numbers(es_url: str, write_cfg, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    for name in ("loglines-migrations", "migrated-a"):
        Elasticsearch(es_url).options(ignore_status=404).indices.delete(index=name)
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_create.py").write_text(
        "def migrate(es):\n    es.indices.create(index='migrated-a')\n")
    (folder / "0002_alias.py").write_text(
        "def migrate(es):\n    es.indices.put_alias(index='migrated-a', name='migrated-current')\n")
    cfg = cfg_for(write_cfg, es_url)
    assert main(["-c", str(cfg), "es", "migrate", "--dir", str(folder)]) == 0
    assert capsys.readouterr().out.splitlines() == ["applied 0001 create", "applied 0002 alias"]
    assert main(["-c", str(cfg), "es", "migrate", "--dir", str(folder)]) == 0  # safe to run twice
    assert capsys.readouterr().out.strip() == "nothing to apply"
    assert Elasticsearch(es_url).indices.exists_alias(name="migrated-current")
    (folder / "0002_again.py").write_text("def migrate(es):\n    pass\n")
    assert main(["-c", str(cfg), "es", "migrate", "--dir", str(folder)]) == 1
    assert "two migrations numbered 2" in capsys.readouterr().err


def test_snapshot_create_list_status_and_restore(es_node_factory, write_cfg, capsys) -> None:  # type: ignore[no-untyped-def]
    node = es_node_factory()
    es = Elasticsearch(node.url, request_timeout=60)
    es.index(index="keepme", id="1", document={"a": 1}, refresh=True)
    cfg = cfg_for(write_cfg, node.url)
    location = str(node.work / "home" / "snapshots" / "weekly")
    assert main(["-c", str(cfg), "es", "snapshot", "create", "snap-1", "--repository", "backups",
                 "--register", location, "--indices", "keepme"]) == 0
    assert "snapshot snap-1: SUCCESS, 1 indices" in capsys.readouterr().out
    assert main(["-c", str(cfg), "es", "snapshot", "list", "--repository", "backups"]) == 0
    assert "snap-1  SUCCESS" in capsys.readouterr().out
    assert main(["-c", str(cfg), "es", "snapshot", "status", "snap-1", "--repository", "backups"]) == 0
    assert "snap-1: SUCCESS" in capsys.readouterr().out
    es.snapshot.restore(repository="backups", snapshot="snap-1", indices="keepme",
                        rename_pattern="keepme", rename_replacement="restored-keepme", wait_for_completion=True)
    assert es.get(index="restored-keepme", id="1")["_source"] == {"a": 1}
