"""Real Redis topologies on 127.0.0.1 for the scaling tests: a master with a replica and three
Sentinels, and a Redis Cluster of three masters with a replica each."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import redis

from tests.support.servers import RedisServer, free_port, redis_server_binary, wait_for


def redis_cli() -> str:
    server = Path(redis_server_binary())
    beside = server.with_name("redis-cli")
    return str(beside) if beside.exists() else "redis-cli"


class Sentinels:
    """One master, one replica, three Sentinels (quorum 2) watching ``service``."""

    def __init__(self, workdir: Path, service: str = "loglines", down_after_ms: int = 1000) -> None:
        self.workdir, self.service = workdir, service
        self.master = RedisServer(workdir / "master").start()
        self.replica = RedisServer(workdir / "replica").start()
        self.replica.client().replicaof("127.0.0.1", self.master.port)
        wait_for(lambda: self.replica.client().info("replication").get("master_link_status") == "up",
                 what="the replica in sync")
        self.sentinels: list[subprocess.Popen[bytes]] = []
        self.ports: list[int] = []
        for n in range(3):
            port = free_port()
            conf = workdir / f"sentinel-{n}.conf"
            conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {workdir}\n"
                            f"sentinel monitor {service} 127.0.0.1 {self.master.port} 2\n"
                            f"sentinel down-after-milliseconds {service} {down_after_ms}\n"
                            f"sentinel failover-timeout {service} 10000\n"
                            f"sentinel parallel-syncs {service} 1\n")
            self.sentinels.append(subprocess.Popen([redis_server_binary(), str(conf), "--sentinel"],
                                                   stdout=open(workdir / f"sentinel-{n}.log", "ab"),
                                                   stderr=subprocess.STDOUT))
            self.ports.append(port)
        for port in self.ports:
            wait_for(lambda p=port: _answers(p), what=f"sentinel on {port}")
        wait_for(lambda: all(len(redis.Redis(port=p).sentinel_sentinels(service)) == 2 for p in self.ports),
                 timeout=30, what="the sentinels knowing each other")

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.ports)
        return f"redis+sentinel://{hosts}/{self.service}"

    def current_master_port(self) -> int:
        host, port = redis.Redis(port=self.ports[0]).sentinel_get_master_addr_by_name(self.service)
        return int(port)

    def events(self) -> str:
        """What the Sentinels said of failover, TILT and conversion, for a failure's message."""
        marks = ("+tilt", "-tilt", "+sdown", "-sdown", "+odown", "+switch-master", "+convert-to-slave",
                 "+failover-end", "-failover-abort")
        lines = []
        for n in range(len(self.sentinels)):
            log = self.workdir / f"sentinel-{n}.log"
            text = log.read_text(errors="replace") if log.exists() else ""
            lines += [f"sentinel-{n}: {line.strip()}" for line in text.splitlines() if any(m in line for m in marks)]
        return "\n".join(lines[-60:]) or "(the Sentinels logged none of failover, TILT or conversion)"

    def stop(self) -> None:
        for proc in self.sentinels:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        self.master.kill()
        self.replica.kill()


class Cluster:
    """Three masters and three replicas, made with ``redis-cli --cluster create``."""

    def __init__(self, workdir: Path, masters: int = 3, replicas: int = 1) -> None:
        self.nodes: list[RedisServer] = []
        for n in range(masters * (1 + replicas)):
            self.nodes.append(RedisServer(workdir / f"node-{n}", _port_with_bus(), "--cluster-enabled", "yes",
                                          "--cluster-config-file", str(workdir / f"node-{n}.conf"),
                                          "--cluster-node-timeout", "2000").start())
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run([redis_cli(), "--cluster", "create", *addresses, "--cluster-replicas", str(replicas),
                        "--cluster-yes"], check=True, capture_output=True, timeout=120)
        wait_for(self._ok, timeout=60, what="the cluster ok")

    def _ok(self) -> bool:
        return all("cluster_state:ok" in node.client().execute_command("CLUSTER", "INFO").decode()
                   for node in self.nodes if node.proc and node.proc.poll() is None)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:3])

    def node_of_slot(self, slot: int) -> RedisServer:
        for node in self.nodes:
            if node.proc is None or node.proc.poll() is not None:
                continue
            for start, end, master, *_ in node.client().execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    port = int(master[1])
                    return next(n for n in self.nodes if n.port == port)
        raise AssertionError(f"no node serves slot {slot}")

    def replica_of(self, master: RedisServer) -> RedisServer:
        for node in self.nodes:
            if node is master or node.proc is None or node.proc.poll() is not None:
                continue
            info = node.client().info("replication")
            if info.get("role") == "slave" and int(info.get("master_port", 0)) == master.port:
                return node
        raise AssertionError(f"no replica of {master.port}")

    def wait_ok(self, timeout: float = 60) -> None:
        wait_for(self._ok, timeout=timeout, what="the cluster ok")

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()


def _port_with_bus() -> int:
    """A free port whose cluster bus port (the port + 10000) is free too."""
    import socket

    while True:
        port = free_port()
        if port > 55000:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def _answers(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_timeout=1).ping())
    except redis.ConnectionError:
        return False


def slot_of(prefix: str) -> int:
    """The cluster slot of every key of a pipeline with this prefix (its hash tag)."""
    from redis.crc import key_slot

    return int(key_slot(("{" + prefix + "}:q:x").encode()))


def prefixes_on_different_masters(cluster: Cluster, count: int = 2) -> list[str]:
    found: dict[int, str] = {}
    n = 0
    while len(found) < count:
        prefix = f"site{n}"
        master = cluster.node_of_slot(slot_of(prefix)).port
        found.setdefault(master, prefix)
        n += 1
    time.sleep(0)
    return list(found.values())
