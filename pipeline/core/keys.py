"""Every Redis key loglines uses, in one place.

All keys share one hash tag, ``{<prefix>}``, so that the multi-key transactions (take a batch,
push its results, remove it from the in-flight list, save an offset) land in one slot: the same
code works on a single Redis, under Sentinel and on a Cluster.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str = "loglines"

    def _key(self, *parts: str) -> str:
        return "{" + self.prefix + "}:" + ":".join(parts)

    def queue(self, name: str) -> str:
        """The list a named queue lives in (producers RPUSH, consumers pop from the left)."""
        return self._key("q", name)

    def queue_name(self, key: str) -> str:
        """The queue name of a key made by :meth:`queue`."""
        head = self._key("q", "")
        return key[len(head):] if key.startswith(head) else key

    def inflight(self, consumer: str) -> str:
        """The list holding the one batch a consumer is working on."""
        return self._key("inflight", consumer)

    def heartbeat(self, consumer: str) -> str:
        """A key with a TTL that exists while the consumer is alive."""
        return self._key("hb", consumer)

    def stopping(self, consumer: str) -> str:
        """Exists while a consumer that was asked to stop is on its way out: should it be
        killed before it handed its batch back, that batch is not counted towards poison."""
        return self._key("stopping", consumer)

    @property
    def consumers(self) -> str:
        """Hash: consumer id -> the queue its in-flight batches belong to."""
        return self._key("consumers")

    @property
    def works_ahead(self) -> str:
        """Set: the consumers that work on the delivery behind while the one before is being
        acknowledged (parsers). Of their in-flight messages only the last can have been in work
        when they died: only that one counts a recovery."""
        return self._key("works_ahead")

    @property
    def uncounted(self) -> str:
        """Set: the consumers whose handling cannot be what kills their process (a forwarder's
        target deliveries only send what was decoded and checked before): a recovery of their
        in-flight messages never counts towards poison."""
        return self._key("uncounted")

    @property
    def recoveries(self) -> str:
        """Hash: sha1 of a batch -> how many times it was recovered from a dead consumer."""
        return self._key("recoveries")

    @property
    def dead_letters(self) -> str:
        """The dead-letter list: JSON entries with the reason and the original payload."""
        return self._key("dlq")

    @property
    def failed(self) -> str:
        """The failed-requests list: tracker events that ran out of attempts, waiting for a retry."""
        return self._key("failed")

    def secret(self, purpose: str) -> str:
        """A random secret made at first use (the key of the MAC on the tracker's failed events)."""
        return self._key("secret", purpose)

    def idempotency(self, token: str, key_digest: str) -> str:
        """Exists (with a TTL) once a request with this Idempotency-Key was taken: its answer."""
        return self._key("idem", token, key_digest)

    def sent(self, event_id: str) -> str:
        """Exists (with a TTL) once a tracker event was accepted by the tracker."""
        return self._key("sent", event_id)

    def offsets(self, watcher: str) -> str:
        """Hash: file identity -> saved position of a watcher (or a backfill)."""
        return self._key("offsets", watcher)

    def truncated(self, watcher: str) -> str:
        """List: where a watcher's files were when they were truncated (for copytruncate's copy)."""
        return self._key("truncated", watcher)

    @property
    def replication_marker(self) -> str:
        """A counter written before WAIT, so that WAIT covers the writes of other connections."""
        return self._key("replicated")

    def forward(self, worker: str) -> str:
        """Hash: a forwarder's target -> how its delivery stands (state, spool figures)."""
        return self._key("forward", worker)

    def filelog(self, worker: str) -> str:
        """Hash: output file -> size acknowledged by a file logger."""
        return self._key("filelog", worker)

    @property
    def stats(self) -> str:
        """Hash: worker name -> items acknowledged since the counters were created."""
        return self._key("stats")

    def rate(self, minute: int) -> str:
        """Hash: worker name -> items acknowledged during one minute (expires)."""
        return self._key("rate", str(minute))

    def monitor(self, *what: str) -> str:
        """The monitor's own state: ``alerts`` (hash: alert -> its state), ``checks`` (hash:
        what the rules remember between checks), ``sizes:<watcher>`` (hash: file -> when it was
        seen how large, for the age of its oldest unshipped line), ``series:<kind>:<name>``
        (capped lists of samples for the status page's charts)."""
        return self._key("mon", *what)
