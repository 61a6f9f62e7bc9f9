"""Google ADK services backed by a Cairn server: :class:`CairnArtifactService` (a
``BaseArtifactService``) and :class:`CairnSessionService` (a ``BaseSessionService``).

One-line swap::

    runner = Runner(agent=agent, app_name="app",
                    session_service=CairnSessionService("cairn://127.0.0.1:8080"),
                    artifact_service=CairnArtifactService("cairn://127.0.0.1:8080"))

For ``adk web`` / ``adk api_server``, put a ``services.yaml`` in the agents folder (ADK loads
it before it builds its services)::

    services:
      - {scheme: cairn, type: artifact, class: cairn_store.adk.CairnArtifactService}
      - {scheme: cairn, type: session, class: cairn_store.adk.CairnSessionService}

and start ``adk web --artifact_service_uri=cairn://HOST:PORT --session_service_uri=cairn://HOST:PORT``
(or call :func:`register` from a ``services.py``). ``cairn://TOKEN@HOST:PORT`` passes a bearer
token (else ``$CAIRN_TOKEN``); ``?tls=1`` talks HTTPS.

How ADK data maps onto Cairn:

- artifacts of one ADK session live in the Cairn session with key
  ``adk:artifacts:<app>/<user>/<session>``, ``user:`` artifacts in ``adk:artifacts:<app>/<user>``.
  An ADK filename is the Cairn artifact name and ADK version ``v`` is Cairn version ``v + 1``:
  versions are assigned by the server, so concurrent saves never collide. Content is stored
  once per distinct BLAKE3 hash (a re-saved image costs a record, not a copy);
- an ADK session is the Cairn session with key ``adk:session:<app>/<user>/<id>``; its session
  state lives in the Cairn session's metadata, ``app:`` state in the metadata of
  ``adk:app-state:<app>`` and ``user:`` state in ``adk:user-state:<app>/<user>`` (merged per key
  on the server, so sessions that change different keys never overwrite each other); ``temp:``
  state is never stored;
- each event is an artifact ``adk/e/<seq>`` (kind ``adk_event``, the event JSON as content and,
  when small, also in the metadata so that one query page returns many events). The sequence
  number is the session's revision: an append claims slot ``seq = revision + 1``, and the server
  gives version 1 of a name to exactly one writer. A writer that gets a later version was working
  on an outdated session; its event is deleted and it gets ADK's ``StaleSessionError``. Only a
  real conflict is refused, and nothing is merged silently.

The services run the synchronous client in a worker thread (``asyncio.to_thread``), so they work
from any event loop: ``Runner.run`` (which starts its own loop in a thread), ``adk web``, tests.

Importing ``cairn_store`` does not import ADK; importing this module does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast
from urllib.parse import parse_qs, quote, unquote, urlparse

from google.adk.artifacts import artifact_util
from google.adk.artifacts.base_artifact_service import ArtifactVersion, BaseArtifactService, ensure_part
from google.adk.errors.already_exists_error import AlreadyExistsError
from google.adk.errors.input_validation_error import InputValidationError
from google.adk.errors.session_not_found_error import SessionNotFoundError
from google.adk.events.event import Event
from google.adk.sessions import _session_util
from google.adk.sessions.base_session_service import BaseSessionService, GetSessionConfig, ListSessionsResponse
from google.adk.sessions.session import Session
from google.adk.sessions.state import State
from google.genai import types

from ._client import Client
from ._content import hash_bytes
from ._errors import Conflict, NotFound, SessionNotFound
from ._models import Artifact, ArtifactQuery

try:  # the error ADK's own persistent services raise for an outdated session object
    from google.adk.errors import StaleSessionError
except ImportError:  # pragma: no cover - older ADK
    StaleSessionError = ValueError  # type: ignore[misc,assignment]

__all__ = ["CairnArtifactService", "CairnSessionService", "StaleSessionError", "client_from_uri", "register"]

SCHEME = "cairn"
KIND_EVENT = "adk_event"
KIND_ARTIFACT = "adk_artifact"
EVENT_PREFIX = "adk/e/"
INLINE_EVENT_MAX = 32 << 10
"""Events whose JSON is at most this many bytes are also kept in the record's metadata, so one
query page returns them without a content read per event (the server caps metadata at 64 KiB)."""
PAGE = 500

T = TypeVar("T")


# ---------------------------------------------------------------------------------- plumbing


def client_from_uri(uri: str, *, token: str | None = None) -> tuple[Client, str]:
    """A :class:`Client` for ``cairn://[TOKEN@]HOST:PORT[?tls=1]`` (or a plain ``http(s)://``
    URL), and the ``cairn://HOST:PORT`` base that canonical URIs use.
    """
    p = urlparse(uri)
    if p.scheme in ("http", "https"):
        base = uri.rstrip("/")
        return Client(base, token=token), f"{SCHEME}://{p.netloc.rsplit('@', 1)[-1]}"
    if p.scheme != SCHEME or not p.hostname:
        raise ValueError(f"{uri!r} is not a Cairn URI: use cairn://HOST:PORT (or http://HOST:PORT)")
    tls = parse_qs(p.query).get("tls", ["0"])[0] in ("1", "true", "yes")
    host = p.hostname if ":" not in p.hostname else f"[{p.hostname}]"
    hostport = f"{host}:{p.port}" if p.port else host
    tok = token if token is not None else (unquote(p.username) if p.username else None)
    if tok is None and p.password:
        tok = unquote(p.password)
    http = f"{'https' if tls else 'http'}://{hostport}"
    return Client(http, token=tok), f"{SCHEME}://{hostport}"


def _segment(value: str, what: str) -> str:
    """Checks an app name, user id or session id and encodes it for a Cairn key."""
    if not isinstance(value, str) or not value.strip():
        raise InputValidationError(f"{what} must be a non-empty string")
    if "\x00" in value:
        raise InputValidationError(f"{what} must not contain NUL bytes")
    return quote(value, safe="")


def _tag(prefix: str, *parts: str) -> str:
    # Tags are at most 128 bytes with no spaces: a hash names any app or user.
    return f"{prefix}:{hash_bytes(json.dumps(parts).encode())[:32]}"


async def _off_loop(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.to_thread(fn, *args, **kwargs)


class _Keys:
    """Session id cache by key (ids never change; a deleted session is looked up again)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._ids: dict[str, str] = {}
        self._lock = threading.Lock()

    def find(self, key: str) -> str | None:
        with self._lock:
            sid = self._ids.get(key)
        if sid is not None:
            return sid
        s = self.client.find_session(key)
        if s is None:
            return None
        with self._lock:
            self._ids[key] = s.id
        return s.id

    def get_or_create(self, key: str, **kwargs: Any) -> str:
        sid = self.find(key)
        if sid is not None:
            return sid
        s = self.client.session_by_key(key, **kwargs)
        with self._lock:
            self._ids[key] = s.id
        return s.id

    def forget(self, key: str) -> None:
        with self._lock:
            self._ids.pop(key, None)

    def retry(self, key: str, fn: Callable[[], T]) -> T:
        """Runs ``fn``; if the cached session was deleted meanwhile, forgets it and runs it again."""
        try:
            return fn()
        except SessionNotFound:
            self.forget(key)
            return fn()


# --------------------------------------------------------------------------------- artifacts


def _encode_part(part: types.Part) -> tuple[bytes, str, str]:
    """(content, mime type, encoding) of an artifact part."""
    if part.inline_data is not None:
        return part.inline_data.data or b"", part.inline_data.mime_type or "application/octet-stream", "inline"
    if part.text is not None:
        return part.text.encode("utf-8"), "text/plain", "text"
    if part.file_data is not None:
        return part.model_dump_json(exclude_none=True).encode(), "application/json", "part"
    raise InputValidationError("Not supported artifact type: give inline_data, text or file_data")


def _decode_part(data: bytes, a: Artifact) -> types.Part:
    enc = a.metadata.get("adk_encoding", "inline")
    if enc == "text":
        return types.Part(text=data.decode("utf-8"))
    if enc == "part":
        return types.Part.model_validate_json(data)
    return types.Part(inline_data=types.Blob(data=data, mime_type=a.metadata.get("adk_mime") or a.mime_type))


class CairnArtifactService(BaseArtifactService):
    """An ADK artifact service that stores artifacts in Cairn (see the module docs).

    ``uri`` is ``cairn://HOST:PORT`` (what ``--artifact_service_uri`` passes); or give a
    ready :class:`~cairn_store.Client` as ``client``.
    """

    def __init__(
        self,
        uri: str | None = None,
        *,
        client: Client | None = None,
        token: str | None = None,
        agents_dir: str | None = None,
    ) -> None:
        del agents_dir  # passed by ADK's service factory; not needed here
        if client is not None:
            self.client = client
            self.base = f"{SCHEME}://{urlparse(client.base_url).netloc}"
        else:
            uri = uri or os.environ.get("CAIRN_SERVER")
            if not uri:
                raise ValueError("CairnArtifactService needs uri='cairn://HOST:PORT' (or CAIRN_SERVER)")
            self.client, self.base = client_from_uri(uri, token=token)
        self._keys = _Keys(self.client)

    # ------------------------------------------------------------------------ scope

    def _scope(self, app_name: str, user_id: str, filename: str, session_id: str | None) -> str:
        app, user = _segment(app_name, "app_name"), _segment(user_id, "user_id")
        if not isinstance(filename, str) or not filename:
            raise InputValidationError("filename must be a non-empty string")
        if filename.startswith("user:"):
            return f"adk:artifacts:{app}/{user}"
        if session_id is None:
            raise InputValidationError("Session ID must be provided for session-scoped artifacts.")
        return f"adk:artifacts:{app}/{user}/{_segment(session_id, 'session_id')}"

    def _version_of(self, a: Artifact) -> ArtifactVersion:
        return ArtifactVersion(
            version=a.version - 1,
            canonical_uri=f"{self.base}/v1/artifacts/{a.id}/content#blake3={a.hash}",
            custom_metadata=dict(a.metadata.get("adk_custom") or {}),
            create_time=a.created_at.timestamp(),
            mime_type=a.metadata.get("adk_mime"),
        )

    def _records(self, key: str, filename: str) -> list[Artifact]:
        sid = self._keys.find(key)
        if sid is None:
            return []
        try:
            return self._keys.retry(key, lambda: self.client.versions(self._keys.find(key) or sid, filename))
        except NotFound:
            return []

    def _record(self, key: str, filename: str, version: int | None) -> Artifact | None:
        sid = self._keys.find(key)
        if sid is None:
            return None
        cairn_version = None if version is None else version + 1
        if cairn_version is not None and cairn_version < 1:
            return None
        try:
            return self._keys.retry(
                key,
                lambda: self.client.artifact_by_name(self._keys.find(key) or sid, filename, version=cairn_version),
            )
        except NotFound:
            return None

    # ------------------------------------------------------------------------ sync bodies

    def _save(
        self,
        app_name: str,
        user_id: str,
        filename: str,
        artifact: types.Part | dict[str, Any],
        session_id: str | None,
        custom_metadata: dict[str, Any] | None,
    ) -> int:
        part = ensure_part(artifact)
        key = self._scope(app_name, user_id, filename, session_id)
        if part.file_data is not None and artifact_util.is_artifact_ref(part):
            parsed = artifact_util.parse_artifact_uri(cast(str, part.file_data.file_uri))
            if not parsed:
                raise InputValidationError(f"Invalid artifact reference URI: {part.file_data.file_uri}")
            artifact_util.validate_artifact_reference_scope(
                app_name=app_name, user_id=user_id, session_id=session_id, parsed_uri=parsed
            )
        data, mime, enc = _encode_part(part)
        meta: dict[str, Any] = {"adk_encoding": enc, "adk_app": app_name, "adk_user": user_id}
        if enc != "part" or not artifact_util.is_artifact_ref(part):
            meta["adk_mime"] = mime if enc != "part" else (part.file_data.mime_type if part.file_data else None)
        if session_id is not None and not filename.startswith("user:"):
            meta["adk_session"] = session_id
        if custom_metadata:
            meta["adk_custom"] = json.loads(json.dumps(custom_metadata, default=str))

        def put() -> Artifact:
            sid = self._keys.get_or_create(
                key, name=key, tags=[_tag("adk-artifacts", app_name, user_id)], metadata={"adk": "artifacts"}
            )
            return self.client.put(sid, filename, data, kind=KIND_ARTIFACT, metadata=meta, mime_type=mime)

        return self._keys.retry(key, put).version - 1

    def _load(
        self,
        app_name: str,
        user_id: str,
        filename: str,
        session_id: str | None,
        version: int | None,
        depth: int,
    ) -> types.Part | None:
        key = self._scope(app_name, user_id, filename, session_id)
        a = self._record(key, filename, version)
        if a is None:
            return None
        part = _decode_part(self.client.read(a.id), a)
        if artifact_util.is_artifact_ref(part):
            assert part.file_data is not None
            parsed = artifact_util.resolve_artifact_reference(
                file_uri=cast(str, part.file_data.file_uri),
                app_name=app_name,
                user_id=user_id,
                session_id=session_id,
                remaining_depth=depth,
            )
            return self._load(
                parsed.app_name, parsed.user_id, parsed.filename, parsed.session_id, parsed.version, depth - 1
            )
        if part == types.Part() or artifact_util._is_rewind_tombstone(part):
            return None
        return part

    def _keys_of(self, app_name: str, user_id: str, session_id: str | None) -> list[str]:
        app, user = _segment(app_name, "app_name"), _segment(user_id, "user_id")
        keys = [f"adk:artifacts:{app}/{user}"]
        if session_id is not None:
            keys.append(f"adk:artifacts:{app}/{user}/{_segment(session_id, 'session_id')}")
        names: set[str] = set()
        for key in keys:
            sid = self._keys.find(key)
            if sid is None:
                continue
            try:
                for a in self._iter_latest(sid):
                    names.add(a.name)
            except SessionNotFound:
                self._keys.forget(key)
        return sorted(names)

    def _iter_latest(self, sid: str) -> Iterator[Artifact]:
        cursor: str | None = None
        while True:
            page = self.client.list_artifacts_page(sid, cursor=cursor, limit=PAGE)
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def _delete(self, app_name: str, user_id: str, filename: str, session_id: str | None) -> None:
        key = self._scope(app_name, user_id, filename, session_id)
        for a in self._records(key, filename):
            with contextlib.suppress(NotFound):  # deleted by someone else meanwhile: the goal is reached
                self.client.delete_artifact(a.id)

    # ------------------------------------------------------------------------ ADK interface

    async def save_artifact(
        self,
        *,
        app_name: str,
        user_id: str,
        filename: str,
        artifact: types.Part | dict[str, Any],
        session_id: str | None = None,
        custom_metadata: dict[str, Any] | None = None,
    ) -> int:
        """Stores a new version; returns it (0 for the first)."""
        return await _off_loop(self._save, app_name, user_id, filename, artifact, session_id, custom_metadata)

    async def load_artifact(
        self,
        *,
        app_name: str,
        user_id: str,
        filename: str,
        session_id: str | None = None,
        version: int | None = None,
    ) -> types.Part | None:
        """The artifact (latest version, or ``version``), verified against its hash; None if absent."""
        return await _off_loop(
            self._load,
            app_name,
            user_id,
            filename,
            session_id,
            version,
            artifact_util._MAX_ARTIFACT_REFERENCE_DEPTH,
        )

    async def list_artifact_keys(self, *, app_name: str, user_id: str, session_id: str | None = None) -> list[str]:
        """Every filename of the session and of the user (``user:`` names), sorted."""
        return await _off_loop(self._keys_of, app_name, user_id, session_id)

    async def delete_artifact(
        self, *, app_name: str, user_id: str, filename: str, session_id: str | None = None
    ) -> None:
        """Deletes every version of the artifact (content no other record uses is reclaimed by GC)."""
        await _off_loop(self._delete, app_name, user_id, filename, session_id)

    async def list_versions(
        self, *, app_name: str, user_id: str, filename: str, session_id: str | None = None
    ) -> list[int]:
        """The artifact's versions, oldest first."""

        def run() -> list[int]:
            key = self._scope(app_name, user_id, filename, session_id)
            return [a.version - 1 for a in self._records(key, filename)]

        return await _off_loop(run)

    async def list_artifact_versions(
        self, *, app_name: str, user_id: str, filename: str, session_id: str | None = None
    ) -> list[ArtifactVersion]:
        """Every version with its metadata (canonical URI, custom metadata, time, MIME type)."""

        def run() -> list[ArtifactVersion]:
            key = self._scope(app_name, user_id, filename, session_id)
            return [self._version_of(a) for a in self._records(key, filename)]

        return await _off_loop(run)

    async def get_artifact_version(
        self,
        *,
        app_name: str,
        user_id: str,
        filename: str,
        session_id: str | None = None,
        version: int | None = None,
    ) -> ArtifactVersion | None:
        """One version's metadata (the latest when ``version`` is None), or None."""

        def run() -> ArtifactVersion | None:
            key = self._scope(app_name, user_id, filename, session_id)
            a = self._record(key, filename, version)
            return None if a is None else self._version_of(a)

        return await _off_loop(run)


# ---------------------------------------------------------------------------------- sessions


def _wrap(state: dict[str, Any]) -> dict[str, Any]:
    # Cairn's metadata merge removes a key whose value is null; ADK state may hold None.
    return {k: {"v": v} for k, v in state.items()}


def _unwrap(meta: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in meta.items():
        if k.startswith(prefix) and isinstance(v, dict) and "v" in v:
            out[k[len(prefix) :]] = v["v"]
    return out


def _slot(a: Artifact) -> int:
    try:
        return int(a.name[len(EVENT_PREFIX) :])
    except ValueError:
        return 0


class CairnSessionService(BaseSessionService):
    """An ADK session service that stores sessions, events and state in Cairn (see the module
    docs for the mapping and the stale-session rule).

    ``uri`` is ``cairn://HOST:PORT`` (what ``--session_service_uri`` passes); or give a ready
    :class:`~cairn_store.Client` as ``client``.
    """

    def __init__(
        self,
        uri: str | None = None,
        *,
        client: Client | None = None,
        token: str | None = None,
        agents_dir: str | None = None,
    ) -> None:
        del agents_dir  # passed by ADK's service factory; not needed here
        if client is not None:
            self.client = client
        else:
            uri = uri or os.environ.get("CAIRN_SERVER")
            if not uri:
                raise ValueError("CairnSessionService needs uri='cairn://HOST:PORT' (or CAIRN_SERVER)")
            self.client, _ = client_from_uri(uri, token=token)
        self._keys = _Keys(self.client)

    # ------------------------------------------------------------------------ keys

    @staticmethod
    def _session_key(app_name: str, user_id: str, session_id: str) -> str:
        app, user = _segment(app_name, "app_name"), _segment(user_id, "user_id")
        return f"adk:session:{app}/{user}/{_segment(session_id, 'session_id')}"

    @staticmethod
    def _app_key(app_name: str) -> str:
        return f"adk:app-state:{_segment(app_name, 'app_name')}"

    @staticmethod
    def _user_key(app_name: str, user_id: str) -> str:
        return f"adk:user-state:{_segment(app_name, 'app_name')}/{_segment(user_id, 'user_id')}"

    def _scope_state(self, key: str) -> dict[str, Any]:
        sid = self._keys.find(key)
        if sid is None:
            return {}
        try:
            return _unwrap(self.client.get_session(sid).metadata)
        except SessionNotFound:
            self._keys.forget(key)
            return {}

    def _merge_scope(self, key: str, delta: dict[str, Any]) -> None:
        if not delta:
            return

        def patch() -> None:
            sid = self._keys.get_or_create(key, name=key, metadata={})
            self.client.update_session(sid, metadata=_wrap(delta))

        self._keys.retry(key, patch)

    # ------------------------------------------------------------------------ events

    def _events_desc(self, sid: str, page: int = PAGE) -> Iterator[Artifact]:
        """The session's event records, newest first (version 1 of each slot only: a later
        version is a refused stale write whose deletion did not complete)."""
        q = ArtifactQuery(session=sid, kind=KIND_EVENT, descending=True)
        for a in self.client.query(q, page_size=page):
            if a.version == 1:
                yield a

    def _event_of(self, a: Artifact) -> Event:
        inline = a.metadata.get("e")
        if isinstance(inline, dict):
            return Event.model_validate(inline)
        return Event.model_validate_json(self.client.read(a.id))

    def _last_slot(self, sid: str) -> int:
        q = ArtifactQuery(session=sid, kind=KIND_EVENT, descending=True)
        page = self.client.query_page(q, limit=1)
        return max((_slot(a) for a in page.items), default=0)

    def _build(self, app_name: str, user_id: str, s: Any, events: list[Event], last: int) -> Session:
        meta = s.metadata
        state = _unwrap(meta, "s:")
        for k, v in self._scope_state(self._app_key(app_name)).items():
            state[State.APP_PREFIX + k] = v
        for k, v in self._scope_state(self._user_key(app_name, user_id)).items():
            state[State.USER_PREFIX + k] = v
        session = Session(
            id=meta.get("adk_id", ""),
            app_name=app_name,
            user_id=user_id,
            state=state,
            events=events,
            last_update_time=float(meta.get("adk_ut", 0.0)),
        )
        session._storage_update_marker = str(last)
        return session

    # ------------------------------------------------------------------------ sync bodies

    def _create(self, app_name: str, user_id: str, state: dict[str, Any] | None, session_id: str | None) -> Session:
        session_id = session_id.strip() if session_id else uuid.uuid4().hex
        key = self._session_key(app_name, user_id, session_id)
        deltas = _session_util.extract_state_delta(_session_util.make_json_safe_state(state or {}))
        now = time.time()
        meta: dict[str, Any] = {
            "adk_app": app_name,
            "adk_user": user_id,
            "adk_id": session_id,
            "adk_ut": now,
            "adk_rev": 0,
        }
        meta.update({f"s:{k}": v for k, v in _wrap(deltas["session"]).items()})
        try:
            s = self.client.create_session(
                key=key,
                name=f"adk {app_name}/{user_id}/{session_id}",
                tags=[_tag("adk-app", app_name), _tag("adk-user", app_name, user_id)],
                metadata=meta,
            )
        except Conflict as e:
            raise AlreadyExistsError(f"Session with id {session_id} already exists.") from e
        self._merge_scope(self._app_key(app_name), deltas["app"])
        self._merge_scope(self._user_key(app_name, user_id), deltas["user"])
        return self._build(app_name, user_id, s, [], 0)

    def _get(self, app_name: str, user_id: str, session_id: str, config: GetSessionConfig | None) -> Session | None:
        key = self._session_key(app_name, user_id, session_id.strip() if session_id else session_id)
        s = self.client.find_session(key)
        if s is None:
            return None
        limit = config.num_recent_events if config else None
        after = config.after_timestamp if config else None
        rev = int(s.metadata.get("adk_rev", 0))
        events: list[Event] = []
        last = 0
        repair: list[Event] = []
        page = PAGE if limit is None else max(1, min(limit, PAGE))
        collecting = True
        for a in self._events_desc(s.id, page):
            n = _slot(a)
            last = max(last, n)
            want = collecting and (limit is None or len(events) < limit)
            ev = self._event_of(a) if (want or n > rev) else None
            if ev is not None and n > rev:
                repair.append(ev)
            if want and ev is not None and (after is None or ev.timestamp >= after):
                events.append(ev)
            else:
                collecting = False
            if not collecting and n <= rev:
                break
        events.reverse()
        session = self._build(app_name, user_id, s, events, last)
        if repair:
            # Events stored whose session-state delta never reached the metadata (a writer
            # stopped between the two steps, or two writers' patches landed out of order):
            # replay them, oldest first, and write the result back.
            delta: dict[str, Any] = {}
            for ev in reversed(repair):
                d = _session_util.extract_state_delta(ev.actions.state_delta if ev.actions else {})
                delta.update(d["session"])
            session.state.update(delta)
            patch = {f"s:{k}": v for k, v in _wrap(delta).items()}
            patch["adk_rev"] = max(rev, last)
            try:
                self.client.update_session(s.id, metadata=patch)
            except NotFound:
                return None
        return session

    def _list(self, app_name: str, user_id: str | None) -> ListSessionsResponse:
        tag = _tag("adk-app", app_name) if user_id is None else _tag("adk-user", app_name, user_id)
        _segment(app_name, "app_name")
        app_state = self._scope_state(self._app_key(app_name))
        user_states: dict[str, dict[str, Any]] = {}
        out: list[Session] = []
        for s in self.client.iter_sessions(tags=[tag]):
            m = s.metadata
            uid = str(m.get("adk_user", ""))
            if m.get("adk_app") != app_name or (user_id is not None and uid != user_id):
                continue  # a tag-hash collision: never list another app's sessions
            if uid not in user_states:
                user_states[uid] = self._scope_state(self._user_key(app_name, uid))
            state = _unwrap(m, "s:")
            state.update({State.APP_PREFIX + k: v for k, v in app_state.items()})
            state.update({State.USER_PREFIX + k: v for k, v in user_states[uid].items()})
            out.append(
                Session(
                    id=str(m.get("adk_id", "")),
                    app_name=app_name,
                    user_id=uid,
                    state=state,
                    last_update_time=float(m.get("adk_ut", 0.0)),
                )
            )
        out.sort(key=lambda x: (x.last_update_time, x.user_id, x.id))
        return ListSessionsResponse(sessions=out)

    def _delete(self, app_name: str, user_id: str, session_id: str) -> None:
        s = self.client.find_session(self._session_key(app_name, user_id, session_id.strip()))
        if s is None:
            return
        with contextlib.suppress(NotFound):
            self.client.delete_session(s.id, recursive=True)

    def _append(self, session: Session, event: Event) -> None:
        key = self._session_key(session.app_name, session.user_id, session.id)
        marker = session._storage_update_marker
        data = event.model_dump(mode="json", exclude_none=True)
        text = json.dumps(data, separators=(",", ":")).encode()
        meta: dict[str, Any] = {"e": data} if len(text) <= INLINE_EVENT_MAX else {}

        def put() -> tuple[str, int, Artifact]:
            sid = self._keys.find(key)
            if sid is None:
                raise SessionNotFoundError(f"Session {session.id} not found.")
            seq = (int(marker) if marker is not None else self._last_slot(sid)) + 1
            return sid, seq, self.client.put(sid, f"{EVENT_PREFIX}{seq:012d}", text, kind=KIND_EVENT, metadata=meta)

        sid, seq, a = self._keys.retry(key, put)
        if a.version != 1:
            # Someone else stored event `seq` first: this session object is outdated.
            with contextlib.suppress(NotFound):
                self.client.delete_artifact(a.id)
            raise StaleSessionError(
                f"Session {session.id} was changed by another writer since it was loaded "
                f"(event {seq} already exists); load it again with get_session and retry."
            )
        deltas = _session_util.extract_json_safe_state_delta(event.actions.state_delta if event.actions else {})
        self._merge_scope(self._app_key(session.app_name), deltas["app"])
        self._merge_scope(self._user_key(session.app_name, session.user_id), deltas["user"])
        patch = {f"s:{k}": v for k, v in _wrap(deltas["session"]).items()}
        patch["adk_rev"] = seq
        patch["adk_ut"] = event.timestamp
        self.client.update_session(sid, metadata=patch)
        session.last_update_time = event.timestamp
        session._storage_update_marker = str(seq)

    # ------------------------------------------------------------------------ ADK interface

    async def create_session(
        self,
        *,
        app_name: str,
        user_id: str,
        state: dict[str, Any] | None = None,
        session_id: str | None = None,
    ) -> Session:
        """Creates a session (``AlreadyExistsError`` if the id is taken)."""
        return await _off_loop(self._create, app_name, user_id, state, session_id)

    async def get_session(
        self,
        *,
        app_name: str,
        user_id: str,
        session_id: str,
        config: GetSessionConfig | None = None,
    ) -> Session | None:
        """The session with its state (app, user and session scopes merged) and events; with
        ``config``, only the last ``num_recent_events`` and those at or after
        ``after_timestamp``, read newest first and page by page from the server."""
        return await _off_loop(self._get, app_name, user_id, session_id, config)

    async def list_sessions(self, *, app_name: str, user_id: str | None = None) -> ListSessionsResponse:
        """The app's (or the user's) sessions without events, least recently updated first."""
        return await _off_loop(self._list, app_name, user_id)

    async def delete_session(self, *, app_name: str, user_id: str, session_id: str) -> None:
        """Deletes the session and its events (a no-op if it does not exist)."""
        await _off_loop(self._delete, app_name, user_id, session_id)

    async def get_user_state(self, *, app_name: str, user_id: str) -> dict[str, Any]:
        """The user's ``user:`` state, keys without the prefix."""
        return await _off_loop(self._scope_state, self._user_key(app_name, user_id))

    async def append_event(self, session: Session, event: Event) -> Event:
        """Stores the event and its state delta; raises ``StaleSessionError`` when another
        writer appended to the session since ``session`` was loaded."""
        if event.partial:
            return event
        self._apply_temp_state(session, event)
        event = self._trim_temp_delta_state(event)
        await _off_loop(self._append, session, event)
        return self._commit_event_to_session(session, event)


# ---------------------------------------------------------------------------------- registry


def register() -> None:
    """Registers the ``cairn://`` scheme in ADK's service registry, for the artifact and the
    session service (what a ``services.py`` next to an agent would call)."""
    from google.adk.cli.service_registry import get_service_registry

    reg = get_service_registry()
    reg.register_artifact_service(SCHEME, lambda uri, **kw: CairnArtifactService(uri, **kw))
    reg.register_session_service(SCHEME, lambda uri, **kw: CairnSessionService(uri, **kw))
