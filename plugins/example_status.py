"""An example plugin: keep only server errors, with the client and the path."""

import re

LINE = re.compile(r'(\S+) \S+ \S+ \[[^\]]+\] "\S+ (\S+)[^"]*" (\d{3}) ')


def parse(item):
    match = LINE.match(item["logline"])
    if match is None:
        raise ValueError("not an access log line")
    client, path, status = match.groups()
    return {"client": client, "path": path, "status": int(status)} if status >= "500" else None
