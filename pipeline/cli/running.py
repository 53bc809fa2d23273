"""``loglines up``, ``down``, ``worker`` and ``status``: supervisord and the workers."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from pipeline.cli.common import load_config, redis_client
from pipeline.cli.configure import apply_config, load_plugins, refuse_graph_errors
from pipeline.config import Config
from pipeline.core.lifecycle import Flags
from pipeline.errors import LoglinesError


def _supervisor_bin(name: str) -> str:
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else (shutil.which(name) or name)


#: How long ``up`` waits for supervisord to answer after starting it.
UP_TIMEOUT = 30.0


def cmd_up(args: argparse.Namespace) -> int:
    from pipeline.core.lifecycle import install_signal_handlers
    from pipeline.ops.control import supervisord_pid
    from pipeline.ops.supervisord import generate, paths

    cfg = load_config(args, warn=True)
    load_plugins(cfg)
    refuse_graph_errors(cfg)
    pid = supervisord_pid(cfg)
    if pid is not None:
        print(f"already running (pid {pid}); applying {cfg.path}")
        apply_config(cfg, running=True)
        return 0
    _ports_free(cfg)
    generate(cfg)
    command = [_supervisor_bin("supervisord"), "-c", str(paths(cfg)["conf"])]
    if args.foreground:
        flags = Flags()
        install_signal_handlers(flags)  # Ctrl-C reaches supervisord too; SIGTERM is passed on
        proc = subprocess.Popen(command + ["-n"])
        if _wait_up(cfg, lambda: proc.poll() is not None, flags):
            _say_up(cfg, args.show_password)
        while proc.poll() is None:
            if flags.stop:
                proc.terminate()
                flags.stop = False
            time.sleep(0.2)
        return proc.returncode
    started = subprocess.run(command, check=False).returncode
    if started != 0:
        raise LoglinesError(f"supervisord did not start (exit status {started}); its log is "
                            f"{paths(cfg)['logdir'] / 'supervisord.log'}")
    if not _wait_up(cfg, lambda: False, None):
        raise LoglinesError(f"supervisord did not answer within {UP_TIMEOUT:g} s; its log is "
                            f"{paths(cfg)['logdir'] / 'supervisord.log'}")
    _say_up(cfg, args.show_password)
    return 0


def _wait_up(cfg: Config, exited: Callable[[], bool], flags: Flags | None) -> bool:
    """Wait until supervisord answers (False: it exited, a stop was asked, or time ran out)."""
    from pipeline.ops.control import is_running

    deadline = time.monotonic() + UP_TIMEOUT
    while time.monotonic() < deadline and not exited() and not (flags is not None and flags.stop):
        if is_running(cfg):
            return True
        time.sleep(0.1)
    return False


def _say_up(cfg: Config, show_password: bool) -> None:
    from pipeline.ops.control import supervisord_pid

    sup = cfg.supervisor
    print(f"supervisord is running (pid {supervisord_pid(cfg)}); `loglines status` shows the workers")
    print(f"web console: http://{sup.host}:{sup.port}/  user: {sup.username}  "
          f"password: {_where_password(cfg) if not show_password else sup.resolved_password()}",
          flush=True)


def _ports_free(cfg: Config) -> None:
    """The console's port, and an embedded Redis's TCP port, must be free before supervisord
    starts: say which is taken and which key moves it."""
    import errno
    import socket

    wanted = [(cfg.supervisor.host, cfg.supervisor.port, "[supervisor] port")]
    wanted += [("127.0.0.1", rc.port, f"[{rc.name}] port") for rc in cfg.redis.values()
               if rc.embedded and rc.port]
    for host, port, key in wanted:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as supervisord binds
            try:
                probe.bind((host, port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                shown = f"[{host}]" if ":" in host else host
                raise LoglinesError(f"{shown}:{port} is in use: set `{key}`") from None


def _where_password(cfg: Config) -> str:
    """Where the console password is (it is not printed: terminals and CI logs keep output)."""
    sup = cfg.supervisor
    if sup.password:
        return f"'password' in [supervisor] of {cfg.path}"
    return f"in {sup.password_file} (--show-password prints it)"


def _stop_time(cfg: Config) -> float:
    """The longest supervisord may take to stop: it stops one program after another, each
    within its stopwaitsecs (an embedded Redis within 60 s)."""
    return float(sum(p.stopwaitsecs for p in cfg.programs.values())
                 + 60 * sum(1 for rc in cfg.redis.values() if rc.embedded) + 10)


def cmd_down(args: argparse.Namespace) -> int:
    from pipeline.ops.control import alive, rpc, supervisord_pid

    cfg = load_config(args)
    pid = supervisord_pid(cfg)
    if pid is None:
        print("supervisord is not running")
        return 0
    rpc(cfg).shutdown()
    timeout = args.timeout if args.timeout is not None else _stop_time(cfg)
    print(f"stopping supervisord (pid {pid}) and every worker ...", flush=True)
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if alive(pid):
        print(f"loglines: error: supervisord (pid {pid}) is still stopping after {timeout:g} s: "
              "`loglines status` shows what is left", file=sys.stderr)
        return 1
    print("stopped")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from pipeline import registry
    from pipeline.core import logsetup
    from pipeline.core.lifecycle import Flags, install_signal_handlers
    from pipeline.transforms import robots

    cfg = load_config(args)
    program = cfg.worker(args.name)
    log = logsetup.setup(cfg.log_level)
    for section, warning in cfg.warnings:
        if section == program.name:
            log.warning("%s", warning)
    if robots.override_path(cfg.var_dir).exists():
        os.environ[robots.OVERRIDE_ENV] = str(robots.override_path(cfg.var_dir))
    flags = Flags()
    install_signal_handlers(flags)
    return registry.get(program.type).run(cfg, program, flags)


def cmd_status(args: argparse.Namespace) -> int:
    from pipeline.monitor import status

    cfg = load_config(args)
    result = status.collect(cfg, {rc.name: redis_client(cfg, rc.name) for rc in cfg.servers()})
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() if args.json else status.render(result))
    return 0 if all(s["reachable"] for s in result["redis"].values()) else 1
