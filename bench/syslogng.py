"""The second peer: syslog-ng from Debian, unpacked into a private root under bench/.peers/.

Debian's ``syslog-ng-core`` conflicts with ``rsyslog`` (the first peer, installed by ``make
bench``), so it is not installed: ``python -m bench.syslogng install`` fetches the packages
with ``apt-get download`` and unpacks them with ``dpkg -x``, with the shared libraries they
need that this machine lacks (read from their dependencies; ``ldd`` must find everything
afterwards). It runs from there in the foreground, its modules and SCL from that root, with its
own configuration, PID file, control socket and persist file in a temporary directory, reading
a file from its beginning (``file()``, no syslog parsing) into Redis (``redis()``, pipelined
batches), raw or parsed by ``apache-accesslog-parser()``, with flow control on the log path
so that nothing is dropped. Stopped by PID.

The configuration follows syslog-ng's documentation for throughput: batches of ``batch-lines()``
per worker (no ``batch-timeout()``: a batch goes when the queue runs dry), a source window
(``log-iw-size()``) larger than ``batch-lines() * workers()``, ``log-fetch-limit()`` raised
from its default of 100 to a batch, and ``flags(flow-control)``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from bench.common import stop_daemon

PACKAGES = ("syslog-ng-core", "syslog-ng-mod-redis", "syslog-ng-scl")
ROOT = Path(__file__).parent / ".peers" / "syslog-ng"
BATCH = 500  # lines per Redis pipeline: the same as the watcher's batch_lines
WORKERS = int(os.environ.get("BENCH_SYSLOGNG_WORKERS", "2"))  # Redis connections (one per core here)

#: One item per line, in the shape loglines' watcher pushes (without src/off), as rsyslog's.
ITEM = "$(format-json service=bench logline=$MSG)"
#: The fields apache-accesslog-parser() found, without its ".apache." prefix, and the time.
RECORD = "$(format-json --key .apache.* --shift 8 service=bench time=$ISODATE)"



def binary() -> Path:
    return ROOT / "usr" / "sbin" / "syslog-ng"


def module_dir() -> Path:
    found = sorted((ROOT / "usr" / "lib" / "syslog-ng").glob("3.*"))
    if not found:
        raise SystemExit("syslog-ng is not unpacked: python -m bench.syslogng install")
    return found[-1]


def environment() -> dict[str, str]:
    """The process environment with the private root's libraries first."""
    dirs = [ROOT / "usr" / "lib" / "syslog-ng", *sorted(ROOT.glob("usr/lib/*-linux-gnu")),
            *sorted(ROOT.glob("lib/*-linux-gnu"))]
    paths = [str(d) for d in dirs] + [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
    return dict(os.environ, LD_LIBRARY_PATH=":".join(paths))


def missing_libraries() -> list[str]:
    """Shared libraries ``ldd`` cannot find for the binary or one of its modules."""
    missing: set[str] = set()
    for target in [binary(), *sorted(module_dir().glob("*.so"))]:
        out = subprocess.run(["ldd", str(target)], capture_output=True, text=True, env=environment()).stdout
        missing.update(m.group(1) for m in re.finditer(r"^\s*(\S+) => not found", out, re.M))
    return sorted(missing)


def installed(package: str) -> bool:
    done = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
    return done.returncode == 0 and done.stdout.endswith(" installed")


def library_dependencies(packages: tuple[str, ...]) -> list[str]:
    """The shared-library packages ``packages`` depend on (``apt-cache depends``)."""
    out = subprocess.run(["apt-cache", "depends", *packages], capture_output=True, text=True, check=True).stdout
    names = {m.group(1) for m in re.finditer(r"^\s*\|?Depends: (lib[^\s<>:]+)", out, re.M)}
    return sorted(names)


def unpack(packages: list[str]) -> None:
    debs = ROOT.parent / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["apt-get", "download", *packages], cwd=debs, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"apt-get download {' '.join(packages)} failed (apt-get update first?):\n"
                         f"{done.stderr}")
    for package in packages:
        for deb in sorted(debs.glob(f"{package}_*.deb")):
            subprocess.run(["dpkg", "-x", str(deb), str(ROOT)], check=True)


def install() -> None:
    """Download and unpack syslog-ng and the libraries it lacks here, unless already done."""
    marker = ROOT / ".complete"
    if marker.exists():
        return
    shutil.rmtree(ROOT, ignore_errors=True)
    ROOT.mkdir(parents=True)
    unpack(list(PACKAGES))
    lacking = [name for name in library_dependencies(PACKAGES) if not installed(name)]
    if lacking:
        unpack(lacking)
    if missing := missing_libraries():
        raise SystemExit(f"syslog-ng unpacked into {ROOT}, but these libraries are still missing: "
                         f"{', '.join(missing)}")
    marker.write_text(" ".join([*PACKAGES, *lacking]) + "\n")


def version() -> str:
    out = subprocess.run([str(binary()), "--version"], capture_output=True, text=True, env=environment()).stdout
    found = re.search(r"^syslog-ng \S+ \(([^)]+)\)", out, re.M)
    return found.group(1) if found else "(unknown)"


class SyslogNg:
    def __init__(self, log: Path, destination: str, parser: str = "") -> None:
        if not binary().exists():
            raise SystemExit("syslog-ng is not unpacked: python -m bench.syslogng install")
        self.work = Path(tempfile.mkdtemp(prefix="loglines-syslogng-"))
        self.conf = self.work / "syslog-ng.conf"
        include = ROOT / "usr" / "share" / "syslog-ng" / "include"
        window = 4 * BATCH * WORKERS
        self.conf.write_text(f"""@version: 3.38
@define include-path "{include}"
@include "scl/apache/apache.conf"
options {{ stats-freq(0); }};
source s_log {{
  file("{log}" flags(no-parse) follow-freq(0.1) log-fetch-limit({BATCH}) log-iw-size({window}));
}};
destination d_out {{
  {destination}
}};
log {{ source(s_log); {parser} destination(d_out); flags(flow-control); }};
""")
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def to_redis(cls, log: Path, redis_url: str, key: str) -> SyslogNg:
        """Raw lines, one list element each (the P1 peer)."""
        return cls(log, _redis(redis_url, key, ITEM))

    @classmethod
    def parsed_to_redis(cls, log: Path, redis_url: str, key: str) -> SyslogNg:
        """Each line parsed by apache-accesslog-parser(), one JSON record per element (P2)."""
        return cls(log, _redis(redis_url, key, RECORD), "parser { apache-accesslog-parser(); };")

    def start(self) -> SyslogNg:
        args = [str(binary()), f"--module-path={module_dir()}", "-f", str(self.conf)]
        checked = subprocess.run([*args, "--syntax-only"], capture_output=True, text=True, env=environment())
        if checked.returncode != 0:
            raise SystemExit(f"syslog-ng refuses the benchmark's configuration:\n{checked.stderr}")
        self.proc = subprocess.Popen(
            [*args, "--foreground", "--stderr", "--no-caps", "-p", str(self.work / "syslog-ng.pid"),
             "-c", str(self.work / "syslog-ng.ctl"), "-R", str(self.work / "syslog-ng.persist")],
            stdout=open(self.work / "syslog-ng.out", "ab"), stderr=subprocess.STDOUT, env=environment())
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def pids(self) -> dict[str, int]:
        return {"syslog-ng": self.pid}

    def stop(self) -> None:
        stop_daemon(self.proc, self.work)

    def __enter__(self) -> SyslogNg:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _redis(url: str, key: str, template: str) -> str:
    parts = urlsplit(url)
    return (f'redis(host("{parts.hostname}") port({parts.port}) command("RPUSH", "{key}", "{template}")\n'
            f"        batch-lines({BATCH}) workers({WORKERS}));")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["install", "version"])
    args = parser.parse_args()
    if args.what == "install":
        install()
    print(f"syslog-ng {version()} in {ROOT}")


if __name__ == "__main__":
    main()
