"""Document ids for Elasticsearch, and which scheme each index uses.

A line's record has two id schemes. The old one is the sha1 (hex) of service, source file
identity and offset: random, so every insert into a large index is a costly lookup. The ordered
one is 16 bytes, 8 of a hash of service and source file then the offset as 8 bytes big-endian,
written as base64url without padding (22 characters). Elasticsearch stores an id of that
alphabet as the bytes it decodes to, so within one file ids follow the offset in the index's
terms, and Lucene finds the place of a new id cheaply (measured on a fresh index: 7.5 s of
node CPU per 100,000 records instead of 8.7 s). Records that are not lines keep the sha1 of
their ``id_fields`` or of the whole record, or HTTP ingest's ``event_id``.

Both schemes are deterministic and sent with op type ``create``, so a redelivered batch
answers 409 and makes nothing new, as long as it gets the ids its first delivery got. So the
scheme is a property of the index, not of the worker: an index made for ordered ids carries
``_meta: {"loglines_ids": "ordered"}`` in its mapping, and with ``id_scheme = auto``
:class:`IdSchemes` reads the mapping of each index once, creates the indices that do not
exist yet with that mark, and gives sha1 ids to every index without it (one written by an
earlier version, say).
"""

from __future__ import annotations

import binascii
import hashlib
import logging
from collections.abc import Sequence
from typing import Any

import orjson
from elastic_transport import ConnectionError as EsConnectionError
from elastic_transport import ConnectionTimeout
from elasticsearch import ApiError, Elasticsearch

from pipeline.core import message
from pipeline.core.lifecycle import Flags
from pipeline.core.retry import Retry

log = logging.getLogger(__name__)

#: the key of an index's mapping ``_meta`` that says which ids its documents have
MARK = "loglines_ids"
ORDERED = "ordered"
SCHEMES = ("auto", ORDERED, "sha1")
RETRYABLE = {429, 502, 503, 504}
_OFFSETS = 1 << 64


_files: dict[tuple[object, object], bytes] = {}  # (service, src) -> its 8 bytes, for the files at hand
_URLSAFE = bytes.maketrans(b"+/", b"-_")


def ordered_line_id(service: object, src: object, off: int) -> str:
    """8 bytes of a hash of service and file, then the offset big-endian, in base64url."""
    plain = type(service) is str and type(src) is str  # (a record from outside may hold anything)
    head = _files.get((service, src)) if plain else None
    if head is None:
        head = hashlib.blake2b(f"{service}\x00{src}".encode(), digest_size=8).digest()
        if plain:
            if len(_files) > 4096:
                _files.clear()
            _files[service, src] = head
    # base64.urlsafe_b64encode, without its padding, in two calls instead of eight
    return binascii.b2a_base64(head + off.to_bytes(8, "big"), newline=False).translate(_URLSAFE)[:22].decode("ascii")


def document_id(record: dict[str, Any], id_fields: Sequence[str], ordered: bool = False) -> str:
    """A line's record: service, file and offset (ordered, or sha1); any other record:
    ``id_fields``, else the ``event_id`` HTTP ingest gave it, else the whole record (a bare
    record's own src/off/service cannot steer it onto a line's id). A line's offset that is not
    a whole number from 0 to 2**64 - 1 (a record from outside) gets the sha1 id in either
    scheme."""
    src, off = (record.get("src"), record.get("off")) if "logline" in record else (None, None)
    if src is not None and off is not None:  # a line's record
        if ordered and type(off) is int and 0 <= off < _OFFSETS:
            return ordered_line_id(record.get("service", ""), src, off)
        key = f"{record.get('service', '')}\x00{message.item_id(record)}".encode()
    elif id_fields:
        key = orjson.dumps([record.get(name) for name in id_fields])
    elif isinstance(record.get("event_id"), str):  # given by HTTP ingest: stable across retries
        return str(record["event_id"])
    else:
        key = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha1(key).hexdigest()


class IdSchemes:
    """Whether an index takes ordered ids: fixed by ``id_scheme``, or (``auto``) read from the
    index's mapping once per index name and kept for the life of the process: the mark comes
    with the index when it is made, so what was read stays true while the index lives. A new
    name (tomorrow's daily index) is read, and made when missing, before its first bulk."""

    def __init__(self, es: Elasticsearch, scheme: str, name: str, flags: Flags, max_backoff: float) -> None:
        self.es, self.name, self.flags, self.max_backoff = es, name, flags, max_backoff
        self.fixed: bool | None = None if scheme == "auto" else scheme == ORDERED
        self.known: dict[str, bool] = {}

    def ordered(self, index: str) -> bool:
        if self.fixed is not None:
            return self.fixed
        known = self.known.get(index)
        if known is None:
            known = self._learn(index)
        return known

    def _learn(self, index: str) -> bool:
        """Read (or create) ``index`` until its scheme is known, waiting out an unreachable or
        busy Elasticsearch as a bulk request does."""
        retrying = Retry(self.name, self.flags, base=0.5, cap=self.max_backoff)
        while True:
            try:
                found = self._find_or_create(index)
            except (EsConnectionError, ConnectionTimeout) as exc:
                reason = f"Elasticsearch unreachable ({type(exc).__name__})"
            except ApiError as exc:
                if exc.meta.status in (401, 403):  # waited out, as an outage: nothing is guessed
                    reason = (f"Elasticsearch answered {exc.meta.status}: with id_scheme = auto the "
                              "indexer's user needs the view_index_metadata and create_index "
                              "privileges on its indices (grant them, or set id_scheme = sha1)")
                elif exc.meta.status not in RETRYABLE:
                    raise
                else:
                    reason = f"Elasticsearch answered {exc.meta.status}"
            else:
                if found is None:  # no index of that name can be made: the bulk says why per document
                    return False
                self.known[index] = found
                log.info("%s: index %s takes %s ids", self.name, index, ORDERED if found else "sha1")
                return found
            retrying.failed(f"{reason} while reading the mapping of index {index}")

    def _find_or_create(self, index: str) -> bool | None:
        """The index's scheme, after creating it marked when it did not exist; None when
        Elasticsearch refuses to make an index or data stream of that name."""
        for _ in range(3):  # created, then deleted before it was read: once more
            marked = self._marked(index)
            if marked is not None:
                return marked
            if not self._create(index):
                return None
        return None

    def _marked(self, index: str) -> bool | None:
        """Whether every index behind the name (one, or an alias's or a data stream's) is marked
        ordered; None when there is none."""
        try:
            found = self.es.indices.get_mapping(index=index)
        except ApiError as exc:
            if exc.meta.status == 404:
                return None
            raise
        marks = [((entry.get("mappings") or {}).get("_meta") or {}).get(MARK) for entry in found.body.values()]
        return bool(marks) and all(mark == ORDERED for mark in marks)

    def _create(self, index: str) -> bool:
        """Create the index marked; False when no index or data stream of that name can be made.
        Another process creating it first is as good (it marked it, or it is read as it is)."""
        try:
            self.es.indices.create(index=index, mappings={"_meta": {MARK: ORDERED}})
            log.info("%s: created index %s for ordered ids", self.name, index)
            return True
        except ApiError as exc:
            if exc.message == "resource_already_exists_exception":
                return True
            if exc.meta.status != 400:
                raise
            refused = exc
        try:  # a name an index template keeps for data streams: their backing indices carry the
            # template's mapping (and its mark, if it has one)
            self.es.indices.create_data_stream(name=index)
            return True
        except ApiError as exc:
            if exc.message == "resource_already_exists_exception":
                return True
            if exc.meta.status in (401, 403) or exc.meta.status in RETRYABLE or exc.meta.status >= 500:
                raise
        log.warning("%s: Elasticsearch refuses to create index %s (%s): its documents get sha1 ids",
                    self.name, index, refused.message)
        return False
