"""Redis clients made from a :class:`RedisConfig`: plain, TLS, unix socket or Sentinel.

Every client has a ``socket_timeout``, and blocking pops use ``block_timeout`` which the
config guarantees to be below it, so a stalled Redis surfaces as a ``TimeoutError`` instead
of a hang.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from pipeline.config import RedisConfig
from pipeline.core.keys import Keys
from pipeline.errors import LoglinesError

#: What a lost or stalled Redis raises; workers back off and retry on these.
CONNECTION_ERRORS = (redis.ConnectionError, redis.TimeoutError, ConnectionError, OSError)

#: Everything a worker loop catches; :func:`passing` tells which of these to wait out.
REDIS_ERRORS = (*CONNECTION_ERRORS, redis.ResponseError)

#: Replies meaning "not now": out of memory, persistence failing, a failover under way.
_PASSING_STATES = (redis.exceptions.OutOfMemoryError, redis.exceptions.ReadOnlyError,
                   redis.exceptions.TryAgainError, redis.exceptions.ClusterDownError)
# replies redis-py has no class for (a transaction prefixes them with "... caused error: ")
_PASSING_CODES = re.compile(r"(?:^|caused error: )(?:MISCONF|NOREPLICAS|UNBLOCKED|CLUSTERDOWN|TRYAGAIN) ")
#: a Redis Cluster moving a slot (a failover, a resharding): the client learns the map again
_MOVED = (redis.exceptions.MovedError, redis.exceptions.AskError)


def passing(exc: BaseException) -> bool:
    """True when Redis is unreachable or refuses writes for a while: back off and retry.

    Any other error reply is a bug to surface, not to retry forever.
    """
    if isinstance(exc, CONNECTION_ERRORS + _PASSING_STATES + _MOVED):
        return True
    return isinstance(exc, redis.ResponseError) and bool(_PASSING_CODES.search(str(exc)))


def connect(cfg: RedisConfig) -> redis.Redis:
    url = cfg.connection_url()
    common = {
        "socket_timeout": cfg.socket_timeout,
        "socket_connect_timeout": cfg.socket_timeout,
        "health_check_interval": 30,
        # No silent retries inside the client: a transaction whose reply was lost must not be
        # sent again blindly (it may have been applied); the workers decide what to do.
        "retry": Retry(NoBackoff(), 0),
    }
    if url.startswith("redis+sentinel://"):
        return _sentinel_master(url, cfg, common)
    if url.startswith("redis+cluster://"):
        return _cluster(url, cfg, common)
    kwargs = dict(common)
    password = cfg.resolved_password()
    if password:
        kwargs["password"] = password
    return redis.Redis.from_url(url, **kwargs)


def _cluster(url: str, cfg: RedisConfig, common: dict[str, object]) -> redis.Redis:
    """``redis+cluster://[:password@]host:port[,host:port]``: a cluster client (it follows
    MOVED and ASK; every multi-key transaction of loglines stays in the slot of its prefix)."""
    from redis.cluster import ClusterNode, RedisCluster

    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    password = unquote(parts.password) if parts.password else cfg.resolved_password() or None
    nodes = []
    for hostport in netloc.split(","):
        host, _, port = hostport.rpartition(":")
        nodes.append(ClusterNode(host or hostport, int(port) if host else 6379))
    kwargs = {k: v for k, v in common.items() if k != "health_check_interval"}
    client = RedisCluster(startup_nodes=nodes, password=password, **kwargs)
    return client  # (untyped for mypy: redis is read as untyped) the same commands as a plain client


def _sentinel_master(url: str, cfg: RedisConfig, common: dict[str, object]) -> redis.Redis:
    """``redis+sentinel://[:password@]host:port[,host:port]/service[/db]``."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    password = unquote(parts.password) if parts.password else cfg.resolved_password() or None
    hosts = []
    for hostport in netloc.split(","):
        host, _, port = hostport.rpartition(":")
        hosts.append((host or hostport, int(port) if host else 26379))
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ValueError("a sentinel URL names the service: redis+sentinel://host:26379/mymaster")
    db = int(path[1]) if len(path) > 1 else cfg.db
    sentinel = Sentinel(hosts, sentinel_kwargs=dict(common), **common)
    return sentinel.master_for(path[0], db=db, password=password)



MIN_REDIS = (6, 2, 0)


class UnfitServer(LoglinesError):
    """The Redis server would lose work behind the workers' backs (or is too old): refuse."""


def check_server(client: redis.Redis) -> list[str]:
    """Refuse a Redis that may evict keys (queues, offsets and heartbeats would vanish without
    an error anywhere) or is older than 6.2; the warnings for what it may forget in a crash."""
    server = client.info("server")
    version = tuple(int(p) for p in str(server["redis_version"]).split(".")[:3])
    if version < MIN_REDIS:
        raise UnfitServer(f"Redis {'.'.join(map(str, version))} is too old: BLMOVE needs 6.2")
    policy = str(client.info("memory").get("maxmemory_policy", "noeviction"))
    if policy != "noeviction":
        raise UnfitServer(f"Redis evicts keys (maxmemory-policy {policy}): queues, saved offsets and "
                          "heartbeats would vanish without an error; set maxmemory-policy noeviction")
    warnings = []
    persistence = client.info("persistence")
    if not int(persistence.get("aof_enabled", 0)):
        warnings.append("Redis keeps no append-only file: a crash of Redis forgets what was "
                        "acknowledged since its last snapshot (appendonly yes, appendfsync always "
                        "keeps it)")
    return warnings


def connect_async(cfg: RedisConfig) -> redis.asyncio.Redis:
    """The asyncio client of the HTTP workers: the same settings as :func:`connect` (plain,
    TLS or unix socket; no retries inside the client)."""
    import redis.asyncio
    from redis.asyncio.retry import Retry as AsyncRetry

    kwargs: dict[str, object] = {"socket_timeout": cfg.socket_timeout,
                                 "socket_connect_timeout": cfg.socket_timeout,
                                 "retry": AsyncRetry(NoBackoff(), 0)}
    password = cfg.resolved_password()
    if password:
        kwargs["password"] = password
    url = cfg.connection_url()
    if url.startswith(("redis+sentinel://", "redis+cluster://")):
        parts = urlsplit(url)
        netloc = parts.netloc.rsplit("@", 1)[-1]
        if parts.password:
            kwargs["password"] = unquote(parts.password)
        hosts = []
        for hostport in netloc.split(","):
            host, _, port = hostport.rpartition(":")
            hosts.append((host or hostport, int(port) if host else 26379))
        if url.startswith("redis+cluster://"):
            from redis.asyncio.cluster import ClusterNode, RedisCluster

            return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in hosts], **kwargs)
        from redis.asyncio.sentinel import Sentinel

        path = [p for p in parts.path.split("/") if p]
        sentinel = Sentinel(hosts, sentinel_kwargs={k: v for k, v in kwargs.items() if k != "password"}, **kwargs)
        return sentinel.master_for(path[0], db=int(path[1]) if len(path) > 1 else cfg.db)
    return redis.asyncio.Redis.from_url(url, **kwargs)


def wait_replicas(client: redis.Redis, cfg: RedisConfig) -> None:
    """With ``min_replicas``, return only once that many replicas have every write made so far
    (a marker written now, then WAIT on the same connection: WAIT counts the writes of the
    connection it is sent on); else raise a passing ``NOREPLICAS`` error: the caller waits and
    tries again, never counting the work as done."""
    if not cfg.min_replicas:
        return
    with client.pipeline(transaction=False) as pipe:
        pipe.incr(Keys(cfg.prefix).replication_marker)
        pipe.wait(cfg.min_replicas, cfg.min_replicas_timeout_ms)
        _, acked = pipe.execute()
    if int(acked) < cfg.min_replicas:
        raise redis.ResponseError(f"NOREPLICAS {acked} of {cfg.min_replicas} replicas have the last "
                                  f"write after {cfg.min_replicas_timeout_ms} ms")


def relearn(client: object, exc: BaseException) -> None:
    """After an error that may mean the topology changed, make a cluster client read the slot
    map again (a plain or Sentinel client finds the master by itself at the next connection)."""
    manager = getattr(client, "nodes_manager", None)
    if manager is None:
        return
    try:
        manager.initialize()
    except REDIS_ERRORS + (redis.exceptions.RedisClusterException,):
        pass  # the next try tells again
