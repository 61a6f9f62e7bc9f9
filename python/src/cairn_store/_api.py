"""Every server route as a :class:`Call`: what to send and how to read the answer. The sync and
async clients run the same calls, so each route is written once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from ._errors import ProtocolError
from ._models import (
    JSON,
    Artifact,
    ArtifactQuery,
    Checkpoint,
    Event,
    Message,
    Page,
    Session,
    Stats,
)

T = TypeVar("T")

HASH_HEADER = "X-Cairn-Hash"
"""The header that declares an upload's BLAKE3 hash (hex); the server refuses a mismatch."""


@dataclass
class Call(Generic[T]):
    """One HTTP exchange: request parts, the statuses that mean success, and the parser."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: list[tuple[str, str]] = field(default_factory=list)
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    ok: tuple[int, ...] = (200, 201, 204)


def seg(value: str) -> str:
    """One path segment, percent-encoded (artifact names may hold ``/``)."""
    return quote(value, safe="")


def body(resp: httpx.Response) -> Any:
    """The JSON body of a response, or a :class:`ProtocolError` naming what arrived."""
    try:
        return resp.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ProtocolError(
            f"expected JSON from {resp.request.method} {resp.request.url.path}, got "
            f"{resp.headers.get('content-type', 'no content type')}: {e}",
            status=resp.status_code,
        ) from e


def _one(cls: Callable[[Mapping[str, Any]], T]) -> Callable[[httpx.Response], T]:
    return lambda r: cls(body(r))


def _many(cls: Callable[[Mapping[str, Any]], T]) -> Callable[[httpx.Response], list[T]]:
    def parse(r: httpx.Response) -> list[T]:
        b = body(r)
        items = b.get("items", []) if isinstance(b, dict) else b
        return [cls(x) for x in items]

    return parse


def _page(cls: Callable[[Mapping[str, Any]], T]) -> Callable[[httpx.Response], Page[T]]:
    return lambda r: Page.from_json(body(r), cls)


def _raw(r: httpx.Response) -> JSON:
    b = body(r)
    return b if isinstance(b, dict) else {"value": b}


def _none(_: httpx.Response) -> None:
    return None


def _new_session(
    name: str | None,
    key: str | None,
    parent: str | None,
    tags: Sequence[str],
    metadata: Mapping[str, Any] | None,
    description: str | None,
) -> JSON:
    out: JSON = {}
    for k, v in (("name", name), ("key", key), ("parent", parent), ("description", description)):
        if v is not None:
            out[k] = v
    if tags:
        out["tags"] = list(tags)
    if metadata:
        out["metadata"] = dict(metadata)
    return out


# ------------------------------------------------------------------------------------ sessions


def create_session(
    *,
    name: str | None = None,
    key: str | None = None,
    parent: str | None = None,
    tags: Sequence[str] = (),
    metadata: Mapping[str, Any] | None = None,
    description: str | None = None,
) -> Call[Session]:
    """Creates a session (``POST /v1/sessions``)."""
    return Call(
        "POST",
        "/v1/sessions",
        _one(Session.from_json),
        json=_new_session(name, key, parent, tags, metadata, description),
    )


def session_by_key(
    key: str,
    *,
    name: str | None = None,
    parent: str | None = None,
    tags: Sequence[str] = (),
    metadata: Mapping[str, Any] | None = None,
    description: str | None = None,
) -> Call[Session]:
    """Gets the session with ``key``, creating it from the other arguments if there is none."""
    return Call(
        "PUT",
        f"/v1/sessions/by-key/{seg(key)}",
        _one(Session.from_json),
        json=_new_session(name, None, parent, tags, metadata, description),
    )


def find_session(key: str) -> Call[Session | None]:
    """The session with ``key``, or None; never creates one."""

    def parse(r: httpx.Response) -> Session | None:
        items = Page.from_json(body(r), Session.from_json).items
        return items[0] if items else None

    return Call("GET", "/v1/sessions", parse, params=[("key", key), ("limit", "1")])


def get_session(session_id: str) -> Call[Session]:
    """One session by id."""
    return Call("GET", f"/v1/sessions/{seg(session_id)}", _one(Session.from_json))


def list_sessions_page(
    *,
    status: Sequence[str] = (),
    tags: Sequence[str] = (),
    key: str | None = None,
    parent: str | None = None,
    roots: bool = False,
    cursor: str | None = None,
    limit: int | None = None,
) -> Call[Page[Session]]:
    """One page of sessions matching every given filter."""
    p: list[tuple[str, str]] = [("status", s) for s in status] + [("tag", t) for t in tags]
    if key is not None:
        p.append(("key", key))
    if parent is not None:
        p.append(("parent", parent))
    if roots:
        p.append(("roots", "true"))
    if cursor is not None:
        p.append(("cursor", cursor))
    if limit is not None:
        p.append(("limit", str(limit)))
    return Call("GET", "/v1/sessions", _page(Session.from_json), params=p)


def update_session(
    session_id: str,
    *,
    metadata: Mapping[str, Any] | None = None,
    replace_metadata: Mapping[str, Any] | None = None,
    add_tags: Sequence[str] = (),
    remove_tags: Sequence[str] = (),
) -> Call[Session]:
    """Merges (or replaces) metadata and adds/removes tags."""
    b: JSON = {}
    if metadata is not None:
        b["metadata"] = dict(metadata)
    if replace_metadata is not None:
        b["replace_metadata"] = dict(replace_metadata)
    if add_tags:
        b["add_tags"] = list(add_tags)
    if remove_tags:
        b["remove_tags"] = list(remove_tags)
    return Call("PATCH", f"/v1/sessions/{seg(session_id)}", _one(Session.from_json), json=b)


def delete_session(session_id: str, *, recursive: bool = False) -> Call[JSON]:
    """Deletes a session (with ``recursive``, its whole subtree); returns the server's report."""
    p = [("recursive", "true")] if recursive else []
    return Call("DELETE", f"/v1/sessions/{seg(session_id)}", _raw, params=p)


def session_tree(session_id: str) -> Call[list[Session]]:
    """The session and every descendant."""
    return Call("GET", f"/v1/sessions/{seg(session_id)}/tree", _many(Session.from_json))


def children(session_id: str) -> Call[list[Session]]:
    """The session's direct children."""
    return Call("GET", f"/v1/sessions/{seg(session_id)}/children", _many(Session.from_json))


def transition(session_id: str, to: str, reason: str | None = None) -> Call[Session]:
    """A lifecycle change: ``to`` is complete, fail, cancel, suspend or resume."""
    if to not in ("complete", "fail", "cancel", "suspend", "resume"):
        raise ValueError(f"unknown transition {to!r}: use complete, fail, cancel, suspend or resume")
    b: JSON = {"reason": reason} if reason is not None else {}
    return Call("POST", f"/v1/sessions/{seg(session_id)}/{to}", _one(Session.from_json), json=b)


def session_stats(session_id: str) -> Call[JSON]:
    """The session's metrics and counters, as the server returns them."""
    return Call("GET", f"/v1/sessions/{seg(session_id)}/stats", _raw)


def events_page(session_id: str, *, after: int | None = None, limit: int | None = None) -> Call[Page[Event]]:
    """One page of the session's event log, after seq ``after``."""
    p: list[tuple[str, str]] = []
    if after is not None:
        p.append(("after", str(after)))
    if limit is not None:
        p.append(("limit", str(limit)))
    return Call("GET", f"/v1/sessions/{seg(session_id)}/events", _page(Event.from_json), params=p)


def append_event(session_id: str, name: str, payload: Any = None) -> Call[Event]:
    """Appends a custom event with a JSON payload."""
    return Call(
        "POST",
        f"/v1/sessions/{seg(session_id)}/events",
        _one(Event.from_json),
        json={"name": name, "payload": payload},
    )


# ----------------------------------------------------------------------------------- artifacts


def list_artifacts_page(
    session_id: str, *, recursive: bool = False, cursor: str | None = None, limit: int | None = None
) -> Call[Page[Artifact]]:
    """One page of the latest version of every artifact name in the session (``recursive``:
    its subtree too)."""
    p: list[tuple[str, str]] = [("recursive", "true")] if recursive else []
    if cursor is not None:
        p.append(("cursor", cursor))
    if limit is not None:
        p.append(("limit", str(limit)))
    return Call("GET", f"/v1/sessions/{seg(session_id)}/artifacts", _page(Artifact.from_json), params=p)


def artifact_by_name(session_id: str, name: str, *, version: int | None = None) -> Call[Artifact]:
    """The artifact ``name`` of a session: the latest version, or ``version``."""
    p = [("version", str(version))] if version is not None else []
    return Call("GET", f"/v1/sessions/{seg(session_id)}/artifacts/{seg(name)}", _one(Artifact.from_json), params=p)


def versions(session_id: str, name: str) -> Call[list[Artifact]]:
    """Every version of one artifact name, oldest first."""
    return Call(
        "GET",
        f"/v1/sessions/{seg(session_id)}/artifacts/{seg(name)}/versions",
        _many(Artifact.from_json),
    )


def get_artifact(artifact_id: str) -> Call[Artifact]:
    """One artifact's record."""
    return Call("GET", f"/v1/artifacts/{seg(artifact_id)}", _one(Artifact.from_json))


def delete_artifact(artifact_id: str) -> Call[Artifact]:
    """Deletes one artifact version; returns its record."""
    return Call("DELETE", f"/v1/artifacts/{seg(artifact_id)}", _one(Artifact.from_json))


def query_page(q: ArtifactQuery, *, cursor: str | None = None, limit: int | None = None) -> Call[Page[Artifact]]:
    """One page of an artifact query."""
    p = q.params()
    if cursor is not None:
        p.append(("cursor", cursor))
    if limit is not None:
        p.append(("limit", str(limit)))
    return Call("GET", "/v1/artifacts", _page(Artifact.from_json), params=p)


def missing_blobs(hashes: Sequence[str]) -> Call[set[str]]:
    """Which of these content hashes this tenant's store lacks."""

    def parse(r: httpx.Response) -> set[str]:
        b = body(r)
        return set(b.get("missing", []) if isinstance(b, dict) else b)

    return Call("POST", "/v1/blobs/missing", parse, json={"hashes": list(hashes)})


def put_params(
    kind: str | None,
    tags: Sequence[str],
    metadata: Mapping[str, Any] | None,
    mime_type: str | None,
) -> list[tuple[str, str]]:
    """The query string of an artifact upload."""
    p: list[tuple[str, str]] = []
    if kind is not None:
        p.append(("kind", kind))
    p.extend(("tag", t) for t in tags)
    if metadata:
        p.append(("metadata", json.dumps(dict(metadata), separators=(",", ":"))))
    if mime_type is not None:
        p.append(("mime_type", mime_type))
    return p


# --------------------------------------------------------------------------------- checkpoints


def create_checkpoint(session_id: str, label: str, state: Any = None) -> Call[Checkpoint]:
    """Captures the session's artifacts and a JSON state as a checkpoint."""
    b: JSON = {"label": label}
    if state is not None:
        b["state"] = state
    return Call("POST", f"/v1/sessions/{seg(session_id)}/checkpoints", _one(Checkpoint.from_json), json=b)


def checkpoints_page(session_id: str, *, cursor: str | None = None, limit: int | None = None) -> Call[Page[Checkpoint]]:
    """One page of the session's checkpoints, oldest first."""
    p: list[tuple[str, str]] = []
    if cursor is not None:
        p.append(("cursor", cursor))
    if limit is not None:
        p.append(("limit", str(limit)))
    return Call("GET", f"/v1/sessions/{seg(session_id)}/checkpoints", _page(Checkpoint.from_json), params=p)


def get_checkpoint(checkpoint_id: str) -> Call[Checkpoint]:
    """One checkpoint."""
    return Call("GET", f"/v1/checkpoints/{seg(checkpoint_id)}", _one(Checkpoint.from_json))


def restore_checkpoint(checkpoint_id: str) -> Call[JSON]:
    """Restores the session to the checkpoint (after a backup checkpoint); returns the report."""
    return Call("POST", f"/v1/checkpoints/{seg(checkpoint_id)}/restore", _raw)


def delete_checkpoint(checkpoint_id: str) -> Call[JSON]:
    """Deletes a checkpoint."""
    return Call("DELETE", f"/v1/checkpoints/{seg(checkpoint_id)}", _raw)


def fork(
    session_id: str,
    *,
    checkpoint: str | None = None,
    name: str | None = None,
    tags: Sequence[str] = (),
    metadata: Mapping[str, Any] | None = None,
) -> Call[Session]:
    """A child session holding the source's artifacts (at ``checkpoint``, or now); no content
    is copied.
    """
    b = _new_session(name, None, None, tags, metadata, None)
    if checkpoint is not None:
        b["checkpoint"] = checkpoint
    return Call("POST", f"/v1/sessions/{seg(session_id)}/fork", _one(Session.from_json), json=b)


def copy(
    session_id: str,
    *,
    subtree: bool = False,
    parent: str | None = None,
    root: bool = False,
    name: str | None = None,
) -> Call[Session]:
    """A copy of the session (optionally its subtree) sharing all content; beside the source,
    under ``parent``, or a root with ``root``."""
    b: JSON = {"subtree": subtree}
    if parent is not None:
        b["parent"] = parent
    if root:
        b["root"] = True
    if name is not None:
        b["name"] = name
    return Call("POST", f"/v1/sessions/{seg(session_id)}/copy", _one(Session.from_json), json=b)


def merge(
    sources: Sequence[str],
    *,
    name: str | None = None,
    parent: str | None = None,
    tags: Sequence[str] = (),
    metadata: Mapping[str, Any] | None = None,
) -> Call[Session]:
    """A new session with every artifact of every source, in time order; no content copied."""
    b = _new_session(name, None, parent, tags, metadata, None)
    b["sources"] = list(sources)
    return Call("POST", "/v1/sessions/merge", _one(Session.from_json), json=b)


def lineage(session_id: str) -> Call[list[JSON]]:
    """Where the session came from (fork, copy, merge records)."""
    return Call("GET", f"/v1/sessions/{seg(session_id)}/lineage", _many(dict))


def timeline_page(
    session_id: str, *, subtree: bool = False, cursor: str | None = None, limit: int | None = None
) -> Call[Page[JSON]]:
    """One page of the session's timeline (events with their artifact or checkpoint)."""
    p: list[tuple[str, str]] = [("subtree", "true")] if subtree else []
    if cursor is not None:
        p.append(("cursor", cursor))
    if limit is not None:
        p.append(("limit", str(limit)))
    return Call("GET", f"/v1/sessions/{seg(session_id)}/timeline", _page(dict), params=p)


def say(session_id: str, role: str, content: str, metadata: Mapping[str, Any] | None = None) -> Call[Message]:
    """Appends a message to the session's conversation history."""
    b: JSON = {"role": role, "content": content}
    if metadata:
        b["metadata"] = dict(metadata)
    return Call("POST", f"/v1/sessions/{seg(session_id)}/messages", _one(Message.from_json), json=b)


def history(session_id: str, *, last: int | None = None) -> Call[list[Message]]:
    """The conversation history, oldest first (the last ``last`` messages)."""
    p = [("last", str(last))] if last is not None else []
    return Call("GET", f"/v1/sessions/{seg(session_id)}/messages", _many(Message.from_json), params=p)


# ------------------------------------------------------------------------------------- admin


def stats() -> Call[Stats]:
    """Store-wide counters (admin token)."""
    return Call("GET", "/v1/admin/stats", _one(Stats.from_json))


def gc() -> Call[JSON]:
    """Runs garbage collection (admin token); returns the report."""
    return Call("POST", "/v1/admin/gc", _raw)


def verify() -> Call[JSON]:
    """Re-hashes all content (admin token); returns the report."""
    return Call("POST", "/v1/admin/verify", _raw)


def repair() -> Call[JSON]:
    """Rebuilds indexes and quarantines bad content (admin token); returns the report."""
    return Call("POST", "/v1/admin/repair", _raw)


def cleanup(rules: Mapping[str, Any]) -> Call[JSON]:
    """Applies retention rules on the server (admin token), e.g. ``{"dry_run": True, ...}``
    with the fields of the server's ``Cleanup`` schema; returns what was (or would be) removed."""
    return Call("POST", "/v1/admin/cleanup", _raw, json=dict(rules))


# ------------------------------------------------------------------------------- webhooks


def create_webhook(url: str, *, events: Sequence[str] | None = None, secret: str | None = None) -> Call[JSON]:
    """Registers a webhook for the tenant's lifecycle events (admin token). The answer holds
    the signing secret, shown this once."""
    b: dict[str, Any] = {"url": url}
    if events is not None:
        b["events"] = list(events)
    if secret is not None:
        b["secret"] = secret
    return Call("POST", "/v1/webhooks", _raw, json=b)


def list_webhooks() -> Call[JSON]:
    """The tenant's webhooks with their delivery counters, never their secrets (admin token)."""
    return Call("GET", "/v1/webhooks", _raw)


def delete_webhook(webhook_id: str) -> Call[JSON]:
    """Removes a webhook (admin token); deliveries stop."""
    return Call("DELETE", f"/v1/webhooks/{seg(webhook_id)}", _raw)


# ------------------------------------------------------------------------ partial reads, memo


def read_part(artifact_id: str, part: str = "head", **params: Any) -> Call[JSON]:
    """One part of an artifact, verified: ``part`` is bytes, lines, head, tail, grep, json or
    json_lines, with that part's parameters (``offset``/``len``, ``start``/``count``,
    ``lines``, ``pattern``/``context``/``max_matches``/``ignore_case``/``start_line``,
    ``path``) and ``max_bytes``/``max_line_bytes``. The result says what was left out."""
    q = [("part", part)] + [
        (k, ("true" if v else "false") if isinstance(v, bool) else str(v)) for k, v in params.items() if v is not None
    ]
    return Call("GET", f"/v1/artifacts/{seg(artifact_id)}/read", _raw, params=q)


def preview(artifact_id: str) -> Call[JSON]:
    """The stored preview of an artifact: sizes, line count, type, head and tail, JSON keys."""
    return Call("GET", f"/v1/artifacts/{seg(artifact_id)}/preview", _raw)


def _memo_key(tool: str, args: Any, session_id: str | None) -> dict[str, Any]:
    return {"tool": tool, "args": args, "session_id": session_id}


def memo_lookup(tool: str, args: Any, *, session_id: str | None = None) -> Call[JSON | None]:
    """The stored result of ``tool`` called with ``args`` (canonical JSON), or None on a miss."""
    return Call("POST", "/v1/memo/lookup", lambda r: body(r).get("hit"), json=_memo_key(tool, args, session_id))


def memo_store(tool: str, args: Any, artifact_id: str, *, session_id: str | None = None) -> Call[JSON]:
    """Records ``artifact_id`` as the result of ``tool`` called with ``args``."""
    b = _memo_key(tool, args, session_id)
    b["artifact_id"] = artifact_id
    return Call("PUT", "/v1/memo", _raw, json=b)


def memo_forget(tool: str, args: Any, *, session_id: str | None = None) -> Call[bool]:
    """Removes a memo entry; True when one was removed."""
    key = _memo_key(tool, args, session_id)
    return Call("POST", "/v1/memo/forget", lambda r: bool(body(r).get("removed")), json=key)


def memo_stats(tool: str | None = None) -> Call[JSON]:
    """Memo hit and miss counts, of one tool or of all."""
    return Call("GET", "/v1/memo/stats", _raw, params=[("tool", tool)] if tool else [])


def memo_ttl(tool: str) -> Call[int | None]:
    """How long results of ``tool`` stay valid, in seconds (None: forever)."""
    return Call("GET", f"/v1/memo/ttl/{seg(tool)}", lambda r: body(r).get("ttl_secs"))


def set_memo_ttl(tool: str, ttl_secs: int | None) -> Call[int | None]:
    """Sets how long results of ``tool`` stay valid (None: forever); returns the TTL now."""
    return Call("PUT", f"/v1/memo/ttl/{seg(tool)}", lambda r: body(r).get("ttl_secs"), json={"ttl_secs": ttl_secs})


def health() -> Call[bool]:
    """True when the server answers ``/healthz``."""
    return Call("GET", "/healthz", lambda r: r.status_code == 200)


def ready() -> Call[bool]:
    """True when the server is ready to serve (``/readyz``)."""
    return Call("GET", "/readyz", lambda r: r.status_code == 200, ok=(200, 503))


def metrics() -> Call[str]:
    """The Prometheus text of ``/metrics`` (admin token)."""
    return Call("GET", "/metrics", lambda r: r.text)


def openapi() -> Call[JSON]:
    """The server's OpenAPI 3 document."""
    return Call("GET", "/openapi.json", _raw)
