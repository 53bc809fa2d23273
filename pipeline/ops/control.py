"""Talking to the running supervisord over its private unix socket (XML-RPC)."""

from __future__ import annotations

import os
import xmlrpc.client
from dataclasses import dataclass, field
from typing import Any

from pipeline.config import Config
from pipeline.errors import LoglinesError
from pipeline.ops.supervisord import paths


def rpc(cfg: Config) -> Any:
    # imported here: only the monitor and the command line talk to supervisord
    from supervisor.xmlrpc import SupervisorTransport

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


def is_running(cfg: Config) -> bool:
    """Whether supervisord answers and has started (not starting up or shutting down)."""
    try:
        return str(rpc(cfg).getState()["statename"]) == "RUNNING"
    except (OSError, xmlrpc.client.Error):
        return False


@dataclass
class Update:
    """What ``update`` did to the running supervisord's programs."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"{name}: added and started" for name in self.added]
        out += [f"{name}: restarted (its configuration changed)" for name in self.changed]
        out += [f"{name}: stopped and removed" for name in self.removed]
        out += [f"{name}: started" for name in self.started]
        return out or ["nothing to change in the running supervisord"]


def update(cfg: Config, start: str = "") -> Update:
    """What ``supervisorctl update`` does, over XML-RPC: supervisord reads its files again;
    programs whose file is gone (link removed) are stopped and removed, changed ones restarted,
    new ones added (and started, with ``autostart``). ``start`` names a program to start too
    when it is there but not running (``loglines enable`` of a stopped worker)."""
    server = rpc(cfg)
    try:
        added, changed, removed = server.reloadConfig()[0]
        for name in removed:
            server.stopProcessGroup(name)
            server.removeProcessGroup(name)
        for name in changed:
            server.stopProcessGroup(name)
            server.removeProcessGroup(name)
            server.addProcessGroup(name)
        for name in added:
            server.addProcessGroup(name)
        done = Update(sorted(added), sorted(changed), sorted(removed))
        if start and start not in added and start not in changed:
            infos = [i for i in server.getAllProcessInfo() if i["group"] == start]
            if infos and any(i["statename"] not in ("RUNNING", "STARTING") for i in infos):
                server.startProcessGroup(start, False)
                done.started.append(start)
        return done
    except xmlrpc.client.Fault as exc:
        raise LoglinesError(f"supervisord refused: {exc.faultString}") from None


def alive(pid: int) -> bool:
    """Whether a process exists (a zombie does not count: it has exited)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True
