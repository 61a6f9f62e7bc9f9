"""An OpenAI Agents SDK session backed by a Cairn server: :class:`CairnSession`, passed as
``session=`` to ``Runner.run``, with branches (forks of a conversation at a turn).

One-line swap::

    # before: session = SQLiteSession("user-42", "conversations.db")
    session = CairnSession("user-42", url="http://127.0.0.1:8080")
    result = await Runner.run(agent, "Hello", session=session)

How it maps onto Cairn: a conversation is the Cairn session with key
``openai-agents:<session_id>`` and every item is one message of that session's conversation
(``POST /v1/sessions/{id}/messages``; the item JSON is the message text, its role ``user``,
``assistant``, ``system`` or ``tool`` for calls and their outputs). Reading the last N items is
one request (``GET .../messages?last=N``). A message written by other Cairn tools as plain text
reads as ``{"role": ..., "content": text}``.

Branches: :meth:`CairnSession.branch` forks the current branch (a Cairn fork: new records,
no content copied) and drops from the fork the items from a given user turn on, so the
conversation can go another way from there; :meth:`CairnSession.list_branches` and
:meth:`CairnSession.switch_branch` list them and choose which one the session reads and
writes. The current branch is kept in the store, so another process continues on it.

Importing ``cairn_store`` does not import the Agents SDK; importing this module does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from agents.memory.session import SessionABC
from agents.memory.session_settings import SessionSettings, resolve_session_limit

from ._client import Client
from ._content import hash_bytes
from ._errors import NotFound
from ._models import Message, Session

__all__ = ["Branch", "CairnSession"]

KEY_PREFIX = "openai-agents:"
MAIN = "main"
T = TypeVar("T")

_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}


@dataclass(frozen=True)
class Branch:
    """One branch of a conversation."""

    name: str
    """The branch name (``main`` for the conversation as first created)."""
    cairn_session: str
    """The id of the Cairn session that holds the branch's items."""
    parent: str | None
    """The branch it was forked from (None for ``main``)."""
    from_turn: int | None
    """The user turn it was forked at: it holds the items before that turn."""
    created_at: datetime


def _role(item: Any) -> str:
    if isinstance(item, dict):
        r = item.get("role")
        if isinstance(r, str) and r in _ROLES and item.get("type", "message") == "message":
            return _ROLES[r]
    return "tool"


def _item(m: Message) -> Any:
    try:
        v = json.loads(m.content)
    except json.JSONDecodeError:
        v = None
    if isinstance(v, dict) and ("type" in v or "role" in v):
        return v
    # A plain-text message written by another Cairn client.
    return {"role": m.role if m.role != "tool" else "assistant", "content": m.content}


def _is_user_turn(item: Any) -> bool:
    return isinstance(item, dict) and item.get("role") == "user" and item.get("type", "message") == "message"


class CairnSession(SessionABC):
    """Conversation memory for the OpenAI Agents SDK in Cairn (see the module docs).

    ``url`` defaults to ``$CAIRN_SERVER`` and ``token`` to ``$CAIRN_TOKEN``; or pass a ready
    :class:`~cairn_store.Client` as ``client``. ``session_settings`` works as for the SDK's own
    sessions (its ``limit`` is the default of :meth:`get_items`).
    """

    session_settings: SessionSettings | None = None

    def __init__(
        self,
        session_id: str,
        *,
        url: str | None = None,
        client: Client | None = None,
        token: str | None = None,
        session_settings: SessionSettings | None = None,
    ) -> None:
        if not isinstance(session_id, str) or not session_id:
            raise ValueError("session_id must be a non-empty string")
        self.session_id = session_id
        self.session_settings = session_settings
        self.client = client if client is not None else Client(url or os.environ.get("CAIRN_SERVER"), token=token)
        self._lock = threading.Lock()
        self._root: Session | None = None
        self._current: tuple[str, str] | None = None  # (branch name, cairn session id)

    # ------------------------------------------------------------------------ plumbing

    @property
    def key(self) -> str:
        """The Cairn session key of the conversation's ``main`` branch."""
        return KEY_PREFIX + self.session_id

    def _tag(self) -> str:
        return "oa-conv:" + hash_bytes(self.session_id.encode())[:32]

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        # The sync client in a worker thread: works from any event loop the SDK runs in.
        return await asyncio.to_thread(fn, *args)

    def _root_session(self) -> Session:
        if self._root is None:
            self._root = self.client.session_by_key(
                self.key,
                name=f"openai-agents {self.session_id}",
                tags=[self._tag()],
                metadata={"oa_branch": MAIN, "oa_current": MAIN},
            )
        return self._root

    def _branches(self) -> list[Branch]:
        out: list[Branch] = []
        for s in self.client.iter_sessions(tags=[self._tag()]):
            name = s.metadata.get("oa_branch")
            if not isinstance(name, str):
                continue
            if name == MAIN and s.key != self.key:
                continue  # another conversation whose id hashed to the same tag
            if name != MAIN and s.metadata.get("oa_conversation") != self.session_id:
                continue
            out.append(Branch(name, s.id, s.metadata.get("oa_parent"), s.metadata.get("oa_turn"), s.created_at))
        out.sort(key=lambda b: (b.name != MAIN, b.created_at))
        return out

    def _branch_id(self, name: str) -> str:
        root = self._root_session()
        if name == MAIN:
            return root.id
        for b in self._branches():
            if b.name == name:
                return b.cairn_session
        raise KeyError(f"conversation {self.session_id!r} has no branch {name!r}; list_branches() names them")

    def _target(self) -> str:
        """The Cairn session of the current branch (as the store records it)."""
        with self._lock:
            if self._current is not None:
                return self._current[1]
        root = self._root_session()
        name = root.metadata.get("oa_current", MAIN)
        try:
            sid = self._branch_id(name if isinstance(name, str) else MAIN)
        except KeyError:
            name, sid = MAIN, root.id  # the recorded branch was deleted: back to main
        with self._lock:
            self._current = (str(name), sid)
        return sid

    # ------------------------------------------------------------------------ sync bodies

    def _get(self, limit: int | None) -> list[Any]:
        n = resolve_session_limit(limit, self.session_settings)
        if n is not None and n < 0:
            n = None
        if n == 0:
            return []
        return [_item(m) for m in self.client.history(self._target(), last=n)]

    def _add(self, items: list[Any]) -> None:
        sid = self._target()
        for it in items:
            data = it if isinstance(it, dict) else dict(it)
            kind = data.get("type", "message")
            self.client.say(sid, _role(data), json.dumps(data, separators=(",", ":")), metadata={"oa_type": str(kind)})

    def _pop(self) -> Any | None:
        sid = self._target()
        for _ in range(8):
            last = self.client.history(sid, last=1)
            if not last:
                return None
            try:
                self.client.delete_artifact(last[0].artifact_id)
            except NotFound:
                continue  # another writer popped it first: take the next one
            return _item(last[0])
        raise RuntimeError(f"pop_item on {self.session_id!r} kept losing to concurrent pops; try again")

    def _clear(self) -> None:
        for m in self.client.history(self._target()):
            with contextlib.suppress(NotFound):
                self.client.delete_artifact(m.artifact_id)

    def _branch(self, name: str, turn: int | None, switch: bool) -> Branch:
        if not name or name == MAIN:
            raise ValueError(f"a branch needs a name other than {MAIN!r}")
        if turn is not None and turn < 0:
            raise ValueError("turn counts user messages from 0; it cannot be negative")
        if any(b.name == name for b in self._branches()):
            raise ValueError(f"conversation {self.session_id!r} already has a branch {name!r}")
        self._root_session()
        with self._lock:
            current = self._current
        src = self._target()
        parent = current[0] if current else MAIN
        cut: int | None = None  # position of the first item the branch leaves out
        if turn is not None:
            users = [i for i, m in enumerate(self.client.history(src)) if _is_user_turn(_item(m))]
            if turn >= len(users):
                raise ValueError(
                    f"branch {parent!r} has {len(users)} user turns (0 to {len(users) - 1}); "
                    f"turn {turn} does not exist (omit turn to branch from the end)"
                )
            cut = users[turn]
        fork = self.client.fork(
            src,
            name=f"openai-agents {self.session_id} ({name})",
            tags=[self._tag()],
            metadata={"oa_branch": name, "oa_conversation": self.session_id, "oa_parent": parent, "oa_turn": turn},
        )
        if cut is not None:
            for m in self.client.history(fork.id)[cut:]:
                self.client.delete_artifact(m.artifact_id)
        if switch:
            self._switch(name, fork.id)
        return Branch(name, fork.id, parent, turn, fork.created_at)

    def _switch(self, name: str, sid: str | None = None) -> None:
        sid = sid or self._branch_id(name)
        root = self._root_session()
        self.client.update_session(root.id, metadata={"oa_current": name})
        with self._lock:
            self._current = (name, sid)

    # ------------------------------------------------------------------------ SessionABC

    async def get_items(self, limit: int | None = None) -> list[Any]:
        """The current branch's items, oldest first (the latest ``limit`` when given)."""
        return await self._run(self._get, limit)

    async def add_items(self, items: list[Any]) -> None:
        """Appends items to the current branch, in order."""
        await self._run(self._add, list(items))

    async def pop_item(self) -> Any | None:
        """Removes and returns the latest item of the current branch (None if it is empty)."""
        return await self._run(self._pop)

    async def clear_session(self) -> None:
        """Removes every item of the current branch (other branches keep theirs)."""
        await self._run(self._clear)

    # ------------------------------------------------------------------------ branches

    @property
    def current_branch(self) -> str:
        """The name of the branch this object reads and writes (as last loaded or switched)."""
        with self._lock:
            return self._current[0] if self._current else MAIN

    async def branch(self, name: str, *, turn: int | None = None, switch: bool = True) -> Branch:
        """Forks the current branch as ``name``. With ``turn`` (user messages counted from 0),
        the branch keeps only the items before that user turn, so the conversation can take
        another way from there; without it, the branch starts as a copy of the whole current
        branch. Nothing is copied: a Cairn fork makes new records pointing at the same content.
        With ``switch`` (the default) the session continues on the new branch.
        """
        return await self._run(self._branch, name, turn, switch)

    async def list_branches(self) -> list[Branch]:
        """Every branch of the conversation, ``main`` first, then by creation time."""

        def run() -> list[Branch]:
            self._root_session()
            return self._branches()

        return await self._run(run)

    async def switch_branch(self, name: str) -> None:
        """Makes ``name`` the current branch (recorded in the store for other processes too)."""
        await self._run(self._switch, name)
