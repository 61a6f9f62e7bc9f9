"""The model layer shared by the sync and async clients: typed records parsed from the server's
JSON (the same shapes `cairn --json` prints). Every record keeps the full JSON it came from in
``raw``, so fields a newer server adds are not lost.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

T = TypeVar("T")

JSON = dict[str, Any]


def _time(value: Any) -> datetime | None:
    """Parses an RFC 3339 time from the server (``Z`` suffix allowed)."""
    if value is None:
        return None
    text = str(value)
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    return datetime.fromisoformat(text)


def _required_time(value: Any) -> datetime:
    t = _time(value)
    if t is None:
        raise ValueError("the server sent a record without a time")
    return t


@dataclass(frozen=True)
class Session:
    """A session: a unit of agent work that owns artifacts, events and checkpoints."""

    id: str
    status: str
    key: str | None
    name: str | None
    description: str | None
    parent_id: str | None
    tags: list[str]
    metadata: JSON
    created_at: datetime
    updated_at: datetime
    ended_at: datetime | None
    reason: str | None
    raw: JSON = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Session:
        """Builds a session from the server's JSON."""
        return cls(
            id=str(d["id"]),
            status=str(d.get("status", "active")),
            key=d.get("key"),
            name=d.get("name"),
            description=d.get("description"),
            parent_id=d.get("parent_id"),
            tags=list(d.get("tags") or []),
            metadata=dict(d.get("metadata") or {}),
            created_at=_required_time(d.get("created_at")),
            updated_at=_required_time(d.get("updated_at", d.get("created_at"))),
            ended_at=_time(d.get("ended_at")),
            reason=d.get("reason"),
            raw=dict(d),
        )


@dataclass(frozen=True)
class Artifact:
    """One stored version of a named artifact. Its content is read through the client."""

    id: str
    session_id: str
    kind: str
    name: str
    version: int
    hash: str
    size: int
    stored_size: int
    compressed: bool
    tags: list[str]
    metadata: JSON
    mime_type: str | None
    created_at: datetime
    raw: JSON = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Artifact:
        """Builds an artifact from the server's JSON."""
        return cls(
            id=str(d["id"]),
            session_id=str(d["session_id"]),
            kind=str(d["kind"]),
            name=str(d["name"]),
            version=int(d["version"]),
            hash=str(d["hash"]),
            size=int(d["size"]),
            stored_size=int(d.get("stored_size", d["size"])),
            compressed=bool(d.get("compressed", False)),
            tags=list(d.get("tags") or []),
            metadata=dict(d.get("metadata") or {}),
            mime_type=d.get("mime_type"),
            created_at=_required_time(d.get("created_at")),
            raw=dict(d),
        )


@dataclass(frozen=True)
class Event:
    """One entry of a session's event log. ``type`` names what happened; ``data`` holds the
    type's own fields (for example ``artifact_id`` of an ``artifact_stored`` event).
    """

    session_id: str
    seq: int
    at: datetime
    type: str
    data: JSON
    raw: JSON = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Event:
        """Builds an event from the server's JSON."""
        rest = {k: v for k, v in d.items() if k not in ("session_id", "seq", "at", "type")}
        return cls(
            session_id=str(d["session_id"]),
            seq=int(d["seq"]),
            at=_required_time(d.get("at")),
            type=str(d.get("type", "")),
            data=rest,
            raw=dict(d),
        )


@dataclass(frozen=True)
class Checkpoint:
    """A Cairn checkpoint: a session's artifact set and a JSON state, captured at one moment."""

    id: str
    session_id: str
    label: str
    state: Any
    artifact_count: int
    event_seq: int
    created_at: datetime
    raw: JSON = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Checkpoint:
        """Builds a checkpoint from the server's JSON."""
        return cls(
            id=str(d["id"]),
            session_id=str(d["session_id"]),
            label=str(d.get("label", "")),
            state=d.get("state"),
            artifact_count=int(d.get("artifact_count", 0)),
            event_seq=int(d.get("event_seq", 0)),
            created_at=_required_time(d.get("created_at")),
            raw=dict(d),
        )


@dataclass(frozen=True)
class Message:
    """One message of a session's conversation history (``say`` / ``history``)."""

    seq: int
    role: str
    content: str
    metadata: JSON
    artifact_id: str
    at: datetime
    raw: JSON = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Message:
        """Builds a message from the server's JSON."""
        return cls(
            seq=int(d["seq"]),
            role=str(d["role"]),
            content=str(d.get("content", "")),
            metadata=dict(d.get("metadata") or {}),
            artifact_id=str(d.get("artifact_id", "")),
            at=_required_time(d.get("at")),
            raw=dict(d),
        )


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing. ``next_cursor`` is set exactly when more results exist."""

    items: list[T]
    next_cursor: str | None

    @classmethod
    def from_json(cls, d: Mapping[str, Any], item: Callable[[Mapping[str, Any]], T]) -> Page[T]:
        """Builds a page, parsing each item with ``item``."""
        return cls(items=[item(x) for x in d.get("items") or []], next_cursor=d.get("next_cursor"))


@dataclass(frozen=True)
class Stats:
    """Store-wide counters (admin): sessions, artifacts, bytes and the dedup ratio."""

    sessions: int
    artifacts: int
    blobs: int
    logical_bytes: int
    content_bytes: int
    stored_bytes: int
    dedup_ratio: float
    compression_ratio: float
    raw: JSON = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Stats:
        """Builds store stats from the server's JSON."""
        return cls(
            sessions=int(d.get("sessions", 0)),
            artifacts=int(d.get("artifacts", 0)),
            blobs=int(d.get("blobs", 0)),
            logical_bytes=int(d.get("logical_bytes", 0)),
            content_bytes=int(d.get("content_bytes", 0)),
            stored_bytes=int(d.get("stored_bytes", 0)),
            dedup_ratio=float(d.get("dedup_ratio", 0.0)),
            compression_ratio=float(d.get("compression_ratio", 0.0)),
            raw=dict(d),
        )


@dataclass(frozen=True)
class ArtifactQuery:
    """Filters for an artifact query; every filter is optional and all given ones must hold.

    ``name`` is a glob (``*`` also matches ``/``); ``tags`` must all be present, ``any_tags``
    at least one; ``after`` and
    ``before`` bound the creation time (RFC 3339 strings or datetimes).
    """

    session: str | None = None
    subtree: bool = False
    kind: str | None = None
    tags: tuple[str, ...] = ()
    any_tags: tuple[str, ...] = ()
    name: str | None = None
    min_size: int | None = None
    max_size: int | None = None
    after: datetime | str | None = None
    before: datetime | str | None = None
    latest_only: bool = False
    descending: bool = False

    def params(self) -> list[tuple[str, str]]:
        """The query string pairs for ``GET /v1/artifacts``."""
        out: list[tuple[str, str]] = []
        if self.session is not None:
            out.append(("session", self.session))
        if self.subtree:
            out.append(("subtree", "true"))
        if self.kind is not None:
            out.append(("kind", self.kind))
        out.extend(("tag", t) for t in self.tags)
        out.extend(("any_tag", t) for t in self.any_tags)
        if self.name is not None:
            out.append(("name", self.name))
        if self.min_size is not None:
            out.append(("min_size", str(self.min_size)))
        if self.max_size is not None:
            out.append(("max_size", str(self.max_size)))
        for key, value in (("after", self.after), ("before", self.before)):
            if value is not None:
                out.append((key, value.isoformat() if isinstance(value, datetime) else value))
        if self.latest_only:
            out.append(("latest", "true"))
        if self.descending:
            out.append(("desc", "true"))
        return out
