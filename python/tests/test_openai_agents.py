"""OpenAI Agents SDK session on a real ``cairn serve``: the Session protocol, a real
``Runner`` with an offline fake model that calls a tool, and branches."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from agents import Agent, RunConfig, Runner, function_tool, set_tracing_disabled
from agents.items import ModelResponse
from agents.memory.session_settings import SessionSettings
from agents.models.interface import Model
from agents.usage import Usage
from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText

from cairn_store import Client, LocalServer
from cairn_store.openai_agents import CairnSession

set_tracing_disabled(True)  # no trace export: the tests make no outside connection
NO_TRACING = RunConfig(tracing_disabled=True)


def uniq(prefix: str) -> str:
    return f"{prefix}-{time.time_ns()}"


@pytest.fixture
def session(server: LocalServer) -> CairnSession:
    return CairnSession(uniq("conv"), url=server.url)


# ------------------------------------------------------------------------------ the protocol


async def test_items_limit_pop_and_clear(session: CairnSession) -> None:
    items: list[Any] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "42"},
    ]
    assert await session.get_items() == []
    assert await session.pop_item() is None
    await session.add_items(items[:2])
    await session.add_items(items[2:])
    assert await session.get_items() == items
    assert await session.get_items(limit=2) == items[2:]
    assert await session.get_items(limit=0) == []
    assert await session.pop_item() == items[3]
    assert await session.get_items() == items[:3]
    await session.clear_session()
    assert await session.get_items() == []
    await session.add_items([items[0]])
    assert await session.get_items() == [items[0]]


async def test_session_settings_limit_is_the_default(server: LocalServer) -> None:
    s = CairnSession(uniq("conv"), url=server.url, session_settings=SessionSettings(limit=1))
    await s.add_items([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    assert await s.get_items() == [{"role": "user", "content": "b"}]
    assert len(await s.get_items(limit=5)) == 2


async def test_items_persist_across_objects_and_plain_cairn_messages_read_as_items(
    session: CairnSession, client: Client, server: LocalServer
) -> None:
    await session.add_items([{"role": "user", "content": "from the sdk"}])
    root = client.find_session(session.key)
    assert root is not None
    client.say(root.id, "assistant", "plain text from the Cairn CLI")
    again = CairnSession(session.session_id, url=server.url)
    assert await again.get_items() == [
        {"role": "user", "content": "from the sdk"},
        {"role": "assistant", "content": "plain text from the Cairn CLI"},
    ]
    # Each item is a message of the Cairn session's conversation, JSON as its text.
    history = client.history(root.id)
    assert [m.role for m in history] == ["user", "assistant"]
    assert json.loads(history[0].content) == {"role": "user", "content": "from the sdk"}


def test_bad_session_id_is_refused(server: LocalServer) -> None:
    with pytest.raises(ValueError, match="session_id"):
        CairnSession("", url=server.url)


# --------------------------------------------------------------------------------- Runner


@function_tool
def weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


class FakeModel(Model):
    """An offline model: calls ``weather`` for the city named in the latest user message, then
    answers with the tool's output. Records every input it was given."""

    def __init__(self) -> None:
        self.inputs: list[list[Any]] = []

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[Any],
        model_settings: Any,
        tools: list[Any],
        output_schema: Any,
        handoffs: list[Any],
        tracing: Any,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: Any,
    ) -> ModelResponse:
        items = [{"role": "user", "content": input}] if isinstance(input, str) else list(input)
        self.inputs.append(items)
        last = items[-1]
        n = len(self.inputs)
        if isinstance(last, dict) and last.get("type") == "function_call_output":
            msg = ResponseOutputMessage(
                id=f"msg-{n}",
                role="assistant",
                status="completed",
                type="message",
                content=[ResponseOutputText(text=f"it is {last['output']}", type="output_text", annotations=[])],
            )
            return ModelResponse(output=[msg], usage=Usage(), response_id=None)
        city = str(last.get("content", "")).split()[-1] if isinstance(last, dict) else "nowhere"
        call = ResponseFunctionToolCall(
            id=f"fc-{n}",
            call_id=f"call-{n}",
            name="weather",
            arguments=json.dumps({"city": city}),
            type="function_call",
            status="completed",
        )
        return ModelResponse(output=[call], usage=Usage(), response_id=None)

    async def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise NotImplementedError("the fake model does not stream")
        yield  # pragma: no cover


def agent_with(model: FakeModel) -> Agent:
    return Agent(name="forecaster", instructions="answer with the weather", model=model, tools=[weather])


async def test_runner_keeps_history_in_cairn(session: CairnSession, server: LocalServer) -> None:
    model = FakeModel()
    agent = agent_with(model)
    r1 = await Runner.run(agent, "weather in Paris", session=session, run_config=NO_TRACING)
    assert r1.final_output == "it is sunny in Paris"
    r2 = await Runner.run(agent, "and in Oslo", session=session, run_config=NO_TRACING)
    assert r2.final_output == "it is sunny in Oslo"
    # The second run's first model call saw the whole first turn, read back from Cairn.
    second_turn_input = model.inputs[2]
    assert any(isinstance(i, dict) and i.get("content") == "weather in Paris" for i in second_turn_input)
    assert any(isinstance(i, dict) and i.get("type") == "function_call_output" for i in second_turn_input)

    items = await CairnSession(session.session_id, url=server.url).get_items()
    kinds = [i.get("type", "message") if i.get("role") != "user" else "user" for i in items]
    assert kinds == ["user", "function_call", "function_call_output", "message"] * 2
    assert items[4] == {"role": "user", "content": "and in Oslo"}


# ------------------------------------------------------------------------------- branches


async def test_branch_from_a_turn_list_and_switch(session: CairnSession, server: LocalServer, client: Client) -> None:
    model = FakeModel()
    agent = agent_with(model)
    await Runner.run(agent, "weather in Paris", session=session, run_config=NO_TRACING)
    await Runner.run(agent, "weather in Oslo", session=session, run_config=NO_TRACING)
    main_items = await session.get_items()
    assert len(main_items) == 8

    b = await session.branch("rome", turn=1)  # keep turn 0, ask turn 1 differently
    assert b.parent == "main" and b.from_turn == 1 and session.current_branch == "rome"
    assert await session.get_items() == main_items[:4]
    r = await Runner.run(agent, "weather in Rome", session=session, run_config=NO_TRACING)
    assert r.final_output == "it is sunny in Rome"
    rome_items = await session.get_items()
    assert rome_items[:4] == main_items[:4] and rome_items[4] == {"role": "user", "content": "weather in Rome"}

    branches = await session.list_branches()
    assert [x.name for x in branches] == ["main", "rome"]
    # The branch is a Cairn fork of the conversation: a child session with lineage.
    fork = client.get_session(branches[1].cairn_session)
    assert fork.parent_id == branches[0].cairn_session

    # Another process picks up the current branch from the store.
    other = CairnSession(session.session_id, url=server.url)
    assert await other.get_items() == rome_items and other.current_branch == "rome"

    await session.switch_branch("main")
    assert await session.get_items() == main_items  # main was never touched
    fresh = CairnSession(session.session_id, url=server.url)
    assert await fresh.get_items() == main_items

    # A whole-branch copy, not switched to; names are unique; unknown names are refused.
    copy = await session.branch("copy", switch=False)
    assert session.current_branch == "main" and copy.from_turn is None
    await session.switch_branch("copy")
    assert await session.get_items() == main_items
    with pytest.raises(ValueError, match="already has a branch"):
        await session.branch("rome")
    with pytest.raises(ValueError, match="turn 5 does not exist"):
        await session.branch("far", turn=5)
    assert "far" not in [x.name for x in await session.list_branches()]  # nothing was forked
    with pytest.raises(KeyError, match="no branch"):
        await session.switch_branch("nope")
    # clear_session clears only the current branch.
    await session.clear_session()
    assert await session.get_items() == []
    await session.switch_branch("main")
    assert await session.get_items() == main_items
