"""The status page: one HTML page rendered on the server, charts as inline SVG, no script.

For the last hour (the monitor's samples, :mod:`pipeline.monitor.history`): each queue's
length and each worker's throughput; now: firing alerts, dead letters, failed tracker
requests, each watched file's lag, and a link to the supervisord console. Everything read
from Redis or the files is escaped.
"""

from __future__ import annotations

import html
import time
from typing import Any

from pipeline.monitor.alerts import Alert
from pipeline.monitor.health import Check
from pipeline.monitor.history import History

WIDTH, HEIGHT = 240, 36

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; margin: 0 0 .2em; } h2 { font-size: 1.1em; margin: 1.4em 0 .4em; }
table { border-collapse: collapse; } td, th { padding: .25em .8em .25em 0; text-align: left; }
th { border-bottom: 1px solid #ccc; font-weight: 600; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.bad { color: #b00020; font-weight: 600; } .ok { color: #1b7f3b; } .muted { color: #777; }
svg { background: #f6f8fa; border-radius: 3px; vertical-align: middle; }
"""


def chart(points: list[tuple[float, float]], now: float, span: float, unit: str) -> str:
    """A small line chart of (time, value) points over the last ``span`` seconds."""
    if not points:
        return f'<svg width="{WIDTH}" height="{HEIGHT}" role="img"><text x="6" y="22" font-size="11" ' \
               'fill="#777">no samples yet</text></svg>'
    peak = max(v for _, v in points)
    top = peak or 1.0
    coords = " ".join(f"{(t - now + span) / span * (WIDTH - 2) + 1:.1f},"
                      f"{HEIGHT - 3 - v / top * (HEIGHT - 14):.1f}" for t, v in points)
    return (f'<svg width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="last hour, at most '
            f'{peak:g} {unit}"><polyline fill="none" stroke="#0969da" stroke-width="1.5" '
            f'points="{coords}"/><text x="{WIDTH - 4}" y="10" font-size="9" text-anchor="end" '
            f'fill="#555">max {peak:.4g} {unit}</text></svg>')


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def render(status: dict[str, Any], checks: list[Check], alerts: list[Alert], history: History,
           console_url: str, now: float, span: float = 3600.0) -> str:
    since = now - span
    out = ['<!doctype html><html lang="en"><head><meta charset="utf-8"><title>loglines status</title>',
           f'<meta http-equiv="refresh" content="30"><style>{STYLE}</style></head><body>',
           '<h1>loglines</h1>',
           f'<p class="muted">as of {_e(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)))}; '
           f'supervisord {_e(status["supervisord"])}; <a href="{_e(console_url)}">supervisord console</a></p>']
    out.append('<h2>Alerts</h2>')
    if alerts:
        out.append('<table id="alerts"><tr><th>rule</th><th>what</th><th>since</th></tr>')
        out += [f'<tr class="bad alert" data-rule="{_e(a.rule)}"><td>{_e(a.rule)}</td><td>{_e(a.summary)}</td>'
                f'<td>{_e(time.strftime("%H:%M:%S", time.localtime(a.since)))}</td></tr>' for a in alerts]
        out.append('</table>')
    else:
        out.append('<p id="alerts" class="ok">none firing</p>')
    failing = [c for c in checks if not c.ok and c.id not in {a.id for a in alerts}]
    if failing:
        out.append('<p class="muted">failing, not (yet) an alert: ' +
                   "; ".join(_e(c.summary) for c in failing) + '</p>')
    out.append(f'<p>dead letters: <span id="dead-letters" class="{"bad" if status["dead_letters"] else "ok"}">'
               f'{status["dead_letters"]}</span> &nbsp; failed tracker requests: <span id="failed">'
               f'{status["failed"]}</span> &nbsp; in flight: {status["in_flight"]}</p>')
    out.append('<h2>Queues</h2><table id="queues"><tr><th>queue</th><th>messages</th><th>items</th>'
               '<th>last hour</th></tr>')
    for name, length in status["queues"].items():
        items = status["queue_items"].get(name, {})
        shown = ("~" if items.get("estimate") else "") + str(items.get("items", "-"))
        out.append(f'<tr class="queue" data-queue="{_e(name)}"><td>{_e(name)}</td>'
                   f'<td class="n queue-length">{length}</td><td class="n">{_e(shown)}</td>'
                   f'<td>{chart(history.series("queue", name, since), now, span, "messages")}</td></tr>')
    out.append('</table><h2>Workers</h2><table id="workers"><tr><th>worker</th><th>type</th><th>state</th>'
               '<th>items</th><th>/s (5 min)</th><th>throughput, last hour</th></tr>')
    for name, w in status["workers"].items():
        states = sorted(set(w["processes"].values())) or ["-"]
        css = "ok" if states == ["RUNNING"] else "muted" if states == ["-"] else "bad"
        out.append(f'<tr class="worker" data-worker="{_e(name)}"><td>{_e(name)}</td><td>{_e(w["type"])}</td>'
                   f'<td class="{css}">{_e(",".join(states))}</td><td class="n">{w["items_total"]}</td>'
                   f'<td class="n">{w["items_per_second_5min"]}</td>'
                   f'<td>{chart(history.rates(name, since), now, span, "items/s")}</td></tr>')
    files = [(name, f, w.get("unshipped_age_s", {}).get(f["path"]))
             for name, w in status["workers"].items() for f in w.get("files", ())]
    out.append('</table><h2>Watched files</h2>')
    if files:
        out.append('<table id="files"><tr><th>file</th><th>watcher</th><th>offset</th><th>size</th>'
                   '<th>lag (bytes)</th><th>oldest unshipped line</th></tr>')
        for name, f, age in files:
            lag = "-" if f["lag"] is None else f["lag"]
            shown_age = "-" if age is None else f"&ge; {age:.0f} s" if age else "0 s"
            out.append(f'<tr class="file"><td>{_e(f["path"])}</td><td>{_e(name)}</td><td class="n">{f["offset"]}</td>'
                       f'<td class="n">{_e("-" if f["size"] is None else f["size"])}</td>'
                       f'<td class="n file-lag">{lag}</td><td class="n">{shown_age}</td></tr>')
        out.append('</table>')
    else:
        out.append('<p class="muted">no watcher</p>')
    out.append('</body></html>')
    return "\n".join(out)
