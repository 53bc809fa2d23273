"""P8: a COUNTER Item Report over 12 months of 1,000,000 indexed access-log records, in seconds,
beside a plain script that scrolls every record into Python and counts the same.

The records are a repository's year: visits by 60,000 users (12 % robots) to 25,000 items of
uneven popularity, item pages, downloads, thumbnails and static files, statuses 200/304/206/404,
repeats within seconds (double clicks, also in chains). They are generated as access-log lines,
parsed by the ``accesslog`` plugin (so they carry the COUNTER keys the plugin adds) and
bulk-loaded straight into monthly indices with the ``access`` template. Ours: ``loglines report
ir`` (composite aggregations; the double-click candidates read by their slots) and the TSV. The
peer: ``scan`` (scroll) of every record of the period, then the same rules in Python, from the
raw fields (status, kind, robot flag, IP, user agent, URL, time). Both must give the same
numbers; the benchmark checks it.

    python -m bench.report_bench [--records 1000000] [--runs 3] [--keep]
"""

from __future__ import annotations

import argparse
import http.client
import random
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import orjson
from elasticsearch import Elasticsearch
from elasticsearch.helpers import scan
from elasticsearch.serializer import OrjsonSerializer

from bench.common import elasticsearch, row
from bench.genlog import AGENTS, ROBOTS
from pipeline.ops import esops
from pipeline.plugins import accesslog
from pipeline.query import reports, sushi, tabular, usage
from pipeline.query.source import Source
from pipeline.sinks.esindexer import EsIndexerOptions

INDEX = "p8-access-%Y.%m"
YEAR = 2025
BEGIN, END = datetime(YEAR, 1, 1, tzinfo=UTC), datetime(YEAR + 1, 1, 1, tzinfo=UTC)
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _stamp(when: datetime, offset_hours: int) -> str:
    local = when + timedelta(hours=offset_hours)
    return f"{local:%d}/{MONTHS[local.month - 1]}/{local:%Y:%H:%M:%S} {'+' if offset_hours >= 0 else '-'}{abs(offset_hours):02d}00"


def log_lines(count: int, seed: int = 8) -> Iterator[str]:
    rng = random.Random(seed)
    users = [(f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
              rng.choice(ROBOTS) if rng.random() < 0.12 else rng.choice(AGENTS) + f" r{rng.randrange(40)}")
             for _ in range(60_000)]
    weights = [1 / (n + 10) for n in range(25_000)]
    items = [(f"/handle/123456789/{n}", f"/bitstream/handle/123456789/{n}/file-{n}.pdf") if n < 20_000
             else (f"/id/eprint/{n}/", f"/{n}/1/paper-{n}.pdf") for n in range(25_000)]
    made, seconds = 0, int((END - BEGIN).total_seconds())
    while made < count:
        ip, agent = rng.choice(users)
        at = BEGIN + timedelta(seconds=rng.randrange(seconds - 7200))
        offset = rng.choice((0, 1, 2))
        for page, pdf in rng.choices(items, weights, k=rng.choice((1, 1, 2, 3, 5))):
            events = [(page, 200)]
            if rng.random() < 0.6:
                events.append((pdf, rng.choices((200, 304, 206, 404), (82, 6, 6, 6))[0]))
            if rng.random() < 0.15:
                events.append((pdf.replace(".pdf", ".pdf.jpg") if pdf.endswith(".pdf") else pdf, 200))
            if rng.random() < 0.05:
                events.append(("/static/css/style.css", 200))
            for path, status in events:
                at += timedelta(seconds=rng.randrange(1, 240))
                repeats = 1 + (rng.random() < 0.05) + (rng.random() < 0.02)  # double clicks, chains
                for _ in range(repeats):
                    yield (f'{ip} - - [{_stamp(at, offset)}] "GET {path} HTTP/1.1" {status} '
                           f'{rng.randrange(200, 900_000) if status in (200, 206) else 0} "-" "{agent}"')
                    made += 1
                    at += timedelta(seconds=rng.choice((2, 10, 25, 31, 45)))
                    if made >= count:
                        return


def load(es: Elasticsearch, url: str, count: int) -> float:
    """Parse and bulk-load ``count`` lines; the records/s."""
    opts = EsIndexerOptions(listento="x", index=INDEX, hosts=(url,), template="access")
    esops.setup(es, {"p8": opts})
    for month in range(1, 13):
        es.indices.create(index=datetime(YEAR, month, 1).strftime(INDEX),
                          settings={"number_of_replicas": 0, "refresh_interval": "-1"})
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=300)
    started = time.perf_counter()
    batch: list[bytes] = []

    def send() -> None:
        conn.request("POST", "/_bulk?filter_path=errors", body=b"".join(batch),
                     headers={"Content-Type": "application/x-ndjson"})
        answer = conn.getresponse()
        assert answer.status == 200 and not orjson.loads(answer.read())["errors"]
        batch.clear()

    for n, text in enumerate(log_lines(count)):
        record = accesslog.parse_line(text)
        record.update(service="p8", src="p8", off=n, logline=text)
        index = datetime.fromisoformat(record["time"]).astimezone(UTC).strftime(INDEX)
        batch += [orjson.dumps({"create": {"_index": index}}) + b"\n", orjson.dumps(record) + b"\n"]
        if len(batch) >= 10_000:
            send()
    if batch:
        send()
    es.indices.put_settings(index="p8-access-*", settings={"refresh_interval": "1s"})
    es.indices.refresh(index="p8-access-*")
    return count / (time.perf_counter() - started)


def ours(src: Source, say: bool = False) -> tuple[float, dict[tuple[str, str], list[int]]]:
    started = time.perf_counter()
    request = sushi.request("ir", {"customer_id": ["0000000000000000"], "begin_date": [f"{YEAR}-01"],
                                   "end_date": [f"{YEAR}-12"]}, reports.CounterSettings(), 36)
    made = usage.collect(src, request.begin, request.end)
    report = reports.build(request, reports.CounterSettings(), made)
    body = tabular.render(report)
    took = time.perf_counter() - started
    if say:
        print(f"ours: {made.buckets:,} buckets in {made.requests} requests, {made.candidates:,} records read to "
              f"decide on {made.double_clicks:,} double clicks, {len(report.rows):,} rows, TSV {len(body) / 2**20:.1f} MiB")
    return took, {(item[1], month): counts for item, months in made.items.items() for month, counts in months.items()}


def scrolled(es: Elasticsearch) -> tuple[float, dict[tuple[str, str], list[int]]]:
    """The same Item Report from every record of the year, scrolled into Python."""
    started = time.perf_counter()
    clicks: dict[tuple[str, str], list[tuple[float, str, str, str]]] = defaultdict(list)
    fields = ["time", "status", "kind", "robot", "client_ip", "user_agent", "url", "item_id"]
    query = {"range": {"time": {"gte": BEGIN.isoformat(), "lt": (END + timedelta(seconds=30)).isoformat()}}}
    for hit in scan(es, index="p8-access-*", query={"query": query}, _source=fields, size=5000):
        doc = hit["_source"]
        if doc["status"] not in (200, 304) or doc["kind"] not in ("download", "item") or doc["robot"]:
            continue
        when = datetime.fromisoformat(doc["time"]).astimezone(UTC)
        user = f"{doc['client_ip']}|{doc['user_agent']}"
        clicks[(user, doc["url"])].append((when.timestamp(), doc["item_id"], doc["kind"],
                                           f"{user}|{when:%Y-%m-%d|%H}"))
    totals: Counter[tuple[str, str, str]] = Counter()  # item, month, kind
    uses: set[tuple[str, str, str]] = set()  # item, session, kind
    for group in clicks.values():
        group.sort()
        for n, (at, item, kind, session) in enumerate(group):
            if n + 1 < len(group) and group[n + 1][0] - at <= 30 or at >= END.timestamp():
                continue  # a double click: the next one counts; or past the period
            month = session.rsplit("|", 2)[1][:7]
            totals[(item, month, kind)] += 1
            uses.add((item, session, kind))
    out: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for (item, month, kind), n in totals.items():
        out[(item, month)][0] += n
        if kind == "download":
            out[(item, month)][1] += n
    for item, session in {(i, s) for i, s, _ in uses}:
        out[(item, session.rsplit("|", 2)[1][:7])][2] += 1
    for item, session, kind in uses:
        if kind == "download":
            out[(item, session.rsplit("|", 2)[1][:7])][3] += 1
    return time.perf_counter() - started, dict(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the indices (a later run reuses them)")
    args = parser.parse_args()
    with elasticsearch() as (url, _pid):
        es = Elasticsearch(url, request_timeout=600, serializer=OrjsonSerializer())  # both sides alike
        have = es.options(ignore_status=404).count(index="p8-access-*").get("count", 0)
        if have != args.records:
            for name in es.options(ignore_status=404).indices.get(index="p8-access-*"):
                es.indices.delete(index=name)
            print(f"loaded {args.records:,} records at {load(es, url, args.records):,.0f} records/s")
        src = Source("p8", es, "p8-access-*", "time", "access")
        ours(src, say=True)  # warm up both
        pairs: list[tuple[float, float]] = []
        for _ in range(args.runs):  # interleaved, each after the node's caches are emptied
            es.indices.clear_cache(index="p8-access-*", request=True, query=True, fielddata=True)
            ours_s, ours_counts = ours(src)
            es.indices.clear_cache(index="p8-access-*", request=True, query=True, fielddata=True)
            peer_s, peer_counts = scrolled(es)
            assert ours_counts == peer_counts, "the two reports differ"
            pairs.append((ours_s, peer_s))
        ours_med, peer_med = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
        items = len({item for item, _ in ours_counts})
        print(f"IR over 12 months of {args.records:,} records ({items:,} items): ours {ours_med:.1f} s "
              f"({', '.join(f'{p[0]:.1f}' for p in pairs)}), scroll {peer_med:.1f} s "
              f"({', '.join(f'{p[1]:.1f}' for p in pairs)}); the same numbers")
        row(f"P8 COUNTER IR, {args.records:,} records, 12 months (s, median of {args.runs})", f"{ours_med:.1f} s",
            f"scroll + Python {peer_med:.1f} s", f"{peer_med / ours_med:.1f}x faster", "faster than scrolling")
        if not args.keep:
            for name in es.indices.get(index="p8-access-*"):
                es.indices.delete(index=name)


if __name__ == "__main__":
    main()
