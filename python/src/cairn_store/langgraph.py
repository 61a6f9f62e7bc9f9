"""A LangGraph checkpointer backed by a Cairn server: ``CairnSaver`` (sync) and
``AsyncCairnSaver`` (async), passed as ``checkpointer=`` to ``graph.compile``.

How checkpoints map onto Cairn (one thread = one Cairn session with the key
``langgraph:thread:<thread_id>``):

- each checkpoint is an artifact ``lg/c/<ns>/<checkpoint_id>`` (kind ``lg_checkpoint``) whose
  content is a small JSON document: the checkpoint without its channel values, the metadata,
  the parent id, and for every channel a reference to its value;
- a channel value larger than ``inline_max`` bytes is its own artifact
  ``lg/v/<ns>/<channel>/<version>`` (kind ``lg_value``), written only when the channel changed
  (``new_versions``). Its BLAKE3 hash is computed locally and the server is asked first, so a
  value the store already holds (in any thread of the tenant) is never sent or stored again;
- the writes of one ``put_writes`` call are an artifact ``lg/w/<ns>/<checkpoint_id>/<task_id>``;
- the session also has the tag ``lg-thread:<hash of thread_id>``, by which threads are found
  (a copy has the tag but not the key: keys are unique and a merge takes none);
- ``copy_thread`` is a Cairn merge of the source thread's session into a new session tagged
  for the target thread: new records pointing at the same content, no content copied;
- ``prune`` and ``delete_for_runs`` delete artifacts and then the values no kept checkpoint
  references; ``delete_thread`` deletes the session.

Stored data is never unpickled: values go through LangGraph's ``JsonPlusSerializer`` (msgpack)
with ``pickle_fallback=False``, and a stored ``pickle`` type is refused when read.

Importing ``cairn_store`` does not import LangGraph; importing this module does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Generator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_checkpoint_metadata,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from . import _api
from ._client import AsyncClient, Client
from ._content import hash_bytes
from ._errors import CairnError, NotFound
from ._models import Artifact, ArtifactQuery, Page, Session

__all__ = ["AsyncCairnSaver", "CairnSaver"]

KEY_PREFIX = "langgraph:thread:"
KIND_CHECKPOINT = "lg_checkpoint"
KIND_WRITES = "lg_writes"
KIND_VALUE = "lg_value"
FORMAT = 1
INLINE_MAX = 2048
"""Serialized channel values up to this many bytes live inside the checkpoint document."""
CACHE_BYTES = 64 << 20
"""Default budget of the content cache (immutable content by hash, so it is never stale)."""
PAGE = 200
REFS_MAX = 100_000
"""How many channel-value references the saver remembers between checkpoints."""

Op = tuple[str, tuple[Any, ...], dict[str, Any]]
Plan = Generator[Op, Any, Any]


def _ns(ns: str) -> str:
    """A checkpoint namespace as a name segment with no glob metacharacters and no ``/``."""
    return "n" + quote(ns, safe="")


def _q(s: str) -> str:
    return quote(str(s), safe="")


def doc_name(ns: str, checkpoint_id: str) -> str:
    """The artifact name of a checkpoint document."""
    return f"lg/c/{_ns(ns)}/{_q(checkpoint_id)}"


def writes_name(ns: str, checkpoint_id: str, task_id: str) -> str:
    """The artifact name of one task's writes to a checkpoint."""
    return f"lg/w/{_ns(ns)}/{_q(checkpoint_id)}/{_q(task_id)}"


def value_name(ns: str, channel: str, version: Any) -> str:
    """The artifact name of one version of one channel's value."""
    return f"lg/v/{_ns(ns)}/{_q(channel)}/{_q(str(version))}"


def thread_tag(thread_id: str) -> str:
    """The tag that finds a thread's session (fixed length, any thread id)."""
    return "lg-thread:" + hash_bytes(thread_id.encode())[:32]


def thread_key(thread_id: str) -> str:
    """The unique key a thread's session is created with (so concurrent creators agree)."""
    if len(thread_id) <= 256 and thread_id.isprintable():
        return KEY_PREFIX + thread_id
    return KEY_PREFIX + "blake3:" + hash_bytes(thread_id.encode())


def _thread_session(thread_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": f"langgraph thread {thread_id}"[:200],
        "tags": ["langgraph", thread_tag(thread_id)],
        "metadata": {"langgraph_thread_id": thread_id, **extra},
    }


def run_tag(run_id: str) -> str:
    """The tag that finds a run's checkpoints across threads (fixed length, any run id)."""
    return "lg-run:" + hash_bytes(run_id.encode())[:32]


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _unb64(s: str) -> bytes:
    return base64.b64decode(s.encode("ascii"), validate=True)


def _json_safe(md: Any) -> Any | None:
    try:
        text = json.dumps(md, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        return None
    return json.loads(text) if len(text) <= 16384 else None


class _Lru:
    """A thread-safe LRU of bytes by key with a byte budget."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self._d: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            v = self._d.get(key)
            if v is not None:
                self._d.move_to_end(key)
            return v

    def put(self, key: str, value: bytes) -> None:
        if len(value) > self.budget // 4:
            return
        with self._lock:
            if key in self._d:
                return
            self._d[key] = value
            self.used += len(value)
            while self.used > self.budget and self._d:
                _, old = self._d.popitem(last=False)
                self.used -= len(old)


@dataclass
class _Loaded:
    """A checkpoint document read back, before its values are resolved."""

    record: Artifact
    ns: str
    checkpoint_id: str
    doc: dict[str, Any]


class _Core:
    """The saver's logic, written once as plans: generators that yield operations on a client
    (``("run", (call,), {})``, ``("put", ...)``, ``("read", ...)``) and receive their results.
    The sync saver runs the plans with :class:`Client`, the async one with :class:`AsyncClient`.
    """

    def __init__(self, serde: SerializerProtocol, inline_max: int, cache_bytes: int) -> None:
        self.serde = serde
        self.inline_max = inline_max
        self.content = _Lru(cache_bytes)
        self._threads: dict[str, str] = {}
        self._refs: OrderedDict[tuple[str, str, str, str], dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, sid: str, ns: str, refs: dict[str, dict[str, Any]]) -> None:
        """Keeps the references of a checkpoint's values, so the next checkpoint can point at
        unchanged values without reading anything back (bounded: oldest forgotten first)."""
        with self._lock:
            for ch, ref in refs.items():
                if "v" in ref and ("h" in ref or "d" in ref):
                    key = (sid, ns, ch, str(ref["v"]))
                    self._refs[key] = ref
                    self._refs.move_to_end(key)
            while len(self._refs) > REFS_MAX:
                self._refs.popitem(last=False)

    # ---------------------------------------------------------------- serialization

    def dump(self, value: Any) -> tuple[str, bytes]:
        t, b = self.serde.dumps_typed(value)
        if t == "pickle":
            raise ValueError("CairnSaver never stores pickled data; use a serializer without pickle")
        return t, b

    def load(self, t: str, b: bytes) -> Any:
        if t == "pickle":
            raise CairnError(
                "refusing to unpickle stored checkpoint data (it could run code); this saver stores msgpack/JSON only",
                code="unsafe_data",
            )
        return self.serde.loads_typed((t, b))

    # --------------------------------------------------------------------- threads

    def forget(self, thread_id: str) -> None:
        with self._lock:
            self._threads.pop(thread_id, None)

    def find_thread(self, thread_id: str) -> Plan:
        """The session of a thread (found by its tag, which copies carry too), or None."""
        page: Page[Session] = yield ("run", (_api.list_sessions_page(tags=[thread_tag(thread_id)], limit=10),), {})
        found = [s for s in page.items if s.metadata.get("langgraph_thread_id") == thread_id]
        return min(found, key=lambda s: (s.created_at, s.id)) if found else None

    def session(self, thread_id: str, create: bool) -> Plan:
        """The session id of a thread (created when ``create``), or None."""
        with self._lock:
            sid = self._threads.get(thread_id)
        if sid is not None:
            return sid
        s = yield from self.find_thread(thread_id)
        if s is None:
            if not create:
                return None
            s = yield ("run", (_api.session_by_key(thread_key(thread_id), **_thread_session(thread_id)),), {})
        with self._lock:
            self._threads[thread_id] = s.id
        return s.id

    # -------------------------------------------------------------------- content

    def read_content(self, record: Artifact) -> Plan:
        b = self.content.get(record.hash)
        if b is None:
            b = yield ("read", (record.id,), {})
            self.content.put(record.hash, b)
        return b

    def query_all(self, q: ArtifactQuery) -> Plan:
        out: list[Artifact] = []
        cursor = None
        while True:
            page: Page[Artifact] = yield ("run", (_api.query_page(q, cursor=cursor, limit=1000),), {})
            out.extend(page.items)
            if page.next_cursor is None:
                return out
            cursor = page.next_cursor

    # ------------------------------------------------------------------------- put

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> Plan:
        conf = config["configurable"]
        thread_id = str(conf["thread_id"])
        ns = str(conf.get("checkpoint_ns", ""))
        parent = conf.get("checkpoint_id")
        sid = yield from self.session(thread_id, create=True)
        cp = dict(checkpoint)
        values = cp.pop("channel_values", {}) or {}
        refs: dict[str, dict[str, Any]] = {}
        uploads: list[tuple[str, str, bytes, dict[str, Any]]] = []
        unknown: list[str] = []
        for ch, ver in cp.get("channel_versions", {}).items():
            if ch in new_versions:
                if ch in values:
                    t, b = self.dump(values[ch])
                else:
                    t, b = "empty", b""
                if len(b) <= self.inline_max:
                    refs[ch] = {"v": str(ver), "t": t, "d": _b64(b)}
                else:
                    h = hash_bytes(b)
                    name = value_name(ns, ch, ver)
                    refs[ch] = {"v": str(ver), "t": t, "h": h, "n": len(b), "name": name}
                    uploads.append((name, h, b, {"t": t}))
            else:
                with self._lock:
                    known = self._refs.get((sid, ns, ch, str(ver)))
                if known:
                    refs[ch] = known
                else:
                    refs[ch] = {"v": str(ver), "name": value_name(ns, ch, ver)}
                    unknown.append(ch)
        if unknown and parent:
            # Not seen by this saver (another process wrote the parent): take the parent's refs.
            q = ArtifactQuery(session=sid, kind=KIND_CHECKPOINT, name=doc_name(ns, str(parent)), latest_only=True)
            page: Page[Artifact] = yield ("run", (_api.query_page(q, limit=1),), {})
            if page.items:
                loaded = yield from self.load_doc(page.items[0])
                for ch in unknown:
                    pref = loaded.doc.get("channels", {}).get(ch)
                    if pref and str(pref.get("v")) == refs[ch]["v"]:
                        refs[ch] = pref
        if uploads:
            missing = yield ("run", (_api.missing_blobs(sorted({u[1] for u in uploads})),), {})
            for name, h, b, value_md in uploads:
                yield (
                    "put",
                    (sid, name, b),
                    {"kind": KIND_VALUE, "metadata": value_md, "present": h not in missing},
                )
                missing.discard(h)
                self.content.put(h, b)
        self.remember(sid, ns, refs)
        md = get_checkpoint_metadata(config, metadata)
        mt, mb = self.dump(md)
        ct, cb = self.dump(cp)
        doc = {
            "format": FORMAT,
            "checkpoint": {"t": ct, "d": _b64(cb)},
            "metadata": {"t": mt, "d": _b64(mb)},
            "parent_checkpoint_id": parent,
            "channels": refs,
        }
        body = json.dumps(doc, separators=(",", ":")).encode()
        art_md: dict[str, Any] = {
            "checkpoint_ns": ns,
            "checkpoint_id": checkpoint["id"],
            "parent_checkpoint_id": parent,
        }
        safe = _json_safe(md)
        if safe is not None:
            art_md["langgraph_metadata"] = safe
        run_id = md.get("run_id")
        tags = [run_tag(str(run_id))] if run_id else []
        yield (
            "put",
            (sid, doc_name(ns, checkpoint["id"]), body),
            {
                "kind": KIND_CHECKPOINT,
                "tags": tags,
                "metadata": art_md,
                "mime_type": "application/json",
                "dedup": False,
            },
        )
        self.content.put(hash_bytes(body), body)
        return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint["id"]}}

    def put_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str
    ) -> Plan:
        conf = config["configurable"]
        thread_id = str(conf["thread_id"])
        ns = str(conf.get("checkpoint_ns", ""))
        cid = str(conf["checkpoint_id"])
        sid = yield from self.session(thread_id, create=True)
        entries = []
        for idx, (channel, value) in enumerate(writes):
            t, b = self.dump(value)
            entries.append([WRITES_IDX_MAP.get(channel, idx), channel, t, _b64(b)])
        body = json.dumps(
            {"format": FORMAT, "task_id": task_id, "task_path": task_path, "writes": entries},
            separators=(",", ":"),
        ).encode()
        yield (
            "put",
            (sid, writes_name(ns, cid, task_id), body),
            {"kind": KIND_WRITES, "mime_type": "application/json", "dedup": False},
        )
        self.content.put(hash_bytes(body), body)

    # ------------------------------------------------------------------------ read

    def load_doc(self, record: Artifact) -> Plan:
        raw = yield from self.read_content(record)
        try:
            doc = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CairnError(f"checkpoint document {record.name} is not JSON: {e}", code="corrupt") from e
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise CairnError(
                f"checkpoint document {record.name} has an unknown format {doc.get('format')!r}; upgrade cairn-store",
                code="corrupt",
            )
        md = record.metadata
        return _Loaded(record, str(md.get("checkpoint_ns", "")), str(md.get("checkpoint_id", "")), doc)

    def resolve_value(self, sid: str, ns: str, ch: str, ref: dict[str, Any]) -> Plan:
        """A channel's value from its reference (inline, by hash, or by name); ``_MISSING``
        when the value is absent (an empty channel).
        """
        if "d" in ref:
            t, b = ref["t"], _unb64(ref["d"])
        else:
            b = self.content.get(ref["h"]) if "h" in ref else None
            t = ref.get("t")
            if b is None:
                try:
                    found: list[Artifact] = yield ("run", (_api.versions(sid, ref["name"]),), {})
                except NotFound:
                    found = []
                want = ref.get("h")
                match = [a for a in found if want is None or a.hash == want]
                if not match:
                    return _MISSING
                rec = match[-1]
                b = yield from self.read_content(rec)
                if t is None:
                    # A reference by name only: the type is the value artifact's metadata.
                    t = str(rec.metadata.get("t", "msgpack"))
        if t == "empty":
            return _MISSING
        return self.load(t, b)

    def tuple_of(self, thread_id: str, sid: str, loaded: _Loaded) -> Plan:
        doc, ns, cid = loaded.doc, loaded.ns, loaded.checkpoint_id
        checkpoint = self.load(doc["checkpoint"]["t"], _unb64(doc["checkpoint"]["d"]))
        metadata = self.load(doc["metadata"]["t"], _unb64(doc["metadata"]["d"]))
        values: dict[str, Any] = {}
        for ch, ref in doc.get("channels", {}).items():
            v = yield from self.resolve_value(sid, ns, ch, ref)
            if v is not _MISSING:
                values[ch] = v
        checkpoint["channel_values"] = values
        self.remember(sid, ns, doc.get("channels", {}))
        writes = yield from self.pending_writes(sid, ns, cid)
        parent = doc.get("parent_checkpoint_id")
        return CheckpointTuple(
            config={"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": cid}},
            checkpoint=checkpoint,
            metadata=metadata,
            parent_config=(
                {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": parent}}
                if parent
                else None
            ),
            pending_writes=writes,
        )

    def pending_writes(self, sid: str, ns: str, cid: str) -> Plan:
        prefix = f"lg/w/{_ns(ns)}/{_q(cid)}/"
        records = yield from self.query_all(ArtifactQuery(session=sid, kind=KIND_WRITES, name=prefix + "*"))
        merged: dict[tuple[str, int], tuple[str, str, str, Any]] = {}
        for rec in records:
            raw = yield from self.read_content(rec)
            w = json.loads(raw)
            task_id, task_path = str(w["task_id"]), str(w.get("task_path", ""))
            for idx, channel, t, d in w["writes"]:
                key = (task_id, int(idx))
                if key[1] >= 0 and key in merged:
                    continue
                merged[key] = (task_path, task_id, channel, self.load(t, _unb64(d)))
        ordered = sorted(merged.items(), key=lambda kv: (kv[1][0], kv[0][0], kv[0][1]))
        return [(tid, ch, v) for (tid, _), (_, _, ch, v) in ordered]

    def get_tuple(self, config: RunnableConfig) -> Plan:
        conf = config["configurable"]
        thread_id = str(conf["thread_id"])
        ns = str(conf.get("checkpoint_ns", ""))
        cid = get_checkpoint_id(config)
        sid = yield from self.session(thread_id, create=False)
        if sid is None:
            return None
        name = doc_name(ns, cid) if cid else f"lg/c/{_ns(ns)}/*"
        q = ArtifactQuery(session=sid, kind=KIND_CHECKPOINT, name=name, descending=True, latest_only=True)
        page: Page[Artifact] = yield ("run", (_api.query_page(q, limit=1),), {})
        if not page.items:
            return None
        loaded = yield from self.load_doc(page.items[0])
        tup = yield from self.tuple_of(thread_id, sid, loaded)
        return tup

    def list_page(
        self,
        config: RunnableConfig | None,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
        remaining: int | None,
        cursor: str | None,
    ) -> Plan:
        """One page of ``list``: (tuples, next cursor or None)."""
        thread_id: str | None = None
        ns_filter: str | None = None
        cid_filter: str | None = None
        sid: str | None = None
        if config is not None:
            conf = config.get("configurable", {})
            if conf.get("thread_id") is not None:
                thread_id = str(conf["thread_id"])
                sid = yield from self.session(thread_id, create=False)
                if sid is None:
                    return [], None
            if conf.get("checkpoint_ns") is not None:
                ns_filter = str(conf["checkpoint_ns"])
            cid_filter = get_checkpoint_id(config)
        before_id = get_checkpoint_id(before) if before else None
        name = f"lg/c/{_ns(ns_filter)}/*" if ns_filter is not None else "lg/c/*"
        if cid_filter and ns_filter is not None:
            name = doc_name(ns_filter, cid_filter)
        q = ArtifactQuery(session=sid, kind=KIND_CHECKPOINT, name=name, descending=True, latest_only=True)
        page: Page[Artifact] = yield ("run", (_api.query_page(q, cursor=cursor, limit=PAGE),), {})
        out: list[CheckpointTuple] = []
        for rec in page.items:
            cid = str(rec.metadata.get("checkpoint_id", ""))
            if cid_filter and cid != cid_filter:
                continue
            if before_id and cid >= before_id:
                continue
            pre = rec.metadata.get("langgraph_metadata")
            if filter and isinstance(pre, dict) and not all(pre.get(k) == v for k, v in filter.items()):
                continue
            tid = thread_id
            if tid is None:
                tid = yield from self.thread_of(rec.session_id)
                if tid is None:
                    continue
            loaded = yield from self.load_doc(rec)
            tup = yield from self.tuple_of(tid, rec.session_id, loaded)
            if filter and not all(tup.metadata.get(k) == v for k, v in filter.items()):
                continue
            out.append(tup)
            if remaining is not None and len(out) >= remaining:
                return out, None
        return out, page.next_cursor

    def thread_of(self, sid: str) -> Plan:
        with self._lock:
            for tid, known in self._threads.items():
                if known == sid:
                    return tid
        try:
            s = yield ("run", (_api.get_session(sid),), {})
        except NotFound:
            return None
        tid = s.metadata.get("langgraph_thread_id")
        if not isinstance(tid, str) or thread_tag(tid) not in s.tags:
            return None
        with self._lock:
            self._threads.setdefault(tid, sid)
        return tid

    # --------------------------------------------------------------------- removal

    def delete_thread(self, thread_id: str) -> Plan:
        self.forget(thread_id)
        sid = yield from self.session(thread_id, create=False)
        self.forget(thread_id)
        if sid is None:
            return None
        with contextlib.suppress(NotFound):
            yield ("run", (_api.delete_session(sid, recursive=True),), {})
        with self._lock:
            for k in [k for k in self._refs if k[0] == sid]:
                del self._refs[k]
        return None

    def copy_thread(self, source: str, target: str) -> Plan:
        src = yield from self.session(source, create=False)
        if src is None:
            return None
        existing = yield from self.find_thread(target)
        if existing is not None:
            raise ValueError(
                f"thread {target!r} already exists; delete it first (delete_thread) or copy to a new thread id"
            )
        s = yield ("run", (_api.merge([src], **_thread_session(target, copied_from=source)),), {})
        with self._lock:
            self._threads[target] = s.id
        return None

    def delete_docs(self, sid: str, docs: list[Artifact]) -> Plan:
        """Deletes checkpoint documents and their writes."""
        for rec in docs:
            ns = str(rec.metadata.get("checkpoint_ns", ""))
            cid = str(rec.metadata.get("checkpoint_id", ""))
            writes = yield from self.query_all(
                ArtifactQuery(session=sid, kind=KIND_WRITES, name=f"lg/w/{_ns(ns)}/{_q(cid)}/*")
            )
            for a in [*writes, rec]:
                with contextlib.suppress(NotFound):
                    yield ("run", (_api.delete_artifact(a.id),), {})

    def collect_values(self, sid: str) -> Plan:
        """Deletes value artifacts that no remaining checkpoint of the session references."""
        docs = yield from self.query_all(ArtifactQuery(session=sid, kind=KIND_CHECKPOINT))
        keep_names: set[str] = set()
        keep_hashes: set[tuple[str, str]] = set()
        for rec in docs:
            loaded = yield from self.load_doc(rec)
            for ref in loaded.doc.get("channels", {}).values():
                if "name" in ref and "h" in ref:
                    keep_hashes.add((ref["name"], ref["h"]))
                elif "name" in ref:
                    keep_names.add(ref["name"])
        values = yield from self.query_all(ArtifactQuery(session=sid, kind=KIND_VALUE))
        for a in values:
            if a.name in keep_names or (a.name, a.hash) in keep_hashes:
                continue
            with contextlib.suppress(NotFound):
                yield ("run", (_api.delete_artifact(a.id),), {})
        with self._lock:
            for k in [k for k in self._refs if k[0] == sid]:
                del self._refs[k]

    def prune(self, thread_ids: Sequence[str], strategy: str) -> Plan:
        if strategy not in ("keep_latest", "delete"):
            raise ValueError(f"unknown prune strategy {strategy!r}: use 'keep_latest' or 'delete'")
        for tid in thread_ids:
            if strategy == "delete":
                yield from self.delete_thread(tid)
                continue
            sid = yield from self.session(tid, create=False)
            if sid is None:
                continue
            docs = yield from self.query_all(ArtifactQuery(session=sid, kind=KIND_CHECKPOINT))
            latest: dict[str, Artifact] = {}
            for rec in docs:
                ns = str(rec.metadata.get("checkpoint_ns", ""))
                cid = str(rec.metadata.get("checkpoint_id", ""))
                cur = latest.get(ns)
                if cur is None or cid > str(cur.metadata.get("checkpoint_id", "")):
                    latest[ns] = rec
            keep = {a.id for a in latest.values()}
            yield from self.delete_docs(sid, [a for a in docs if a.id not in keep])
            yield from self.collect_values(sid)

    def delete_for_runs(self, run_ids: Sequence[str]) -> Plan:
        touched: set[str] = set()
        for run_id in run_ids:
            docs = yield from self.query_all(ArtifactQuery(kind=KIND_CHECKPOINT, tags=(run_tag(str(run_id)),)))
            by_session: dict[str, list[Artifact]] = {}
            for rec in docs:
                md = rec.metadata.get("langgraph_metadata")
                if isinstance(md, dict) and md.get("run_id") not in (None, run_id):
                    continue
                by_session.setdefault(rec.session_id, []).append(rec)
            for sid, recs in by_session.items():
                yield from self.delete_docs(sid, recs)
                touched.add(sid)
        for sid in touched:
            yield from self.collect_values(sid)


_MISSING = object()


def _next_version(current: str | int | float | None) -> str:
    if current is None:
        v = 0
    elif isinstance(current, (int, float)):
        v = int(current)
    else:
        v = int(str(current).split(".")[0])
    return f"{v + 1:032}.{random.random():016}"


def _default_serde(serde: SerializerProtocol | None) -> SerializerProtocol:
    if serde is None:
        return JsonPlusSerializer(pickle_fallback=False)
    if isinstance(serde, JsonPlusSerializer) and serde.pickle_fallback:
        raise ValueError(
            "a JsonPlusSerializer with pickle_fallback=True would unpickle stored data; "
            "pass JsonPlusSerializer(pickle_fallback=False) or no serde"
        )
    return serde


def _forget_on_first_miss(e: NotFound, attempt: int, core: _Core) -> bool:
    """The drivers' retry rule: a plan that failed on its first attempt because a cached
    thread session was deleted by someone else is run once more with the cache cleared."""
    if attempt == 0 and e.code == "session_not_found":
        with core._lock:
            core._threads.clear()
        return True
    return False


class _SyncDriver:
    """Runs plans with a sync client. A plan that fails because a cached thread session was
    deleted by someone else is run once more with the cache cleared.
    """

    def __init__(self, client: Client) -> None:
        self.client = client

    def op(self, op: Op) -> Any:
        name, args, kwargs = op
        if name == "run":
            return self.client.run(*args)
        if name == "put":
            return self.client.put(*args, **kwargs)
        if name == "read":
            return self.client.read(*args)
        raise AssertionError(f"unknown operation {name}")

    def drive(self, make: Any, core: _Core) -> Any:
        for attempt in range(2):
            gen: Plan = make()
            try:
                op = next(gen)
                while True:
                    try:
                        result = self.op(op)
                    except Exception as e:  # noqa: BLE001 - handed to the plan, which may catch it
                        op = gen.throw(e)
                    else:
                        op = gen.send(result)
            except StopIteration as stop:
                return stop.value
            except NotFound as e:
                if _forget_on_first_miss(e, attempt, core):
                    continue
                raise
        raise AssertionError("unreachable")


class _AsyncDriver:
    """Runs plans with an async client (same retry rule as :class:`_SyncDriver`)."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    async def op(self, op: Op) -> Any:
        name, args, kwargs = op
        if name == "run":
            return await self.client.run(*args)
        if name == "put":
            return await self.client.put(*args, **kwargs)
        if name == "read":
            return await self.client.read(*args)
        raise AssertionError(f"unknown operation {name}")

    async def drive(self, make: Any, core: _Core) -> Any:
        for attempt in range(2):
            gen: Plan = make()
            try:
                op = next(gen)
                while True:
                    try:
                        result = await self.op(op)
                    except Exception as e:  # noqa: BLE001 - handed to the plan
                        op = gen.throw(e)
                    else:
                        op = gen.send(result)
            except StopIteration as stop:
                return stop.value
            except NotFound as e:
                if _forget_on_first_miss(e, attempt, core):
                    continue
                raise
        raise AssertionError("unreachable")


class _Base(BaseCheckpointSaver[str]):
    """What the sync and async savers share: configuration, the plans, the versions."""

    _core: _Core

    def __init__(
        self,
        *,
        serde: SerializerProtocol | None,
        inline_max: int,
        cache_bytes: int,
    ) -> None:
        serde = _default_serde(serde)
        super().__init__(serde=serde)
        self._core = _Core(self.serde, inline_max, cache_bytes)

    def get_next_version(self, current: str | None, channel: None) -> str:  # type: ignore[override]
        """Versions ``<counter>.<random>``, so two branches of a thread never reuse a version."""
        return _next_version(current)

    def _run(self, make: Any) -> Any:
        """Runs a plan with the sync client (each saver has one)."""
        raise NotImplementedError

    # The sync methods, the same for both savers (AsyncCairnSaver runs them on its sync client).

    def thread_session(self, thread_id: str) -> Session | None:
        """The Cairn session that holds a thread's checkpoints (None before its first one)."""
        return self._run(lambda: self._core.find_thread(thread_id))

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint named by ``config`` (the thread's latest without a checkpoint id)."""
        return self._run(lambda: self._core.get_tuple(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints newest first, filtered by thread, namespace, metadata and ``before``."""
        cursor: str | None = None
        remaining = limit
        while remaining is None or remaining > 0:
            items, cursor = self._run(lambda r=remaining, c=cursor: self._core.list_page(config, filter, before, r, c))
            yield from items
            if remaining is not None:
                remaining -= len(items)
            if cursor is None:
                return

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Stores a checkpoint; only channels in ``new_versions`` are written."""
        return self._run(lambda: self._core.put(config, checkpoint, metadata, new_versions))

    def put_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        """Stores a task's pending writes for a checkpoint."""
        self._run(lambda: self._core.put_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        """Deletes the thread's session: every checkpoint, write and value."""
        self._run(lambda: self._core.delete_thread(thread_id))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copies a thread as a Cairn merge into a new session: no content is copied."""
        self._run(lambda: self._core.copy_thread(source_thread_id, target_thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Deletes the checkpoints (and writes) that these runs made, in any thread."""
        self._run(lambda: self._core.delete_for_runs(run_ids))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """``keep_latest``: keep each namespace's newest checkpoint; ``delete``: delete all."""
        self._run(lambda: self._core.prune(thread_ids, strategy))


class CairnSaver(_Base):
    """A sync LangGraph checkpointer on a Cairn server (async methods run it in a thread).

    >>> from cairn_store.langgraph import CairnSaver              # doctest: +SKIP
    >>> with CairnSaver.local() as saver:                          # starts `cairn serve`
    ...     graph = builder.compile(checkpointer=saver)
    ...     graph.invoke(inputs, {"configurable": {"thread_id": "t1"}})
    """

    def __init__(
        self,
        client: Client | None = None,
        *,
        url: str | None = None,
        token: str | None = None,
        serde: SerializerProtocol | None = None,
        inline_max: int = INLINE_MAX,
        cache_bytes: int = CACHE_BYTES,
    ) -> None:
        super().__init__(serde=serde, inline_max=inline_max, cache_bytes=cache_bytes)
        self.client = client or Client(url, token=token)
        self._driver = _SyncDriver(self.client)

    @classmethod
    @contextmanager
    def from_url(cls, url: str, *, token: str | None = None, **kwargs: Any) -> Iterator[CairnSaver]:
        """A saver on the server at ``url``, closed on exit."""
        with Client(url, token=token) as c:
            yield cls(c, **kwargs)

    @classmethod
    @contextmanager
    def local(cls, data: str | None = None, *, binary: str | None = None, **kwargs: Any) -> Iterator[CairnSaver]:
        """Starts ``cairn serve`` on a free port (store in ``data``, or a temporary folder) and
        yields a saver on it; stops the server on exit.
        """
        from .server import LocalServer

        with LocalServer(data, binary=binary) as srv, srv.client() as c:
            yield cls(c, **kwargs)

    def _run(self, make: Any) -> Any:
        return self._driver.drive(make, self._core)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """Async :meth:`get_tuple` (runs in a worker thread)."""
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Async :meth:`list`."""
        items = await asyncio.to_thread(lambda: list(self.list(config, filter=filter, before=before, limit=limit)))
        for t in items:
            yield t

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Async :meth:`put`."""
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        """Async :meth:`put_writes`."""
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        """Async :meth:`delete_thread`."""
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Async :meth:`copy_thread`."""
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Async :meth:`delete_for_runs`."""
        await asyncio.to_thread(self.delete_for_runs, run_ids)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Async :meth:`prune`."""
        await asyncio.to_thread(self.prune, thread_ids, strategy=strategy)


class AsyncCairnSaver(_Base):
    """An async LangGraph checkpointer on a Cairn server, for ``ainvoke``/``astream``. Its sync
    methods (``graph.get_state`` and friends) use a sync client on the same server.

    >>> async with AsyncCairnSaver.from_url("http://127.0.0.1:8080") as saver:  # doctest: +SKIP
    ...     graph = builder.compile(checkpointer=saver)
    ...     await graph.ainvoke(inputs, {"configurable": {"thread_id": "t1"}})
    """

    def __init__(
        self,
        client: AsyncClient | None = None,
        *,
        url: str | None = None,
        token: str | None = None,
        sync_client: Client | None = None,
        serde: SerializerProtocol | None = None,
        inline_max: int = INLINE_MAX,
        cache_bytes: int = CACHE_BYTES,
    ) -> None:
        super().__init__(serde=serde, inline_max=inline_max, cache_bytes=cache_bytes)
        self.client = client or AsyncClient(url, token=token)
        self.sync_client = sync_client or Client(self.client.base_url, token=self.client.token)
        self._adriver = _AsyncDriver(self.client)
        self._sdriver = _SyncDriver(self.sync_client)

    @classmethod
    @asynccontextmanager
    async def from_url(cls, url: str, *, token: str | None = None, **kwargs: Any) -> AsyncIterator[AsyncCairnSaver]:
        """A saver on the server at ``url``, closed on exit."""
        async with AsyncClient(url, token=token) as c:
            saver = cls(c, token=token, **kwargs)
            try:
                yield saver
            finally:
                saver.sync_client.close()

    async def _arun(self, make: Any) -> Any:
        return await self._adriver.drive(make, self._core)

    def _run(self, make: Any) -> Any:
        return self._sdriver.drive(make, self._core)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint named by ``config`` (the thread's latest without a checkpoint id)."""
        return await self._arun(lambda: self._core.get_tuple(config))

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Checkpoints newest first, filtered by thread, namespace, metadata and ``before``."""
        cursor: str | None = None
        remaining = limit
        while remaining is None or remaining > 0:
            items, cursor = await self._arun(
                lambda r=remaining, c=cursor: self._core.list_page(config, filter, before, r, c)
            )
            for t in items:
                yield t
            if remaining is not None:
                remaining -= len(items)
            if cursor is None:
                return

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Stores a checkpoint; only channels in ``new_versions`` are written."""
        return await self._arun(lambda: self._core.put(config, checkpoint, metadata, new_versions))

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        """Stores a task's pending writes for a checkpoint."""
        await self._arun(lambda: self._core.put_writes(config, writes, task_id, task_path))

    async def adelete_thread(self, thread_id: str) -> None:
        """Deletes the thread's session."""
        await self._arun(lambda: self._core.delete_thread(thread_id))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copies a thread as a Cairn merge into a new session: no content is copied."""
        await self._arun(lambda: self._core.copy_thread(source_thread_id, target_thread_id))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Deletes the checkpoints (and writes) that these runs made."""
        await self._arun(lambda: self._core.delete_for_runs(run_ids))

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """``keep_latest`` or ``delete``; see :meth:`CairnSaver.prune`."""
        await self._arun(lambda: self._core.prune(thread_ids, strategy))
