"""Outgrowing one machine, for real on 127.0.0.1: Redis Sentinel failover, a Redis Cluster with
two pipelines on different shards, an Elasticsearch cluster losing a node."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import redis

from tests.support.cluster import Cluster, Sentinels, prefixes_on_different_masters, slot_of
from tests.support.faults import Pipeline, Scenario, alive
from tests.support.servers import wait_for
from tests.support.tracker_server import TrackerServer

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("min_replicas", [1, 0])
def test_37_sentinel_failover_with_and_without_min_replicas(min_replicas: int, es_url: str, tracker: TrackerServer,
                                                            tmp_path: Path) -> None:
    """SIGKILL of the master under load; the Sentinels promote the replica; the killed master
    comes back as a replica. With min_replicas = 1 nothing acknowledged can vanish with the
    master: every line in the file and in Elasticsearch exactly once (asserted). Without it a
    commit the master acknowledged but did not replicate can vanish: what happened is
    measured and reported (the watcher re-reads what Redis forgot, the sinks absorb repeats)."""
    title = f"37 Sentinel failover, min_replicas = {min_replicas}"
    scenario = Scenario(title)
    topology = Sentinels(tmp_path / "sentinel")
    extra = f"min_replicas = {min_replicas}\nmin_replicas_timeout_ms = 1000\n" if min_replicas else ""
    pipe = Pipeline(tmp_path, topology.url, es_url, tracker, sinks=("file", "es"), redis_extra=extra)
    clients = IngestClients(pipe, tmp_path)
    pipe.start()
    clients.start()
    try:
        pipe.write(1000, pace=0.02)
        wait_for(lambda: len(clients.acked) >= 100, timeout=60, what="events taken over HTTP")
        old = topology.master
        old_port = old.port
        old.kill()
        wait_for(lambda: topology.current_master_port() != old_port, timeout=60, what="the failover")
        pipe.write(500, pace=0.02)  # written while the cluster has one node only
        old.start()  # it comes back and the Sentinels make it a replica of the new master
        try:  # a Sentinel converts it after 8 s at least, and not at all while in TILT (30 s) on a loaded host
            wait_for(lambda: old.client().info("replication").get("role") == "slave", timeout=150,
                     what="the old master back as a replica")
        except AssertionError as error:
            raise AssertionError(f"{error}; the Sentinels said:\n{topology.events()}") from None
        pipe.write(500, pace=0.02)
        before = len(clients.acked)
        wait_for(lambda: len(clients.acked) >= before + 100, timeout=60, what="events taken again")
        acked = clients.finish()
        pipe.wait_delivered(timeout=240)
        alive(pipe)
        ingested = clients.seen(len(acked))
        lost_acked = len(acked - set(ingested))
        if min_replicas:
            pipe.check(scenario, note="nothing acknowledged lost")
            assert lost_acked == 0, f"{lost_acked} events acknowledged with 202 are not in Elasticsearch"
        else:
            for sink in pipe.sinks:
                result = scenario.record(sink, pipe.seen(sink), pipe.written, note="measured, not asserted")
                assert result["unexpected"] == 0, result
        order = {n: i for i, n in enumerate(sorted(acked))}  # the acknowledged ones, numbered
        scenario.record("ingest", {order[n]: c for n, c in ingested.items() if n in order}, len(acked),
                        note=f"{len(acked)} events acknowledged by HTTP ingest; lost {lost_acked}"
                             + ("" if min_replicas else " (measured, not asserted)"))
    finally:
        clients.stop()
        pipe.stop()
        topology.stop()


class IngestClients:
    """An HTTP ingest worker beside the pipeline, its own indexer, and a client posting one
    sequence-numbered event at a time, keeping what was acknowledged (202)."""

    TOKEN = "scaling-token-0123456789abcdef"

    def __init__(self, pipe: Pipeline, tmp: Path) -> None:
        import threading

        from tests.support.procs import Worker
        from tests.support.servers import free_port

        self.pipe, self.port, self.index = pipe, free_port(), pipe.index + "-ingest"
        (tmp / "tokens").write_text(f"app:{self.TOKEN}\n")
        pipe.cfg.write_text(pipe.cfg.read_text() + f"""
[worker_ingest]
type = http
pushto = ingested
tokens_file = tokens
listen = 127.0.0.1:{self.port}

[worker_es2]
type = esindexer
listento = ingested
hosts = {",".join(pipe.es_hosts)}
index = {self.index}
time_field = @timestamp
max_backoff = 2
""")
        self.workers = [Worker(pipe.cfg, "worker_ingest", pipe.logs), Worker(pipe.cfg, "worker_es2", pipe.logs)]
        self.acked: set[int] = set()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._post, daemon=True)

    def start(self) -> None:
        for worker in self.workers:
            worker.start()
        self.thread.start()

    def _post(self) -> None:
        import requests

        n = 0
        session = requests.Session()
        url = f"http://127.0.0.1:{self.port}/v1/events"
        while not self.done.is_set():
            try:
                reply = session.post(url, json={"seq": n}, timeout=5,
                                     headers={"Authorization": f"Bearer {self.TOKEN}"})
                if reply.status_code == 202:
                    self.acked.add(n)
            except requests.RequestException:
                session = requests.Session()
            n += 1  # a refused event is not retried: what was acknowledged is what counts
            time.sleep(0.01)

    def finish(self) -> set[int]:
        self.done.set()
        self.thread.join(30)
        return set(self.acked)

    def seen(self, expected: int) -> dict[int, int]:
        from tests.support.faults import es_seen

        try:
            wait_for(lambda: len(es_seen(self.pipe.es, self.index, "seq")) >= expected, timeout=60,
                     interval=0.5, what="the acknowledged events indexed")
        except AssertionError:
            pass  # some are lost: measured by the caller
        return es_seen(self.pipe.es, self.index, "seq")

    def stop(self) -> None:
        self.done.set()
        for worker in self.workers:
            worker.stop()
        self.pipe.es.options(ignore_status=404).indices.delete(index=self.index)


def test_38_two_pipelines_on_two_shards_of_a_cluster_through_a_failover_and_a_kill(
        es_url: str, tracker: TrackerServer, tmp_path: Path) -> None:
    scenario = Scenario("38 Redis Cluster: failover, then a master SIGKILLed")
    cluster = Cluster(tmp_path / "cluster")
    pipes: list[Pipeline] = []
    try:
        prefixes = prefixes_on_different_masters(cluster, 2)
        masters = {cluster.node_of_slot(slot_of(p)).port for p in prefixes}
        assert len(masters) == 2, "the two pipelines share a master"
        for prefix in prefixes:
            (tmp_path / prefix).mkdir()
            pipes.append(Pipeline(tmp_path / prefix, cluster.url, es_url, tracker, sinks=("file",),
                                  prefix=prefix).start())
        for pipe in pipes:
            pipe.write(500, pace=0.02)
        first = cluster.node_of_slot(slot_of(prefixes[0]))
        cluster.replica_of(first).client().execute_command("CLUSTER", "FAILOVER")
        wait_for(lambda: cluster.node_of_slot(slot_of(prefixes[0])).port != first.port, timeout=60,
                 what="the replica promoted")
        for pipe in pipes:
            pipe.write(500, pace=0.02)
        second = cluster.node_of_slot(slot_of(prefixes[1]))
        second.kill()
        wait_for(lambda: cluster.node_of_slot(slot_of(prefixes[1])).port != second.port, timeout=60,
                 what="the killed master replaced")
        cluster.wait_ok()
        for pipe in pipes:
            pipe.write(500, pace=0.02)
        for pipe in pipes:
            pipe.wait_delivered(timeout=240)
            alive(pipe)
        for prefix, pipe in zip(prefixes, pipes, strict=True):
            result = scenario.record(f"file:{prefix}"[:8], pipe.seen("file"), pipe.written,
                                     note=f"slot {slot_of(prefix)}")
            assert result == {"lost": 0, "duplicated": 0, "unexpected": 0}, (prefix, result)
    finally:
        for pipe in pipes:
            pipe.stop()
        cluster.stop()


def test_39_an_elasticsearch_node_killed_under_load(es_cluster, tracker: TrackerServer, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                    redis_server) -> None:
    scenario = Scenario("39 Elasticsearch cluster: a node SIGKILLed, restarted")
    hosts = ",".join(node.url for node in es_cluster)
    pipe = Pipeline(tmp_path, redis_server.url, hosts, tracker, sinks=("es",)).start()
    try:
        pipe.es.indices.create(index=pipe.index, settings={"number_of_replicas": 1, "number_of_shards": 2})
        pipe.write(1000, pace=0.02)
        victim = es_cluster[1]
        os.kill(victim.pid, signal.SIGKILL)
        pipe.write(1000, pace=0.02)
        victim.start()
        pipe.write(500, pace=0.02)
        pipe.wait_delivered(timeout=300)
        alive(pipe)
        pipe.check(scenario, note="the indexer never stopped")
    finally:
        pipe.stop()


def test_status_names_the_node_of_each_pipelines_slot(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from pipeline.cli import main

    cluster = Cluster(tmp_path / "cluster")
    try:
        cfg = tmp_path / "loglines.cfg"
        cfg.write_text(f"[supervisor]\npassword = x\n[redis]\nurl = {cluster.url}\nprefix = site0\n"
                       "[worker_b]\ntype = broker\nlistento = a\nfanout = b\n")
        assert main(["-c", str(cfg), "status", "--json"]) in (0, 1)
        import orjson

        out = orjson.loads(capsys.readouterr().out)
        node = cluster.node_of_slot(slot_of("site0"))
        assert out["redis"]["redis"]["slot"] == slot_of("site0")
        assert out["redis"]["redis"]["node"] == f"127.0.0.1:{node.port}"
    finally:
        cluster.stop()


def test_min_replicas_holds_a_commit_until_a_replica_has_it(tmp_path: Path) -> None:
    """With the replica stopped, a consumer's acknowledgement is not counted as done (a
    passing NOREPLICAS error), and it goes through once the replica is back."""
    from pipeline.config import RedisConfig
    from pipeline.core.connection import connect, passing, wait_replicas

    topology = Sentinels(tmp_path / "s")
    try:
        cfg = RedisConfig(url=topology.url, embedded=False, min_replicas=1, min_replicas_timeout_ms=300)
        client = connect(cfg)
        client.set("{loglines}:x", b"1")
        wait_replicas(client, cfg)
        topology.replica.kill()
        client.set("{loglines}:x", b"2")
        with pytest.raises(redis.ResponseError) as info:
            wait_replicas(client, cfg)
        assert passing(info.value)
        topology.replica.start()
        topology.replica.client().replicaof("127.0.0.1", topology.master.port)
        wait_for(lambda: _replicated(client, cfg), timeout=30, what="the replica back")
    finally:
        topology.stop()


def _replicated(client, cfg) -> bool:  # type: ignore[no-untyped-def]
    from pipeline.core.connection import wait_replicas

    try:
        wait_replicas(client, cfg)
    except redis.ResponseError:
        return False
    return True
