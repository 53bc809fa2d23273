"""The test Elasticsearch node is real: the official 8.x client indexes into it, ids hold."""

from __future__ import annotations

import pytest
from elasticsearch import ConflictError, Elasticsearch, helpers


@pytest.mark.slow
def test_real_elasticsearch_8_with_the_official_client(es_url: str) -> None:
    es = Elasticsearch(es_url, request_timeout=30)
    version = es.nodes.info(node_id="_local")["nodes"]
    assert all(node["version"].startswith("8.") for node in version.values())
    actions = [{"_op_type": "create", "_index": "node-check", "_id": f"id-{n}", "n": n} for n in range(500)]
    assert helpers.bulk(es, actions, refresh=True) == (500, [])
    with pytest.raises(ConflictError):
        es.create(index="node-check", id="id-7", document={"n": 7})
    assert es.count(index="node-check")["count"] == 500
    es.indices.delete(index="node-check")
