"""What the ``loglines`` commands share: the configuration, a Redis client, a queue's server."""

from __future__ import annotations

import argparse
import sys

import redis

from pipeline import config as config_mod
from pipeline.config import Config
from pipeline.errors import ConfigError


def load_config(args: argparse.Namespace, warn: bool = False) -> Config:
    cfg = config_mod.load(args.config)
    if warn:
        for _, warning in cfg.warnings:
            print(f"loglines: warning: {warning}", file=sys.stderr)
    return cfg


def redis_client(cfg: Config, server: str = "redis") -> redis.Redis:
    from pipeline.core.connection import connect

    if server not in cfg.redis:
        raise ConfigError(f"no section [{server}] (Redis servers: {', '.join(cfg.redis)})",
                          file=str(cfg.path))
    return connect(cfg.redis[server])


def queue_server(cfg: Config, queue: str) -> str:
    """The Redis server a queue lives on: the one of the workers that read it (or push to it)."""
    from pipeline.monitor.status import program_queues

    found = {p.redis for p in cfg.programs.values() if p.type and queue in program_queues(p)}
    if len(found) > 1:
        raise ConfigError(f"queue {queue!r} is on several Redis servers ({', '.join(sorted(found))}): "
                          "name one with --redis", file=str(cfg.path))
    return found.pop() if found else "redis"
