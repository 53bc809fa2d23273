"""``loglines init``, ``check``, ``supervisord-config``, ``enable``, ``disable`` and ``reload``:
the configuration, checked and applied."""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

from pipeline import config as config_mod
from pipeline.cli.common import load_config
from pipeline.config import Config
from pipeline.errors import ConfigError, PluginError


def cmd_init(args: argparse.Namespace) -> int:
    path = Path(args.config or os.environ.get("LOGLINES_CONFIG") or config_mod.DEFAULT_PATH)
    if not path.exists():
        from pipeline.config.starter import starter_config

        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(starter_config(secrets.token_urlsafe(24)))
        print(f"wrote {path} (console password inside; file mode 0600)")
    else:
        print(f"{path} exists: left unchanged (remove it first for a new starter config)")
    cfg = config_mod.load(path)
    secret = cfg.supervisor.password_file
    if secret is not None and not secret.exists():
        secret.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(24) + "\n")
        print(f"wrote a new console password to {secret} (mode 0600)")
    return 0


def load_plugins(cfg: Config) -> None:
    """Load every worker's plugin as the worker will: a broken one fails here, naming it."""
    from pipeline import registry

    for program in cfg.programs.values():
        loader = registry.get(program.type).plugin if program.type else None
        if loader is not None:
            try:
                loader(cfg, program)
            except PluginError as exc:
                raise PluginError(f"[{program.name}]: {exc}") from None


def cmd_check(args: argparse.Namespace) -> int:
    from pipeline import registry

    cfg = load_config(args, warn=True)
    load_plugins(cfg)
    notes = _check_servers(cfg)
    for program in cfg.programs.values():
        hook = registry.get(program.type).check if program.type else None
        notes += [f"warning: {line}" for line in hook(cfg, program)] if hook is not None else []
    if os.geteuid() == 0:
        notes += [f"warning: [{p.name}] runs as root (supervisord runs as root and the section sets "
                  "no 'user'): set user = an unprivileged account" for p in cfg.programs.values()
                  if not p.user]
    for line in notes:
        print(f"loglines: {line}", file=sys.stderr)
    errors, warnings = _check_graph(cfg)
    warnings += sum(1 for line in notes if line.startswith("warning:")) + len(cfg.warnings)
    if errors:
        print(f"{cfg.path}: {_count(errors, 'error')} above", file=sys.stderr)
        return 1
    workers = [p.name for p in cfg.programs.values() if p.type]
    print(f"{cfg.path}: OK ({len(workers)} workers: {', '.join(workers) or 'none'})"
          + (f"; {_count(warnings, 'warning')} above" if warnings else ""))
    return 0


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def refuse_graph_errors(cfg: Config, enabled: set[str] | None = None) -> None:
    errors, _ = _check_graph(cfg, enabled)
    if errors:
        raise ConfigError(f"{_count(errors, 'error')} in the pipeline's queues (above): nothing was "
                          "started or changed", file=str(cfg.path))


def _check_graph(cfg: Config, enabled: set[str] | None = None) -> tuple[int, int]:
    """Say what is wrong with the pipeline's queues, ``enabled`` (default: as linked now) being
    the sections supervisord runs; (errors, warnings)."""
    from pipeline.config import graph
    from pipeline.ops.supervisord import enabled_programs

    problems = graph.check(cfg, enabled_programs(cfg) if enabled is None else enabled)
    for problem in problems:
        print(f"loglines: {'error' if problem.error else 'warning'}: {problem.message}", file=sys.stderr)
    errors = sum(1 for p in problems if p.error)
    return errors, len(problems) - errors


def _check_servers(cfg: Config) -> list[str]:
    """What each Redis server of the pipeline would mean for the guarantees (warnings); an
    evicting or too old server is an error."""
    from dataclasses import replace

    from pipeline.core.connection import CONNECTION_ERRORS, UnfitServer, check_server, connect

    out = []
    for rc in cfg.servers():
        try:
            client = connect(replace(rc, socket_timeout=2.0, block_timeout=1.0))
            out += [f"warning: [{rc.name}]: {w}" for w in check_server(client)]
        except UnfitServer as exc:
            raise ConfigError(str(exc), file=str(cfg.path), section=rc.name) from None
        except CONNECTION_ERRORS as exc:
            if rc.embedded:
                out.append(f"[{rc.name}]: the embedded Redis is not running (loglines up starts it)")
            else:
                out.append(f"warning: [{rc.name}]: not reachable now ({exc}); its settings are "
                           "checked again when the workers start")
    return out


def cmd_supervisord_config(args: argparse.Namespace) -> int:
    from pipeline.ops.supervisord import generate

    result = generate(load_config(args))
    for path in result.files:
        print(f"wrote {path}")
    for name in result.enabled:
        print(f"enabled {name}")
    return 0


def cmd_enable(args: argparse.Namespace, enabled: bool = True) -> int:
    from pipeline.ops.control import supervisord_pid, update
    from pipeline.ops.supervisord import enabled_programs, generate, set_enabled

    cfg = load_config(args)
    running = supervisord_pid(cfg) is not None
    if running:
        load_plugins(cfg)
        now = enabled_programs(cfg)
        refuse_graph_errors(cfg, now | {args.name} if enabled else now - {args.name})
    if args.name in cfg.programs:
        generate(cfg)  # the program files as loglines.cfg says now (links are never touched)
    changed = set_enabled(cfg, args.name, enabled)
    print(f"{args.name}: {'enabled' if enabled else 'disabled'}{'' if changed else ' already'}")
    if not running:
        print("supervisord is not running: `loglines up` starts what is enabled")
        return 0
    for line in update(cfg, start=args.name if enabled else "").lines():
        print(line)
    return 0


def cmd_disable(args: argparse.Namespace) -> int:
    return cmd_enable(args, enabled=False)


def cmd_reload(args: argparse.Namespace) -> int:
    """Regenerate from loglines.cfg and apply it to the running supervisord."""
    from pipeline.ops.control import supervisord_pid

    cfg = load_config(args, warn=True)
    load_plugins(cfg)
    refuse_graph_errors(cfg)
    pid = supervisord_pid(cfg)
    apply_config(cfg, running=pid is not None)
    return 0


def apply_config(cfg: Config, running: bool) -> None:
    """Generate the files and, when supervisord runs, have it take them (links made by hand
    included)."""
    from pipeline.ops.control import update
    from pipeline.ops.supervisord import generate

    for name in generate(cfg).enabled:
        print(f"enabled {name} (new)")
    if not running:
        print("supervisord is not running: `loglines up` starts it with this configuration")
        return
    for line in update(cfg).lines():
        print(line)
