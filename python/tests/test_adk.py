"""Google ADK services on a real ``cairn serve``: the artifact and session contracts, the
``cairn://`` registration through ADK's own service factory, and a real ``Runner`` with an
offline model that calls a tool."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from google.adk.agents import LlmAgent
from google.adk.errors.already_exists_error import AlreadyExistsError
from google.adk.errors.input_validation_error import InputValidationError
from google.adk.events.event import Event
from google.adk.events.event_actions import EventActions
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.adk.runners import Runner
from google.adk.sessions.base_session_service import GetSessionConfig
from google.adk.tools.tool_context import ToolContext
from google.genai import types

from cairn_store import Client, LocalServer, hash_bytes
from cairn_store.adk import CairnArtifactService, CairnSessionService, StaleSessionError, client_from_uri, register


def cairn_uri(server: LocalServer) -> str:
    return f"cairn://{urlparse(server.url).netloc}"


@pytest.fixture
def artifacts(server: LocalServer) -> CairnArtifactService:
    return CairnArtifactService(cairn_uri(server))


@pytest.fixture
def sessions(server: LocalServer) -> CairnSessionService:
    return CairnSessionService(cairn_uri(server))


def uniq(prefix: str) -> str:
    return f"{prefix}-{time.time_ns()}"


# ---------------------------------------------------------------------------------- artifacts


async def test_artifact_versions_metadata_and_canonical_uri(artifacts: CairnArtifactService, client: Client) -> None:
    app, user, sid = uniq("app"), "u1", "s1"
    png = types.Part.from_bytes(data=b"\x89PNG fake image", mime_type="image/png")
    v0 = await artifacts.save_artifact(app_name=app, user_id=user, session_id=sid, filename="img.png", artifact=png)
    v1 = await artifacts.save_artifact(
        app_name=app,
        user_id=user,
        session_id=sid,
        filename="img.png",
        artifact=types.Part.from_bytes(data=b"second", mime_type="image/png"),
        custom_metadata={"source": "camera", "n": 2},
    )
    assert (v0, v1) == (0, 1)
    latest = await artifacts.load_artifact(app_name=app, user_id=user, session_id=sid, filename="img.png")
    assert latest is not None and latest.inline_data is not None
    assert latest.inline_data.data == b"second" and latest.inline_data.mime_type == "image/png"
    first = await artifacts.load_artifact(app_name=app, user_id=user, session_id=sid, filename="img.png", version=0)
    assert first is not None and first.inline_data is not None and first.inline_data.data == b"\x89PNG fake image"
    assert (
        await artifacts.load_artifact(app_name=app, user_id=user, session_id=sid, filename="img.png", version=7) is None
    )
    assert await artifacts.list_versions(app_name=app, user_id=user, session_id=sid, filename="img.png") == [0, 1]

    infos = await artifacts.list_artifact_versions(app_name=app, user_id=user, session_id=sid, filename="img.png")
    assert [i.version for i in infos] == [0, 1]
    assert infos[1].custom_metadata == {"source": "camera", "n": 2} and infos[0].custom_metadata == {}
    assert infos[1].mime_type == "image/png"
    assert infos[1].canonical_uri.startswith(cairn_uri_of(artifacts) + "/v1/artifacts/")
    assert infos[1].canonical_uri.endswith("#blake3=" + hash_bytes(b"second"))
    # The canonical URI names the Cairn artifact: its content is the saved bytes.
    artifact_id = infos[1].canonical_uri.split("/v1/artifacts/")[1].split("/")[0]
    assert client.read(artifact_id) == b"second"
    one = await artifacts.get_artifact_version(
        app_name=app, user_id=user, session_id=sid, filename="img.png", version=0
    )
    assert one is not None and one.version == 0 and one.canonical_uri == infos[0].canonical_uri
    latest_info = await artifacts.get_artifact_version(app_name=app, user_id=user, session_id=sid, filename="img.png")
    assert latest_info is not None and latest_info.version == 1


def cairn_uri_of(svc: CairnArtifactService) -> str:
    return svc.base


async def test_text_and_file_data_parts_round_trip(artifacts: CairnArtifactService) -> None:
    app = uniq("app")
    await artifacts.save_artifact(
        app_name=app, user_id="u", session_id="s", filename="notes.txt", artifact=types.Part(text="héllo")
    )
    got = await artifacts.load_artifact(app_name=app, user_id="u", session_id="s", filename="notes.txt")
    assert got is not None and got.text == "héllo"
    ref = types.Part(file_data=types.FileData(file_uri="gs://bucket/x.pdf", mime_type="application/pdf"))
    await artifacts.save_artifact(app_name=app, user_id="u", session_id="s", filename="doc", artifact=ref)
    got = await artifacts.load_artifact(app_name=app, user_id="u", session_id="s", filename="doc")
    assert got is not None and got.file_data is not None and got.file_data.file_uri == "gs://bucket/x.pdf"
    # Dicts with camelCase keys are accepted, as ADK's contract says.
    await artifacts.save_artifact(
        app_name=app,
        user_id="u",
        session_id="s",
        filename="d.bin",
        artifact={"inlineData": {"data": b"xyz", "mimeType": "application/octet-stream"}},
    )
    got = await artifacts.load_artifact(app_name=app, user_id="u", session_id="s", filename="d.bin")
    assert got is not None and got.inline_data is not None and got.inline_data.data == b"xyz"


async def test_user_scoped_names_list_and_delete(artifacts: CairnArtifactService) -> None:
    app = uniq("app")
    part = types.Part(text="profile")
    await artifacts.save_artifact(app_name=app, user_id="u", session_id="s1", filename="user:profile", artifact=part)
    await artifacts.save_artifact(app_name=app, user_id="u", session_id="s1", filename="a.txt", artifact=part)
    await artifacts.save_artifact(app_name=app, user_id="u", session_id="s2", filename="b.txt", artifact=part)
    # user: names are visible from every session of the user, and without a session.
    assert await artifacts.list_artifact_keys(app_name=app, user_id="u", session_id="s1") == ["a.txt", "user:profile"]
    assert await artifacts.list_artifact_keys(app_name=app, user_id="u", session_id="s2") == ["b.txt", "user:profile"]
    assert await artifacts.list_artifact_keys(app_name=app, user_id="u") == ["user:profile"]
    assert await artifacts.list_artifact_keys(app_name=app, user_id="other", session_id="s1") == []
    got = await artifacts.load_artifact(app_name=app, user_id="u", session_id="s2", filename="user:profile")
    assert got is not None and got.text == "profile"
    # Another user does not see it.
    assert await artifacts.load_artifact(app_name=app, user_id="v", session_id="s1", filename="user:profile") is None

    await artifacts.delete_artifact(app_name=app, user_id="u", session_id="s1", filename="a.txt")
    assert await artifacts.load_artifact(app_name=app, user_id="u", session_id="s1", filename="a.txt") is None
    assert await artifacts.list_versions(app_name=app, user_id="u", session_id="s1", filename="a.txt") == []
    assert await artifacts.list_artifact_keys(app_name=app, user_id="u", session_id="s1") == ["user:profile"]
    # Deleting what does not exist is not an error.
    await artifacts.delete_artifact(app_name=app, user_id="u", session_id="s1", filename="a.txt")


async def test_bad_artifact_input_is_refused_clearly(artifacts: CairnArtifactService) -> None:
    with pytest.raises(InputValidationError, match="Session ID"):
        await artifacts.save_artifact(app_name="a", user_id="u", filename="x", artifact=types.Part(text="t"))
    with pytest.raises(InputValidationError, match="Not supported artifact type"):
        await artifacts.save_artifact(app_name="a", user_id="u", session_id="s", filename="x", artifact=types.Part())
    with pytest.raises(InputValidationError, match="user_id"):
        await artifacts.load_artifact(app_name="a", user_id="", session_id="s", filename="x")


async def test_concurrent_saves_get_distinct_versions(artifacts: CairnArtifactService) -> None:
    app = uniq("app")

    async def save(i: int) -> int:
        return await artifacts.save_artifact(
            app_name=app, user_id="u", session_id="s", filename="log.txt", artifact=types.Part(text=f"line {i}")
        )

    got = await asyncio.gather(*(save(i) for i in range(8)))
    assert sorted(got) == list(range(8))
    texts = set()
    for v in range(8):
        p = await artifacts.load_artifact(app_name=app, user_id="u", session_id="s", filename="log.txt", version=v)
        assert p is not None and p.text is not None
        texts.add(p.text)
    assert texts == {f"line {i}" for i in range(8)}


# ----------------------------------------------------------------------------------- sessions


async def test_state_scopes(sessions: CairnSessionService) -> None:
    app = uniq("app")
    s = await sessions.create_session(
        app_name=app,
        user_id="u",
        state={"k": 1, "app:theme": "dark", "user:lang": "fr", "temp:scratch": "x", "none": None},
    )
    assert s.state == {"k": 1, "none": None, "app:theme": "dark", "user:lang": "fr"}
    again = await sessions.get_session(app_name=app, user_id="u", session_id=s.id)
    assert again is not None and again.state == s.state and again.id == s.id
    # Another session of the same user shares user: and app: state, not session state.
    s2 = await sessions.create_session(app_name=app, user_id="u")
    assert s2.state == {"app:theme": "dark", "user:lang": "fr"}
    # Another user sees only app: state.
    s3 = await sessions.create_session(app_name=app, user_id="v")
    assert s3.state == {"app:theme": "dark"}
    assert await sessions.get_user_state(app_name=app, user_id="u") == {"lang": "fr"}
    assert await sessions.get_user_state(app_name=app, user_id="nobody") == {}

    ev = Event(
        author="agent",
        invocation_id="i1",
        actions=EventActions(state_delta={"k": 2, "app:theme": "light", "user:lang": "de", "temp:t": 1}),
    )
    await sessions.append_event(s3, ev)
    assert s3.state["temp:t"] == 1  # temp state lives in memory for the invocation ...
    s3b = await sessions.get_session(app_name=app, user_id="v", session_id=s3.id)
    assert s3b is not None and "temp:t" not in s3b.state  # ... and is never stored
    assert s3b.state == {"k": 2, "app:theme": "light", "user:lang": "de"}
    assert s3b.events[0].actions.state_delta == {"k": 2, "app:theme": "light", "user:lang": "de"}
    s1b = await sessions.get_session(app_name=app, user_id="u", session_id=s.id)
    assert s1b is not None and s1b.state["app:theme"] == "light" and s1b.state["user:lang"] == "fr"


async def test_create_get_list_delete(sessions: CairnSessionService) -> None:
    app = uniq("app")
    a = await sessions.create_session(app_name=app, user_id="u", session_id="fixed")
    with pytest.raises(AlreadyExistsError):
        await sessions.create_session(app_name=app, user_id="u", session_id="fixed")
    b = await sessions.create_session(app_name=app, user_id="u")
    c = await sessions.create_session(app_name=app, user_id="w")
    await sessions.append_event(a, Event(author="user", invocation_id="i"))  # a is now the most recent
    listed = await sessions.list_sessions(app_name=app, user_id="u")
    assert [x.id for x in listed.sessions] == [b.id, "fixed"]
    assert all(x.events == [] for x in listed.sessions)
    everyone = await sessions.list_sessions(app_name=app)
    assert {x.id for x in everyone.sessions} == {"fixed", b.id, c.id}
    assert await sessions.get_session(app_name=app, user_id="u", session_id="nope") is None
    assert await sessions.get_session(app_name=app, user_id="w", session_id="fixed") is None
    await sessions.delete_session(app_name=app, user_id="u", session_id="fixed")
    assert await sessions.get_session(app_name=app, user_id="u", session_id="fixed") is None
    await sessions.delete_session(app_name=app, user_id="u", session_id="fixed")  # no-op
    assert [x.id for x in (await sessions.list_sessions(app_name=app, user_id="u")).sessions] == [b.id]


async def test_get_session_config_pages_events(sessions: CairnSessionService) -> None:
    app = uniq("app")
    s = await sessions.create_session(app_name=app, user_id="u")
    base = time.time()
    for i in range(7):
        await sessions.append_event(
            s,
            Event(
                author="agent",
                invocation_id=f"i{i}",
                timestamp=base + i,
                content=types.Content(role="model", parts=[types.Part(text=f"m{i}")]),
            ),
        )
    full = await sessions.get_session(app_name=app, user_id="u", session_id=s.id)
    assert full is not None and [e.invocation_id for e in full.events] == [f"i{i}" for i in range(7)]
    assert full.events[3].content is not None and full.events[3].content.parts[0].text == "m3"  # type: ignore[index]
    last3 = await sessions.get_session(
        app_name=app, user_id="u", session_id=s.id, config=GetSessionConfig(num_recent_events=3)
    )
    assert last3 is not None and [e.invocation_id for e in last3.events] == ["i4", "i5", "i6"]
    after = await sessions.get_session(
        app_name=app, user_id="u", session_id=s.id, config=GetSessionConfig(after_timestamp=base + 5)
    )
    assert after is not None and [e.invocation_id for e in after.events] == ["i5", "i6"]
    both = await sessions.get_session(
        app_name=app,
        user_id="u",
        session_id=s.id,
        config=GetSessionConfig(num_recent_events=4, after_timestamp=base + 4),
    )
    assert both is not None and [e.invocation_id for e in both.events] == ["i4", "i5", "i6"]
    none = await sessions.get_session(
        app_name=app, user_id="u", session_id=s.id, config=GetSessionConfig(num_recent_events=0)
    )
    assert none is not None and none.events == []
    # A session loaded with no events can still append (its revision is known).
    await sessions.append_event(none, Event(author="user", invocation_id="i7"))
    full = await sessions.get_session(app_name=app, user_id="u", session_id=s.id)
    assert full is not None and len(full.events) == 8


async def test_large_events_are_stored_as_content(sessions: CairnSessionService, client: Client) -> None:
    app = uniq("app")
    s = await sessions.create_session(app_name=app, user_id="u")
    big = "x" * (80 << 10)  # over the inline limit: the event lives only in the content
    await sessions.append_event(
        s, Event(author="tool", invocation_id="big", content=types.Content(role="user", parts=[types.Part(text=big)]))
    )
    await sessions.append_event(s, Event(author="a", invocation_id="small"))
    got = await sessions.get_session(app_name=app, user_id="u", session_id=s.id)
    assert got is not None and [e.invocation_id for e in got.events] == ["big", "small"]
    assert got.events[0].content is not None and got.events[0].content.parts[0].text == big  # type: ignore[index]
    cairn = client.find_session(sessions._session_key(app, "u", s.id))
    assert cairn is not None
    records = {a.name: a for a in client.list_artifacts_page(cairn.id).items}
    assert "e" not in records["adk/e/000000000001"].metadata and "e" in records["adk/e/000000000002"].metadata


async def test_stale_session_is_refused_and_reload_continues(sessions: CairnSessionService, client: Client) -> None:
    app = uniq("app")
    s = await sessions.create_session(app_name=app, user_id="u", state={"n": 0})
    one = await sessions.get_session(app_name=app, user_id="u", session_id=s.id)
    two = await sessions.get_session(app_name=app, user_id="u", session_id=s.id)
    assert one is not None and two is not None
    # Normal flow: the same object appends many times without a stale error.
    for i in range(3):
        await sessions.append_event(
            one, Event(author="a", invocation_id=f"x{i}", actions=EventActions(state_delta={"n": i}))
        )
    with pytest.raises(StaleSessionError, match="another writer"):
        await sessions.append_event(
            two, Event(author="b", invocation_id="late", actions=EventActions(state_delta={"n": 99}))
        )
    fresh = await sessions.get_session(app_name=app, user_id="u", session_id=s.id)
    assert fresh is not None
    assert [e.invocation_id for e in fresh.events] == ["x0", "x1", "x2"]  # the refused event is gone
    assert fresh.state["n"] == 2  # and its state delta was not applied
    await sessions.append_event(
        fresh, Event(author="b", invocation_id="retry", actions=EventActions(state_delta={"n": 3}))
    )
    final = await sessions.get_session(app_name=app, user_id="u", session_id=s.id)
    assert final is not None and [e.invocation_id for e in final.events][-1] == "retry" and final.state["n"] == 3


async def test_concurrent_sessions_of_one_user_do_not_conflict(sessions: CairnSessionService) -> None:
    app = uniq("app")
    a = await sessions.create_session(app_name=app, user_id="u")
    b = await sessions.create_session(app_name=app, user_id="u")

    async def run(s: Any, key: str) -> None:
        for i in range(4):
            await sessions.append_event(
                s, Event(author="x", invocation_id=f"{key}{i}", actions=EventActions(state_delta={f"user:{key}": i}))
            )

    await asyncio.gather(run(a, "a"), run(b, "b"))
    assert await sessions.get_user_state(app_name=app, user_id="u") == {"a": 3, "b": 3}


async def test_state_delta_of_a_stored_event_is_replayed_if_its_writer_stopped(
    sessions: CairnSessionService, client: Client
) -> None:
    """A writer that stored its event but stopped before it wrote the state delta: the next
    read replays the delta from the event (and writes it back)."""
    app = uniq("app")
    s = await sessions.create_session(app_name=app, user_id="u", state={"k": "old"})
    cairn = client.find_session(sessions._session_key(app, "u", s.id))
    assert cairn is not None
    ev = Event(author="a", invocation_id="i", actions=EventActions(state_delta={"k": "new"}))
    data = ev.model_dump(mode="json", exclude_none=True)
    import json

    client.put(cairn.id, "adk/e/000000000001", json.dumps(data).encode(), kind="adk_event", metadata={"e": data})
    got = await sessions.get_session(app_name=app, user_id="u", session_id=s.id)
    assert got is not None and got.state["k"] == "new" and len(got.events) == 1
    after = client.get_session(cairn.id)
    assert after.metadata["s:k"] == {"v": "new"} and after.metadata["adk_rev"] == 1


# --------------------------------------------------------------------------------- registration


def test_cairn_uri_registration_through_adks_service_factory(server: LocalServer, tmp_path: Path) -> None:
    from google.adk.cli.service_registry import load_services_module
    from google.adk.cli.utils.service_factory import (
        create_artifact_service_from_options,
        create_session_service_from_options,
    )

    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "services.yaml").write_text(
        "services:\n"
        "  - {scheme: cairn, type: artifact, class: cairn_store.adk.CairnArtifactService}\n"
        "  - {scheme: cairn, type: session, class: cairn_store.adk.CairnSessionService}\n"
    )
    load_services_module(str(agents))
    uri = cairn_uri(server)
    arts = create_artifact_service_from_options(base_dir=agents, artifact_service_uri=uri, strict_uri=True)
    sess = create_session_service_from_options(base_dir=agents, session_service_uri=uri)
    assert isinstance(arts, CairnArtifactService) and isinstance(sess, CairnSessionService)

    async def use() -> None:
        s = await sess.create_session(app_name=uniq("reg"), user_id="u")
        v = await arts.save_artifact(
            app_name=s.app_name, user_id="u", session_id=s.id, filename="f", artifact=types.Part(text="t")
        )
        assert v == 0
        got = await sess.get_session(app_name=s.app_name, user_id="u", session_id=s.id)
        assert got is not None

    asyncio.run(use())
    # register() (for a services.py) installs the same scheme.
    register()
    again = create_artifact_service_from_options(base_dir=agents, artifact_service_uri=uri, strict_uri=True)
    assert isinstance(again, CairnArtifactService)


def test_client_from_uri_forms() -> None:
    c, base = client_from_uri("cairn://tok@127.0.0.1:9")
    assert c.base_url == "http://127.0.0.1:9" and c.token == "tok" and base == "cairn://127.0.0.1:9"
    c, _ = client_from_uri("cairn://h:1?tls=1")
    assert c.base_url == "https://h:1"
    with pytest.raises(ValueError, match="not a Cairn URI"):
        client_from_uri("gs://bucket")


# --------------------------------------------------------------------------------- real Runner


def save_report(text: str, tool_context: ToolContext) -> dict[str, Any]:
    """Saves a report artifact and counts calls in user and app state."""
    tool_context.state["user:reports"] = tool_context.state.get("user:reports", 0) + 1
    tool_context.state["app:last_report"] = text
    tool_context.state["temp:draft"] = text
    return {"saved": True}


class ScriptedLlm(BaseLlm):
    """An offline model: the first turn calls ``save_report``; after the tool result it answers."""

    model: str = "scripted"

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        last = llm_request.contents[-1] if llm_request.contents else None
        answered = bool(last and last.parts and any(p.function_response for p in last.parts))
        if answered:
            yield LlmResponse(content=types.Content(role="model", parts=[types.Part(text="report saved")]))
        else:
            call = types.FunctionCall(name="save_report", args={"text": "quarterly numbers"}, id="call-1")
            yield LlmResponse(content=types.Content(role="model", parts=[types.Part(function_call=call)]))


class ArtifactTool:
    """A tool that saves an artifact through the tool context (and so through the service)."""

    @staticmethod
    async def attach(filename: str, tool_context: ToolContext) -> dict[str, Any]:
        """Attaches a file."""
        v = await tool_context.save_artifact(filename, types.Part(text="attached body"))
        return {"version": v}


def make_runner(server: LocalServer, app: str) -> tuple[Runner, CairnSessionService, CairnArtifactService]:
    agent = LlmAgent(name="reporter", model=ScriptedLlm(), instruction="save reports", tools=[save_report])
    sess = CairnSessionService(cairn_uri(server))
    arts = CairnArtifactService(cairn_uri(server))
    return Runner(app_name=app, agent=agent, session_service=sess, artifact_service=arts), sess, arts


async def test_real_runner_with_offline_model(server: LocalServer) -> None:
    app = uniq("runner")
    runner, sess, arts = make_runner(server, app)
    s = await sess.create_session(app_name=app, user_id="u")
    msg = types.Content(role="user", parts=[types.Part(text="save the report")])
    seen = [e async for e in runner.run_async(user_id="u", session_id=s.id, new_message=msg)]
    texts = [p.text for e in seen if e.content and e.content.parts for p in e.content.parts if p.text]
    assert "report saved" in texts
    # A second turn on the same session: no stale-session error in the normal flow.
    seen2 = [e async for e in runner.run_async(user_id="u", session_id=s.id, new_message=msg)]
    assert any(e.content and e.content.parts and e.content.parts[0].text == "report saved" for e in seen2)

    # A fresh service (another process would be the same) sees everything that was stored.
    other = CairnSessionService(cairn_uri(server))
    got = await other.get_session(app_name=app, user_id="u", session_id=s.id)
    assert got is not None
    calls = [
        p.function_call.name
        for e in got.events
        if e.content and e.content.parts
        for p in e.content.parts
        if p.function_call
    ]
    results = [
        p.function_response.response
        for e in got.events
        if e.content and e.content.parts
        for p in e.content.parts
        if p.function_response
    ]
    assert calls == ["save_report", "save_report"] and results == [{"saved": True}, {"saved": True}]
    assert [e.author for e in got.events].count("user") == 2
    assert got.state["user:reports"] == 2 and got.state["app:last_report"] == "quarterly numbers"
    assert "temp:draft" not in got.state


def test_sync_runner_run_uses_its_own_event_loop(server: LocalServer) -> None:
    """``Runner.run`` drives the async runner in a thread with its own loop; the services
    must work there too."""
    app = uniq("syncrunner")
    agent = LlmAgent(name="att", model=AttachLlm(), instruction="attach", tools=[ArtifactTool.attach])
    sess = CairnSessionService(cairn_uri(server))
    arts = CairnArtifactService(cairn_uri(server))
    runner = Runner(app_name=app, agent=agent, session_service=sess, artifact_service=arts)
    s = asyncio.run(sess.create_session(app_name=app, user_id="u"))
    msg = types.Content(role="user", parts=[types.Part(text="attach it")])
    events = list(runner.run(user_id="u", session_id=s.id, new_message=msg))
    assert any(e.content and e.content.parts and e.content.parts[0].text == "attached" for e in events)
    part = asyncio.run(arts.load_artifact(app_name=app, user_id="u", session_id=s.id, filename="notes.txt"))
    assert part is not None and part.text == "attached body"
    keys = asyncio.run(arts.list_artifact_keys(app_name=app, user_id="u", session_id=s.id))
    assert keys == ["notes.txt"]


class AttachLlm(BaseLlm):
    """An offline model that calls ``attach`` once, then answers."""

    model: str = "attach"

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        last = llm_request.contents[-1] if llm_request.contents else None
        if last and last.parts and any(p.function_response for p in last.parts):
            yield LlmResponse(content=types.Content(role="model", parts=[types.Part(text="attached")]))
        else:
            call = types.FunctionCall(name="attach", args={"filename": "notes.txt"}, id="call-a")
            yield LlmResponse(content=types.Content(role="model", parts=[types.Part(function_call=call)]))


# ------------------------------------------------------------------------- `adk api_server`


def test_adk_api_server_runs_on_cairn_uris(server: LocalServer, tmp_path: Path) -> None:
    """``adk api_server`` (``adk web`` without the UI) started with ``cairn://`` URIs and the
    services.yaml of the README keeps its sessions and artifacts in Cairn."""
    import json as _json
    import socket
    import subprocess
    import sys
    import urllib.request

    agents = tmp_path / "agents"
    (agents / "demo").mkdir(parents=True)
    (agents / "services.yaml").write_text(
        "services:\n"
        "  - {scheme: cairn, type: artifact, class: cairn_store.adk.CairnArtifactService}\n"
        "  - {scheme: cairn, type: session, class: cairn_store.adk.CairnSessionService}\n"
    )
    (agents / "demo" / "__init__.py").write_text("from . import agent\n")
    (agents / "demo" / "agent.py").write_text(
        "from google.adk.agents import LlmAgent\nroot_agent = LlmAgent(name='demo', model='gemini-2.0-flash')\n"
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    adk = Path(sys.executable).with_name("adk")
    uri = cairn_uri(server)
    cmd = [str(adk), "api_server", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--session_service_uri", uri, "--artifact_service_uri", uri, str(agents)]
    log = tmp_path / "adk.log"  # a file, not a pipe nobody reads (ADK logs every request)
    logf = log.open("w")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=logf)
    base = f"http://127.0.0.1:{port}"

    def call(method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else _json.dumps(body).encode()
        req = urllib.request.Request(
            base + path, data=data, method=method, headers={"content-type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return _json.loads(resp.read())

    try:
        for _ in range(240):  # up to 60 s for ADK to import and start
            try:
                call("GET", "/list-apps")
                break
            except OSError:
                if proc.poll() is not None:
                    raise AssertionError(
                        f"adk api_server exited: {proc.stderr.read() if proc.stderr else ''}"
                    ) from None
                time.sleep(0.25)
        created = call("POST", "/apps/demo/users/u1/sessions", {"state": {"user:lang": "fr", "k": "v"}})
        sid = created["id"]
        assert created["state"] == {"k": "v", "user:lang": "fr"}
        # The session is a Cairn session: found by its key with a plain client.
        with server.client() as c:
            s = c.find_session(f"adk:session:demo/u1/{sid}")
            assert s is not None and s.metadata["s:k"] == {"v": "v"}
        # An artifact saved through the Cairn service is what the ADK server lists and serves.
        arts = CairnArtifactService(uri)
        asyncio.run(
            arts.save_artifact(
                app_name="demo", user_id="u1", session_id=sid, filename="r.txt", artifact=types.Part(text="hi")
            )
        )
        assert call("GET", f"/apps/demo/users/u1/sessions/{sid}/artifacts") == ["r.txt"]
        got = call("GET", f"/apps/demo/users/u1/sessions/{sid}/artifacts/r.txt")
        assert got["text"] == "hi"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        logf.close()
