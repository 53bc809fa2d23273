"""Deterministic Apache combined access logs for benchmarks, tests and the demo.

Repository downloads (DSpace and EPrints), item pages, thumbnails, static files, searches; a
share of robots; IPv4 and IPv6 clients; statuses 200/206/304/404/500. The same seed gives the
same bytes. ``kontext_lines`` makes KonText application records (``[QUERY] INFO: {json}``).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Iterator

AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
]
ROBOTS = [
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "python-requests/2.31.0",
    "curl/8.5.0",
]
STATIC = ["/static/css/style.css", "/static/js/app.js", "/favicon.ico", "/robots.txt"]
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def _ip(rng: random.Random) -> str:
    if rng.random() < 0.15:
        return f"2001:db8:{rng.randrange(65536):x}:{rng.randrange(65536):x}::{rng.randrange(65536):x}"
    return f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def _path(rng: random.Random) -> str:
    roll = rng.random()
    item = rng.randrange(1, 50000)
    if roll < 0.20:
        return f"/bitstream/handle/123456789/{item}/article-{item}.pdf?sequence=1&isAllowed=y"
    if roll < 0.30:
        return f"/{item}/1/paper-{item}.pdf"
    if roll < 0.35:
        h = f"{rng.getrandbits(128):032x}"
        return f"/server/api/core/bitstreams/{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}/content"
    if roll < 0.50:
        return f"/handle/123456789/{item}"
    if roll < 0.58:
        return f"/id/eprint/{item}/"
    if roll < 0.63:
        return f"/bitstream/handle/123456789/{item}/article-{item}.pdf.jpg?sequence=3"
    if roll < 0.85:
        return rng.choice(STATIC)
    return f"/discover?query=term{item}&page={rng.randrange(1, 9)}"


def lines(count: int, seed: int = 1, seq: bool = False) -> Iterator[str]:
    """``count`` log lines; with ``seq`` each carries ``seq=N`` in its query for counting."""
    rng = random.Random(seed)
    second = 0
    for n in range(count):
        second += rng.random() < 0.3
        day, rest = divmod(second, 86400)
        hour, rest = divmod(rest, 3600)
        stamp = f"{1 + day % 28:02d}/{MONTHS[(day // 28) % 12]}/2026:{hour:02d}:{rest // 60:02d}:{rest % 60:02d} +0100"
        robot = rng.random() < 0.12
        agent = rng.choice(ROBOTS if robot else AGENTS)
        status = rng.choices([200, 206, 304, 404, 500], [80, 5, 8, 6, 1])[0]
        path = _path(rng)
        if seq:
            path += ("&" if "?" in path else "?") + f"seq={n}"
        size = rng.randrange(200, 5_000_000) if status in (200, 206) else 0
        referrer = rng.choice(["-", "https://scholar.example.org/", "https://repo.example.ac.uk/handle/123456789/1"])
        yield (f'{_ip(rng)} - - [{stamp}] "GET {path} HTTP/1.1" {status} {size} '
               f'"{referrer}" "{agent}"')


CORPORA = ["syn2015", "intercorp_v9_cs", "omezeni/syn_v4", "capek_korespondence", "ortofon_v1"]
ACTIONS = ["first", "view", "freqs", "concdesc", "wordlist", "collx", "filter"]


def kontext_lines(count: int, seed: int = 1) -> Iterator[str]:
    """``count`` KonText query-log records, shaped like the application's own log lines."""
    rng = random.Random(seed)
    second = 0
    for n in range(count):
        second += rng.random() < 0.5
        stamp = f"2026-01-{1 + second // 86400 % 28:02d} {second // 3600 % 24:02d}:{second // 60 % 60:02d}:{second % 60:02d}"
        robot = rng.random() < 0.05
        record = {
            "user_id": rng.randrange(1, 9000), "proc_time": round(rng.random() * 3, 4), "pid": 28573,
            "request": {"HTTP_X_FORWARDED_FOR": _ip(rng),
                        "HTTP_USER_AGENT": rng.choice(ROBOTS if robot else AGENTS)},
            "action": rng.choice(ACTIONS),
            "params": {"corpname": rng.choice(CORPORA), "viewmode": rng.choice(["kwic", "sen", "align"]),
                       "pagesize": str(rng.choice([20, 40, 100])), "attrs": "word", "q": f"~q{n:08x}"},
            "date": f"{stamp}.{rng.randrange(1_000_000):06d}",
        }
        yield f"{stamp},{rng.randrange(1000):03d} [QUERY] INFO: {json.dumps(record)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("count", type=int, nargs="?", default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seq", action="store_true", help="number every line (seq=N)")
    parser.add_argument("--kontext", action="store_true", help="KonText application records instead")
    args = parser.parse_args()
    out = sys.stdout
    made = kontext_lines(args.count, args.seed) if args.kontext else lines(args.count, args.seed, args.seq)
    for line in made:
        out.write(line + "\n")


if __name__ == "__main__":
    main()
