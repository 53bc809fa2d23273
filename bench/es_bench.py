"""P3: the Elasticsearch sink's documents/s against a minimal raw _bulk loader (orjson NDJSON
over one keep-alive connection), same documents, same node, same bulk size. P4 (end to end,
beside rsyslog) is in bench/peers_bench.py."""

from __future__ import annotations

import argparse
import http.client
import statistics
import time
from urllib.parse import urlsplit

import orjson
from elasticsearch import Elasticsearch

from bench.common import elasticsearch, row
from bench.genlog import lines
from pipeline.core.lifecycle import Flags
from pipeline.plugins import accesslog
from pipeline.sinks.esindexer import EsIndexerOptions, Indexer, document_id

BULK = 500


def records(count: int) -> list[dict]:
    out = []
    for n, text in enumerate(lines(count, seed=21)):
        record = accesslog.parse_line(text)
        record.update({"service": "bench", "src": "p3", "off": n, "logline": text, "@timestamp": record["time"]})
        out.append(record)
    return out


def fresh(es: Elasticsearch, index: str) -> None:
    for old in ("p3-ours", "p3-raw", index):  # each run starts from an empty node: no merges left over
        es.options(ignore_status=404).indices.delete(index=old)
    es.indices.create(index=index, settings={"number_of_replicas": 0, "refresh_interval": "30s"})


def ours(es: Elasticsearch, url: str, docs: list[dict]) -> float:
    fresh(es, "p3-ours")
    indexer = Indexer(EsIndexerOptions(listento="x", index="p3-ours", hosts=(url,), batch_docs=BULK),
                      Elasticsearch(url, request_timeout=120), Flags(), "bench")
    started = time.perf_counter()
    for i in range(0, len(docs), BULK):
        assert not indexer.index(docs[i:i + BULK], "bench", "x")
    return len(docs) / (time.perf_counter() - started)


def raw_loader(es: Elasticsearch, url: str, docs: list[dict]) -> float:
    fresh(es, "p3-raw")
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    started = time.perf_counter()
    for i in range(0, len(docs), BULK):
        body = b"".join(orjson.dumps({"create": {"_index": "p3-raw", "_id": document_id(d, ())}}) + b"\n"
                        + orjson.dumps(d) + b"\n" for d in docs[i:i + BULK])
        conn.request("POST", "/_bulk", body=body, headers={"Content-Type": "application/x-ndjson"})
        response = conn.getresponse()
        result = orjson.loads(response.read())
        assert response.status == 200 and not result["errors"]
    return len(docs) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with elasticsearch() as (url, _pid):
        es = Elasticsearch(url, request_timeout=120)
        docs = records(args.docs)
        ours(es, url, docs[:10_000])  # warm up the node and both clients
        raw_loader(es, url, docs[:10_000])
        pairs = [(ours(es, url, docs), raw_loader(es, url, docs)) for _ in range(args.runs)]  # interleaved
        ours_all, raw_all = sorted(p[0] for p in pairs), sorted(p[1] for p in pairs)
        ours_med, ours_low, ours_high = statistics.median(ours_all), ours_all[0], ours_all[-1]
        raw_med, raw_low, raw_high = statistics.median(raw_all), raw_all[0], raw_all[-1]
        print(f"esindexer: {ours_med:,.0f} docs/s (median of {args.runs}, {ours_low:,.0f}..{ours_high:,.0f})")
        print(f"raw _bulk loader: {raw_med:,.0f} docs/s (median of {args.runs}, {raw_low:,.0f}..{raw_high:,.0f})")
        print(f"ratio esindexer/raw: {ours_med / raw_med:.2f}x")
        row(f"P3 Elasticsearch sink vs raw _bulk loader (docs/s, median of {args.runs})",
            f"{ours_med:,.0f}", f"{raw_med:,.0f}", f"{ours_med / raw_med:.2f}x", ">= 0.9x")


if __name__ == "__main__":
    main()
