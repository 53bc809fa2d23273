"""Demo traffic: append the sample access log's lines, one a second, with the current time."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

STAMP = re.compile(r"\[[^\]]+\]")


def main(sample: str, target: str) -> None:
    lines = Path(sample).read_text().splitlines()
    out = Path(target)
    out.parent.mkdir(parents=True, exist_ok=True)
    index = 0
    while True:
        now = time.strftime("[%d/%b/%Y:%H:%M:%S +0000]", time.gmtime())
        with out.open("a") as handle:
            handle.write(STAMP.sub(now, lines[index % len(lines)], count=1) + "\n")
        index += 1
        time.sleep(1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
