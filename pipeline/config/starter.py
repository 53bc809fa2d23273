"""The ``loglines.cfg`` that ``loglines init`` writes."""

from __future__ import annotations

TEMPLATE = """\
# loglines.cfg: the whole pipeline in one file. After editing, run
#   loglines check                 validate it and load the plugins
#   loglines supervisord-config    regenerate supervisord.conf and workers_available/
#   loglines up                    start supervisord (web console below)

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
"""


def starter_config(password: str) -> str:
    return TEMPLATE.format(password=password)
