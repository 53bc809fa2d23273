"""Talking to the running supervisord over its private unix socket (XML-RPC)."""

from __future__ import annotations

import xmlrpc.client
from typing import Any

from supervisor.xmlrpc import SupervisorTransport

from pipeline.config import Config
from pipeline.ops.supervisord import paths


def rpc(cfg: Config) -> Any:
    url = f"unix://{paths(cfg)['socket']}"
    sup = cfg.supervisor
    transport = SupervisorTransport(sup.username, sup.resolved_password(), url)
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor


def process_states(cfg: Config) -> dict[str, dict[str, Any]] | None:
    """``group:name`` -> process info, or None when supervisord is not running."""
    try:
        infos = rpc(cfg).getAllProcessInfo()
    except (OSError, xmlrpc.client.Error):
        return None
    return {f"{i['group']}:{i['name']}": i for i in infos}


def supervisord_pid(cfg: Config) -> int | None:
    """The running supervisord's process id, or None when it is not running."""
    try:
        return int(rpc(cfg).getPID())
    except (OSError, xmlrpc.client.Error):
        return None
