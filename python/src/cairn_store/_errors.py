"""Exceptions, one class per server error code (`{"error":{"code","message"}}`)."""

from __future__ import annotations

from typing import Any


class CairnError(Exception):
    """Base class of every error this package raises for a server answer or a bad response.

    ``code`` is the server's stable error code (the same the CLI prints), ``status`` the HTTP
    status (0 when no response arrived).
    """

    code: str = "other"

    def __init__(self, message: str, *, code: str | None = None, status: int = 0) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.status = status

    def __str__(self) -> str:
        return (
            f"{self.code}: {self.message}"
            if self.status == 0
            else (f"{self.code} (HTTP {self.status}): {self.message}")
        )


class NotFound(CairnError):
    """Something that does not exist (or belongs to another tenant, which looks the same)."""

    code = "not_found"


class SessionNotFound(NotFound):
    """No such session."""

    code = "session_not_found"


class ArtifactNotFound(NotFound):
    """No such artifact."""

    code = "artifact_not_found"


class CheckpointNotFound(NotFound):
    """No such checkpoint."""

    code = "checkpoint_not_found"


class ContentMissing(NotFound):
    """The content a record points at is gone from the store."""

    code = "content_missing"


class Conflict(CairnError):
    """The request conflicts with the store's state."""

    code = "conflict"


class InvalidTransition(Conflict):
    """A lifecycle change the session's state does not allow."""

    code = "invalid_transition"


class KeyConflict(Conflict):
    """A session key that another session already holds."""

    code = "key_conflict"


class AlreadyExists(Conflict):
    """Something that must be new already exists."""

    code = "already_exists"


class HasChildren(Conflict):
    """A session with children was deleted without ``recursive=True``."""

    code = "has_children"


class SessionClosed(Conflict):
    """A session in a terminal state takes no new artifacts."""

    code = "session_closed"


class InvalidInput(CairnError):
    """A request the server refused as malformed; the message says what to change."""

    code = "invalid_input"


class InvalidGlob(InvalidInput):
    """A name glob that does not parse."""

    code = "invalid_glob"


class HashMismatch(InvalidInput):
    """Uploaded content whose BLAKE3 hash differs from the declared one."""

    code = "hash_mismatch"


class LimitExceeded(CairnError):
    """A configured limit or quota was reached."""

    code = "limit_exceeded"


class QuotaExceeded(LimitExceeded):
    """The tenant's quota (bytes or artifacts) is used up."""

    code = "quota_exceeded"


class PayloadTooLarge(LimitExceeded):
    """The request body is larger than the server accepts."""

    code = "payload_too_large"


class Unauthorized(CairnError):
    """No token, or a token the server does not know."""

    code = "unauthorized"


class Forbidden(CairnError):
    """The token lacks the scope (write, admin) the route needs."""

    code = "forbidden"


class Unavailable(CairnError):
    """The server is busy (503) or timed out (408); retry later."""

    code = "unavailable"


class IntegrityError(CairnError):
    """Content whose hash or length does not match its record (server side or as received)."""

    code = "integrity"


class ProtocolError(CairnError):
    """A response this client does not understand."""

    code = "protocol"


_BY_CODE: dict[str, type[CairnError]] = {
    cls.code: cls
    for cls in (
        NotFound,
        SessionNotFound,
        ArtifactNotFound,
        CheckpointNotFound,
        ContentMissing,
        Conflict,
        InvalidTransition,
        KeyConflict,
        AlreadyExists,
        HasChildren,
        SessionClosed,
        InvalidInput,
        InvalidGlob,
        HashMismatch,
        LimitExceeded,
        QuotaExceeded,
        PayloadTooLarge,
        Unauthorized,
        Forbidden,
        Unavailable,
        IntegrityError,
        ProtocolError,
    )
}
_BY_CODE["corrupt"] = IntegrityError

_BY_STATUS: dict[int, type[CairnError]] = {
    400: InvalidInput,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    408: Unavailable,
    409: Conflict,
    413: PayloadTooLarge,
    422: InvalidInput,
    503: Unavailable,
}


def error_from_response(status: int, body: Any) -> CairnError:
    """The exception for an error response: by the body's code, else by the HTTP status."""
    code, message = None, None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = body["error"].get("code")
        message = body["error"].get("message")
    cls = _BY_CODE.get(str(code)) if code else None
    if cls is None:
        cls = _BY_STATUS.get(status, CairnError)
    return cls(str(message or f"HTTP {status}"), code=str(code) if code else None, status=status)
