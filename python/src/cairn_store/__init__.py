"""Python client for Cairn, the artifact store for AI agents (``cairn serve`` over HTTP).

>>> from cairn_store import Client, LocalServer            # doctest: +SKIP
>>> with LocalServer() as srv, srv.client() as c:
...     s = c.create_session(name="demo")
...     a = c.put(s.id, "report.md", b"# hello")
...     c.read(a.id)
b'# hello'

Framework adapters are optional modules that import their framework only when imported
themselves: ``cairn_store.langgraph`` (``CairnSaver``, ``AsyncCairnSaver``), ``cairn_store.adk``
(``CairnArtifactService``, ``CairnSessionService``) and ``cairn_store.openai_agents``
(``CairnSession``).
"""

from ._client import AsyncClient, Client
from ._content import hash_bytes
from ._errors import (
    AlreadyExists,
    ArtifactNotFound,
    CairnError,
    CheckpointNotFound,
    Conflict,
    ContentMissing,
    Forbidden,
    HasChildren,
    HashMismatch,
    IntegrityError,
    InvalidGlob,
    InvalidInput,
    InvalidTransition,
    KeyConflict,
    LimitExceeded,
    NotFound,
    PayloadTooLarge,
    ProtocolError,
    QuotaExceeded,
    SessionClosed,
    SessionNotFound,
    Unauthorized,
    Unavailable,
)
from ._models import Artifact, ArtifactQuery, Checkpoint, Event, Message, Page, Session, Stats
from .server import LocalServer, find_binary

__version__ = "0.1.0"

__all__ = [
    "AlreadyExists",
    "Artifact",
    "ArtifactNotFound",
    "ArtifactQuery",
    "AsyncClient",
    "CairnError",
    "Checkpoint",
    "CheckpointNotFound",
    "Client",
    "Conflict",
    "ContentMissing",
    "Event",
    "Forbidden",
    "HasChildren",
    "HashMismatch",
    "IntegrityError",
    "InvalidGlob",
    "InvalidInput",
    "InvalidTransition",
    "KeyConflict",
    "LimitExceeded",
    "LocalServer",
    "Message",
    "NotFound",
    "Page",
    "PayloadTooLarge",
    "ProtocolError",
    "QuotaExceeded",
    "Session",
    "SessionClosed",
    "SessionNotFound",
    "Stats",
    "Unauthorized",
    "Unavailable",
    "__version__",
    "find_binary",
    "hash_bytes",
]
