"""The ``loglines.cfg`` that ``loglines init`` writes."""

from __future__ import annotations

TEMPLATE = """\
# loglines.cfg: the whole pipeline in one file. After editing, run
#   loglines check                 validate it, its queues and the plugins
#   loglines up                    start supervisord (web console below)
#   loglines reload                apply what you changed to the running pipeline

[supervisor]
# The supervisord web console. It listens on 127.0.0.1 unless you say otherwise.
host = 127.0.0.1
port = 9001
username = admin
password = {password}

[redis]
# embedded = yes runs a private redis-server (AOF on, data under var/) on a unix socket.
# For an existing server: url = redis://host:6379/0 (rediss://, unix://, redis+sentinel://).
embedded = yes

[logger_access]
# Tail the web server's access log into the queue 'access'.
type = watcher
logfile = /var/log/apache2/access.log
pushto = access
servicename = repository
# start = beginning (the default) reads a file never seen before from its first line: on a
# production log, its whole history goes down the pipeline at the first start (to the IRUS
# tracker too, below). start = end begins with what is logged from then on; send history
# once, on purpose, with  loglines backfill /var/log/apache2/access.log.1 --to access
#start = end

[worker_parse]
# Parse every line with the built-in access-log plugin; downloads go on, the rest aside.
type = parser
listento = access
plugin = accesslog
pushto = downloads
accept = kind=download
other_queue = other

[logger_downloads]
# Append the parsed downloads to a file, one JSON object per line.
type = filelogger
listento = downloads
logfile = var/out/downloads.ndjson
format = ndjson

[logger_other]
type = filelogger
listento = other
logfile = var/out/other.log
format = raw

# -- Reporting downloads to IRUS (COUNTER R5) ---------------------------------------------
# To send downloads and item pages to an IRUS tracker as well:
#  1. in [worker_parse] above, set
#       pushto = downloads, counted
#       accept = kind=download|item
#     (every record then goes to both queues; downloads.ndjson gets the item pages too);
#  2. remove the '#' in front of the lines of the two sections below, and set your
#     repository's host and address in opt_oai_host and opt_base_url;
#  3. think about 'start' in [logger_access] (the default sends the log's whole history);
#  4. loglines check, then loglines reload (or loglines up).
# Do not make the tracker read 'access' itself: two workers reading one queue each get only
# part of it (loglines check says so).
#
#[worker_irus]
#type = tracker
#listento = counted
#repository_plugin = repository
#endpoint_url = https://irus.jisc.ac.uk/counter/
#other_queue = not_counted
#opt_oai_host = repo.example.ac.uk
#opt_base_url = https://repo.example.ac.uk
#
#[logger_not_counted]
## What COUNTER does not count (robots, partial downloads, ...), each with the reason.
#type = filelogger
#listento = not_counted
#logfile = var/out/not_counted.ndjson
#format = ndjson
"""


def starter_config(password: str) -> str:
    return TEMPLATE.format(password=password)
