"""The sync :class:`Client` and the async :class:`AsyncClient`. Both run the route definitions
of ``_api`` and share the models, errors and content handling; only the I/O differs.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import httpx

from . import _api
from ._api import HASH_HEADER, Call, seg
from ._content import CHUNK, Prepared, Verifier, prepare
from ._errors import CairnError, ProtocolError, error_from_response
from ._models import Artifact, ArtifactQuery, Event, Page, Session

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)


def _headers(token: str | None) -> dict[str, str]:
    h = {"User-Agent": "cairn-store-python"}
    if token:
        h["Authorization"] = f"Bearer {token}"
    return h


def _base_url(url: str | None) -> str:
    url = url or os.environ.get("CAIRN_SERVER")
    if not url:
        raise ValueError("no server URL: pass base_url=... or set CAIRN_SERVER")
    return url.rstrip("/")


def _check(resp: httpx.Response, ok: tuple[int, ...]) -> None:
    if resp.status_code in ok:
        return
    try:
        b = resp.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        b = None
    raise error_from_response(resp.status_code, b)


def _sync(fn: Callable[P, Call[T]]) -> Callable[Concatenate[Client, P], T]:
    @functools.wraps(fn)
    def method(self: Client, *args: P.args, **kwargs: P.kwargs) -> T:
        return self.run(fn(*args, **kwargs))

    return method


def _async(fn: Callable[P, Call[T]]) -> Callable[Concatenate[AsyncClient, P], Any]:
    @functools.wraps(fn)
    async def method(self: AsyncClient, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self.run(fn(*args, **kwargs))

    return method


def _put_call(
    session_id: str,
    name: str,
    prep: Prepared,
    kind: str | None,
    tags: Sequence[str],
    metadata: Mapping[str, Any] | None,
    mime_type: str | None,
) -> tuple[str, list[tuple[str, str]], dict[str, str]]:
    path = f"/v1/sessions/{seg(session_id)}/artifacts/{seg(name)}"
    headers = {HASH_HEADER: prep.hash, "Content-Type": mime_type or "application/octet-stream"}
    return path, _api.put_params(kind, tags, metadata, mime_type), headers


def _range_header(start: int, end: int | None) -> dict[str, str]:
    if start < 0 or (end is not None and end < start):
        raise ValueError(f"bad byte range {start}-{end}: need 0 <= start <= end")
    return {"Range": f"bytes={start}-{'' if end is None else end}"}


def _range_body(resp: httpx.Response, start: int, end: int | None) -> bytes:
    _check(resp, (206, 200))
    if resp.status_code == 200:  # the server ignored the range: cut it here
        return resp.content[start : None if end is None else end + 1]
    return resp.content


def _import_params(new_ids: bool, drop_keys: bool, parent: str | None) -> list[tuple[str, str]]:
    params = [("new_ids", "true")] if new_ids else []
    if drop_keys:
        params.append(("drop_keys", "true"))
    if parent is not None:
        params.append(("parent", parent))
    return params


def _stream_headers(last_event_id: str | None) -> dict[str, str]:
    return {"Last-Event-ID": last_event_id} if last_event_id is not None else {}


class _Sink:
    """Where a download goes: a temp file beside ``path``, fsynced and renamed into place only
    when the whole body arrived (and, for content, was verified); removed otherwise. Shared by
    the sync and async clients, which differ only in how chunks arrive."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.dest = Path(path)
        self.tmp = self.dest.with_name(self.dest.name + ".cairn-partial")
        self.file = open(self.tmp, "wb")  # noqa: SIM115 - closed by finish/abort
        self.n = 0

    def write(self, b: bytes) -> None:
        self.file.write(b)
        self.n += len(b)

    def finish(self) -> int:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp, self.dest)
        return self.n

    def abort(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)


async def _afile_chunks(path: str | os.PathLike[str]) -> AsyncIterator[bytes]:
    """A file's bytes in chunks, read in a worker thread so the event loop is not blocked."""
    f = await asyncio.to_thread(open, path, "rb")
    try:
        while True:
            b = await asyncio.to_thread(f.read, CHUNK)
            if not b:
                return
            yield b
    finally:
        f.close()


class _SseParser:
    """Turns Server-Sent Events lines into events (``id:``, ``event:`` and ``data:`` lines up
    to a blank line; ``:`` comments such as keep-alives are skipped). ``last_id`` is the id of
    the last event returned, which resumes the stream after it; ``missed`` is set when the
    server says this client fell behind and events were dropped from the live stream."""

    def __init__(self, last_id: str | None) -> None:
        self._data: list[str] = []
        self._type = ""
        self._id: str | None = None
        self.last_id = last_id
        self.missed = False

    def feed(self, line: str) -> Event | None:
        """Takes one line; returns an event when the line ends one."""
        if line == "":
            data, kind, eid = self._data, self._type, self._id
            self._data, self._type, self._id = [], "", None
            if not data:
                return None
            if kind == "missed":
                self.missed = True
                return None
            try:
                ev = Event.from_json(json.loads("\n".join(data)))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise ProtocolError(f"the event stream sent an event that is not a Cairn event: {e}") from e
            if eid is not None:
                self.last_id = eid
            return ev
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._type = value
        elif field == "id":
            self._id = value
        return None


class Client:
    """A synchronous client of a Cairn server.

    >>> with Client("http://127.0.0.1:8080") as c:              # doctest: +SKIP
    ...     s = c.create_session(name="demo")
    ...     a = c.put(s.id, "notes.txt", b"hello")
    ...     assert c.read(a.id) == b"hello"

    ``base_url`` defaults to ``$CAIRN_SERVER`` and ``token`` to ``$CAIRN_TOKEN``.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        token: str | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        http: httpx.Client | None = None,
    ) -> None:
        self.base_url = _base_url(base_url)
        tok = token if token is not None else os.environ.get("CAIRN_TOKEN")
        self.token = tok
        self._http = http or httpx.Client(base_url=self.base_url, headers=_headers(tok), timeout=timeout)

    def close(self) -> None:
        """Closes the connection pool."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, call: Call[T]) -> T:
        """Sends one :class:`~cairn_store._api.Call` and parses the answer (or raises)."""
        try:
            resp = self._http.request(
                call.method, call.path, params=call.params or None, json=call.json, headers=call.headers
            )
        except httpx.TransportError as e:
            raise CairnError(f"{call.method} {call.path}: {e}", code="transport") from e
        _check(resp, call.ok)
        return call.parse(resp)

    # Every plain route, written once in _api.
    create_session = _sync(_api.create_session)
    session_by_key = _sync(_api.session_by_key)
    find_session = _sync(_api.find_session)
    get_session = _sync(_api.get_session)
    list_sessions_page = _sync(_api.list_sessions_page)
    update_session = _sync(_api.update_session)
    delete_session = _sync(_api.delete_session)
    session_tree = _sync(_api.session_tree)
    children = _sync(_api.children)
    transition = _sync(_api.transition)
    session_stats = _sync(_api.session_stats)
    events_page = _sync(_api.events_page)
    append_event = _sync(_api.append_event)
    list_artifacts_page = _sync(_api.list_artifacts_page)
    artifact_by_name = _sync(_api.artifact_by_name)
    versions = _sync(_api.versions)
    get_artifact = _sync(_api.get_artifact)
    delete_artifact = _sync(_api.delete_artifact)
    query_page = _sync(_api.query_page)
    missing_blobs = _sync(_api.missing_blobs)
    create_checkpoint = _sync(_api.create_checkpoint)
    checkpoints_page = _sync(_api.checkpoints_page)
    get_checkpoint = _sync(_api.get_checkpoint)
    restore_checkpoint = _sync(_api.restore_checkpoint)
    delete_checkpoint = _sync(_api.delete_checkpoint)
    fork = _sync(_api.fork)
    copy = _sync(_api.copy)
    merge = _sync(_api.merge)
    lineage = _sync(_api.lineage)
    timeline_page = _sync(_api.timeline_page)
    say = _sync(_api.say)
    history = _sync(_api.history)
    stats = _sync(_api.stats)
    gc = _sync(_api.gc)
    verify = _sync(_api.verify)
    repair = _sync(_api.repair)
    cleanup = _sync(_api.cleanup)
    create_webhook = _sync(_api.create_webhook)
    list_webhooks = _sync(_api.list_webhooks)
    delete_webhook = _sync(_api.delete_webhook)
    read_part = _sync(_api.read_part)
    preview = _sync(_api.preview)
    memo_lookup = _sync(_api.memo_lookup)
    memo_store = _sync(_api.memo_store)
    memo_forget = _sync(_api.memo_forget)
    memo_stats = _sync(_api.memo_stats)
    memo_ttl = _sync(_api.memo_ttl)
    set_memo_ttl = _sync(_api.set_memo_ttl)
    health = _sync(_api.health)
    ready = _sync(_api.ready)
    metrics = _sync(_api.metrics)
    openapi = _sync(_api.openapi)

    # ----------------------------------------------------------------- iterators over pages

    def iter_sessions(self, *, page_size: int = 1000, **filters: Any) -> Iterator[Session]:
        """Every session matching ``filters`` (see ``list_sessions_page``), page by page."""
        cursor: str | None = None
        while True:
            page = self.list_sessions_page(cursor=cursor, limit=page_size, **filters)
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def query(self, q: ArtifactQuery | None = None, *, page_size: int = 1000, **filters: Any) -> Iterator[Artifact]:
        """Every artifact matching the query, following cursors (``filters`` build an
        :class:`ArtifactQuery` when ``q`` is not given).
        """
        q = q or ArtifactQuery(**filters)
        cursor: str | None = None
        while True:
            page = self.query_page(q, cursor=cursor, limit=page_size)
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def events(self, session_id: str, *, after: int = 0, page_size: int = 1000) -> Iterator[Event]:
        """The session's whole event log from seq ``after``, page by page."""
        while True:
            page = self.events_page(session_id, after=after, limit=page_size)
            yield from page.items
            if not page.items or page.next_cursor is None:
                return
            after = page.items[-1].seq

    def stream_events(self, session_id: str, *, last_event_id: int | str | None = None) -> Iterator[Event]:
        """Live events (Server-Sent Events) of the session, for as long as the caller iterates.
        ``last_event_id`` (a seq, or ``SESSION:SEQ``) resumes after that event: the server
        replays the stored events after it, then continues live. If this client falls so far
        behind that the server drops events from the live stream, the iterator reconnects
        after the last event it delivered, so the dropped events are replayed from the log
        and none is lost.
        """
        parser = _SseParser(None if last_event_id is None else str(last_event_id))
        while True:
            parser.missed = False
            with self._http.stream(
                "GET",
                f"/v1/sessions/{seg(session_id)}/events/stream",
                headers=_stream_headers(parser.last_id),
                timeout=httpx.Timeout(None, connect=10.0),
            ) as resp:
                if resp.status_code != 200:
                    resp.read()
                    _check(resp, (200,))
                for line in resp.iter_lines():
                    ev = parser.feed(line)
                    if ev is not None:
                        yield ev
                    elif parser.missed:
                        break
            if not parser.missed:
                return

    # -------------------------------------------------------------------------- content

    def put(
        self,
        session_id: str,
        name: str,
        source: Any,
        *,
        kind: str = "agent_output",
        tags: Sequence[str] = (),
        metadata: Mapping[str, Any] | None = None,
        mime_type: str | None = None,
        dedup: bool = True,
        present: bool | None = None,
    ) -> Artifact:
        """Stores a new version of ``name`` from bytes, a file path, a binary file or an
        iterator of bytes, streamed. The BLAKE3 hash is computed here and declared to the
        server (which refuses a mismatch); with ``dedup`` the server is first asked whether it
        already holds the content, and if so no body is sent at all. ``present`` skips that
        question when the caller already asked (``missing_blobs`` for a batch).
        """
        prep = prepare(source)
        try:
            send = True
            if present is not None:
                send = not present
            elif dedup and prep.size > 0:
                send = prep.hash in self.missing_blobs([prep.hash])
            path, params, headers = _put_call(session_id, name, prep, kind, tags, metadata, mime_type)
            content: Any = prep.chunks() if send else b""
            if send:
                headers["Content-Length"] = str(prep.size)
            try:
                resp = self._http.put(path, params=params, headers=headers, content=content)
            except httpx.TransportError as e:
                raise CairnError(f"PUT {path}: {e}", code="transport") from e
            _check(resp, (200, 201))
            return Artifact.from_json(_api.body(resp))
        finally:
            prep.close()

    @contextmanager
    def open(self, artifact_id: str) -> Iterator[Iterator[bytes]]:
        """Streams an artifact's content in chunks; the last chunk is followed by a hash check
        that raises :class:`IntegrityError` if the bytes are not the stored content.
        """
        with self._http.stream("GET", f"/v1/artifacts/{seg(artifact_id)}/content") as resp:
            if resp.status_code != 200:
                resp.read()
                _check(resp, (200,))
            v = Verifier(_etag(resp), f"artifact {artifact_id}")

            def chunks() -> Iterator[bytes]:
                for b in resp.iter_bytes(CHUNK):
                    v.update(b)
                    yield b
                v.check()

            yield chunks()

    def read(self, artifact_id: str) -> bytes:
        """An artifact's whole content, verified against its hash."""
        with self.open(artifact_id) as chunks:
            return b"".join(chunks)

    def download(self, artifact_id: str, path: str | os.PathLike[str]) -> int:
        """Writes an artifact's content to ``path`` (via a temp file, renamed once verified);
        returns the number of bytes.
        """
        sink = _Sink(path)
        try:
            with self.open(artifact_id) as chunks:
                for b in chunks:
                    sink.write(b)
            return sink.finish()
        except BaseException:
            sink.abort()
            raise

    def read_range(self, artifact_id: str, start: int, end: int | None = None) -> bytes:
        """Bytes ``start`` to ``end`` (inclusive; to the end when None) of an artifact. The
        server verifies the whole content before it answers.
        """
        resp = self._http.get(f"/v1/artifacts/{seg(artifact_id)}/content", headers=_range_header(start, end))
        return _range_body(resp, start, end)

    # -------------------------------------------------------------------------- bundles

    def export_bundle(self, session_id: str, path: str | os.PathLike[str], *, subtree: bool = False) -> int:
        """Streams the session's bundle (``cairn export`` format) into ``path``; returns bytes."""
        params = [("subtree", "true")] if subtree else []
        with self._http.stream("GET", f"/v1/sessions/{seg(session_id)}/export", params=params) as resp:
            if resp.status_code != 200:
                resp.read()
                _check(resp, (200,))
            sink = _Sink(path)
            try:
                for b in resp.iter_bytes(CHUNK):
                    sink.write(b)
                return sink.finish()
            except BaseException:
                sink.abort()
                raise

    def import_bundle(
        self,
        path: str | os.PathLike[str],
        *,
        new_ids: bool = False,
        drop_keys: bool = False,
        parent: str | None = None,
    ) -> dict[str, Any]:
        """Streams a bundle file to the server; returns the import report. ``new_ids`` gives
        the imported sessions and artifacts new ids (to import beside the originals),
        ``drop_keys`` drops their unique keys, ``parent`` puts the imported roots under it."""
        params = _import_params(new_ids, drop_keys, parent)
        with open(path, "rb") as f:
            resp = self._http.post("/v1/import", params=params, content=iter(lambda: f.read(CHUNK), b""))
        _check(resp, (200, 201))
        return dict(_api.body(resp))


class AsyncClient:
    """The asynchronous twin of :class:`Client`: the same methods, awaited."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        token: str | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = _base_url(base_url)
        tok = token if token is not None else os.environ.get("CAIRN_TOKEN")
        self.token = tok
        self._http = http or httpx.AsyncClient(base_url=self.base_url, headers=_headers(tok), timeout=timeout)

    async def aclose(self) -> None:
        """Closes the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def run(self, call: Call[T]) -> T:
        """Sends one call and parses the answer (or raises)."""
        try:
            resp = await self._http.request(
                call.method, call.path, params=call.params or None, json=call.json, headers=call.headers
            )
        except httpx.TransportError as e:
            raise CairnError(f"{call.method} {call.path}: {e}", code="transport") from e
        _check(resp, call.ok)
        return call.parse(resp)

    create_session = _async(_api.create_session)
    session_by_key = _async(_api.session_by_key)
    find_session = _async(_api.find_session)
    get_session = _async(_api.get_session)
    list_sessions_page = _async(_api.list_sessions_page)
    update_session = _async(_api.update_session)
    delete_session = _async(_api.delete_session)
    session_tree = _async(_api.session_tree)
    children = _async(_api.children)
    transition = _async(_api.transition)
    session_stats = _async(_api.session_stats)
    events_page = _async(_api.events_page)
    append_event = _async(_api.append_event)
    list_artifacts_page = _async(_api.list_artifacts_page)
    artifact_by_name = _async(_api.artifact_by_name)
    versions = _async(_api.versions)
    get_artifact = _async(_api.get_artifact)
    delete_artifact = _async(_api.delete_artifact)
    query_page = _async(_api.query_page)
    missing_blobs = _async(_api.missing_blobs)
    create_checkpoint = _async(_api.create_checkpoint)
    checkpoints_page = _async(_api.checkpoints_page)
    get_checkpoint = _async(_api.get_checkpoint)
    restore_checkpoint = _async(_api.restore_checkpoint)
    delete_checkpoint = _async(_api.delete_checkpoint)
    fork = _async(_api.fork)
    copy = _async(_api.copy)
    merge = _async(_api.merge)
    lineage = _async(_api.lineage)
    timeline_page = _async(_api.timeline_page)
    say = _async(_api.say)
    history = _async(_api.history)
    stats = _async(_api.stats)
    gc = _async(_api.gc)
    verify = _async(_api.verify)
    repair = _async(_api.repair)
    cleanup = _async(_api.cleanup)
    create_webhook = _async(_api.create_webhook)
    list_webhooks = _async(_api.list_webhooks)
    delete_webhook = _async(_api.delete_webhook)
    read_part = _async(_api.read_part)
    preview = _async(_api.preview)
    memo_lookup = _async(_api.memo_lookup)
    memo_store = _async(_api.memo_store)
    memo_forget = _async(_api.memo_forget)
    memo_stats = _async(_api.memo_stats)
    memo_ttl = _async(_api.memo_ttl)
    set_memo_ttl = _async(_api.set_memo_ttl)
    health = _async(_api.health)
    ready = _async(_api.ready)
    metrics = _async(_api.metrics)
    openapi = _async(_api.openapi)

    async def iter_sessions(self, *, page_size: int = 1000, **filters: Any) -> AsyncIterator[Session]:
        """Every session matching ``filters``, page by page."""
        cursor: str | None = None
        while True:
            page: Page[Session] = await self.list_sessions_page(cursor=cursor, limit=page_size, **filters)
            for s in page.items:
                yield s
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def query(
        self, q: ArtifactQuery | None = None, *, page_size: int = 1000, **filters: Any
    ) -> AsyncIterator[Artifact]:
        """Every artifact matching the query, following cursors."""
        q = q or ArtifactQuery(**filters)
        cursor: str | None = None
        while True:
            page: Page[Artifact] = await self.query_page(q, cursor=cursor, limit=page_size)
            for a in page.items:
                yield a
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def events(self, session_id: str, *, after: int = 0, page_size: int = 1000) -> AsyncIterator[Event]:
        """The session's whole event log from seq ``after``."""
        while True:
            page: Page[Event] = await self.events_page(session_id, after=after, limit=page_size)
            for e in page.items:
                yield e
            if not page.items or page.next_cursor is None:
                return
            after = page.items[-1].seq

    async def stream_events(self, session_id: str, *, last_event_id: int | str | None = None) -> AsyncIterator[Event]:
        """Live events (Server-Sent Events) of the session; see :meth:`Client.stream_events`."""
        parser = _SseParser(None if last_event_id is None else str(last_event_id))
        while True:
            parser.missed = False
            async with self._http.stream(
                "GET",
                f"/v1/sessions/{seg(session_id)}/events/stream",
                headers=_stream_headers(parser.last_id),
                timeout=httpx.Timeout(None, connect=10.0),
            ) as resp:
                if resp.status_code != 200:
                    await resp.aread()
                    _check(resp, (200,))
                async for line in resp.aiter_lines():
                    ev = parser.feed(line)
                    if ev is not None:
                        yield ev
                    elif parser.missed:
                        break
            if not parser.missed:
                return

    async def put(
        self,
        session_id: str,
        name: str,
        source: Any,
        *,
        kind: str = "agent_output",
        tags: Sequence[str] = (),
        metadata: Mapping[str, Any] | None = None,
        mime_type: str | None = None,
        dedup: bool = True,
        present: bool | None = None,
    ) -> Artifact:
        """Stores a new version of ``name``; see :meth:`Client.put`."""
        prep = prepare(source)
        try:
            send = True
            if present is not None:
                send = not present
            elif dedup and prep.size > 0:
                send = prep.hash in await self.missing_blobs([prep.hash])
            path, params, headers = _put_call(session_id, name, prep, kind, tags, metadata, mime_type)
            content: Any = prep.achunks() if send else b""
            if send:
                headers["Content-Length"] = str(prep.size)
            try:
                resp = await self._http.put(path, params=params, headers=headers, content=content)
            except httpx.TransportError as e:
                raise CairnError(f"PUT {path}: {e}", code="transport") from e
            _check(resp, (200, 201))
            return Artifact.from_json(_api.body(resp))
        finally:
            prep.close()

    @asynccontextmanager
    async def open(self, artifact_id: str) -> AsyncIterator[AsyncIterator[bytes]]:
        """Streams an artifact's content in chunks, verified at the end."""
        async with self._http.stream("GET", f"/v1/artifacts/{seg(artifact_id)}/content") as resp:
            if resp.status_code != 200:
                await resp.aread()
                _check(resp, (200,))
            v = Verifier(_etag(resp), f"artifact {artifact_id}")

            async def chunks() -> AsyncIterator[bytes]:
                async for b in resp.aiter_bytes(CHUNK):
                    v.update(b)
                    yield b
                v.check()

            yield chunks()

    async def read(self, artifact_id: str) -> bytes:
        """An artifact's whole content, verified against its hash."""
        out = bytearray()
        async with self.open(artifact_id) as chunks:
            async for b in chunks:
                out += b
        return bytes(out)

    async def read_range(self, artifact_id: str, start: int, end: int | None = None) -> bytes:
        """Bytes ``start`` to ``end`` (inclusive) of an artifact."""
        resp = await self._http.get(f"/v1/artifacts/{seg(artifact_id)}/content", headers=_range_header(start, end))
        return _range_body(resp, start, end)

    async def download(self, artifact_id: str, path: str | os.PathLike[str]) -> int:
        """Writes an artifact's content to ``path`` (via a temp file, renamed once verified);
        returns the number of bytes. See :meth:`Client.download`."""
        sink = await asyncio.to_thread(_Sink, path)
        try:
            async with self.open(artifact_id) as chunks:
                async for b in chunks:
                    await asyncio.to_thread(sink.write, b)
            return await asyncio.to_thread(sink.finish)
        except BaseException:
            sink.abort()
            raise

    async def export_bundle(self, session_id: str, path: str | os.PathLike[str], *, subtree: bool = False) -> int:
        """Streams the session's bundle into ``path``; returns bytes. See :meth:`Client.export_bundle`."""
        params = [("subtree", "true")] if subtree else []
        async with self._http.stream("GET", f"/v1/sessions/{seg(session_id)}/export", params=params) as resp:
            if resp.status_code != 200:
                await resp.aread()
                _check(resp, (200,))
            sink = await asyncio.to_thread(_Sink, path)
            try:
                async for b in resp.aiter_bytes(CHUNK):
                    await asyncio.to_thread(sink.write, b)
                return await asyncio.to_thread(sink.finish)
            except BaseException:
                sink.abort()
                raise

    async def import_bundle(
        self,
        path: str | os.PathLike[str],
        *,
        new_ids: bool = False,
        drop_keys: bool = False,
        parent: str | None = None,
    ) -> dict[str, Any]:
        """Streams a bundle file to the server; returns the import report. See
        :meth:`Client.import_bundle`."""
        params = _import_params(new_ids, drop_keys, parent)
        resp = await self._http.post("/v1/import", params=params, content=_afile_chunks(path))
        _check(resp, (200, 201))
        return dict(_api.body(resp))


def _etag(resp: httpx.Response) -> str:
    tag = resp.headers.get("etag")
    if not tag:
        raise ProtocolError("the server sent content without an ETag, so it cannot be verified")
    return tag
