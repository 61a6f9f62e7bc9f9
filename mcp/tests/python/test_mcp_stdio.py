"""`cairn mcp` driven over stdio by the official MCP Python SDK.

Run through run.sh (it pins the SDK and builds the binary). CAIRN_BIN is the `cairn` binary.
Each test starts its own server on its own store in a temporary folder.
"""

import base64
import json
import os
import re
from contextlib import asynccontextmanager

import pytest
from mcp import ClientSession, MCPError, StdioServerParameters, stdio_client

CAIRN_BIN = os.environ.get("CAIRN_BIN", "cairn")

TOOLS = {
    "store_output",
    "read_part",
    "artifact_info",
    "query_artifacts",
    "list_sessions",
    "create_session",
    "checkpoint",
    "fork",
    "memo_lookup",
    "memo_store",
}


@pytest.fixture
def anyio_backend():
    return "asyncio"


@asynccontextmanager
async def connect(store_dir):
    params = StdioServerParameters(command=CAIRN_BIN, args=["mcp", "--store", str(store_dir)])
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            yield session, init


def text_of(result):
    assert result.content, "a tool result carries a text block"
    return result.content[0].text


def ok(result):
    assert not result.is_error, text_of(result)
    value = result.structured_content
    # The text block is the same JSON, for clients that ignore structured content.
    assert json.loads(text_of(result)) == value
    return value


@pytest.mark.anyio
async def test_initialize_lists_tools_templates_and_resources(tmp_path):
    async with connect(tmp_path / "store") as (s, init):
        assert init.server_info.name == "cairn"
        assert init.capabilities.tools is not None
        assert init.capabilities.resources is not None
        assert "read_part" in (init.instructions or "")

        tools = (await s.list_tools()).tools
        assert {t.name for t in tools} == TOOLS
        for t in tools:
            assert t.input_schema["type"] == "object"
            assert t.input_schema.get("additionalProperties") is False
            assert len(t.description) > 120, t.name
        read = next(t for t in tools if t.name == "read_part")
        assert set(read.input_schema["properties"]["mode"]["enum"]) == {
            "head", "tail", "lines", "bytes", "grep", "json", "json_lines"}

        templates = (await s.list_resource_templates()).resource_templates
        uris = {t.uri_template for t in templates}
        assert "cairn://artifact/{artifact_id}" in uris
        assert "cairn://session/{session_id}/artifacts" in uris

        assert (await s.list_resources()).resources == []
        ok(await s.call_tool("store_output", {"name": "a.txt", "content": "alpha\n"}))
        listed = (await s.list_resources()).resources
        assert [r.name for r in listed] == ["a.txt"]
        assert str(listed[0].uri).startswith("cairn://artifact/")


@pytest.mark.anyio
async def test_store_10_mb_output_then_read_its_tail_and_a_grep(tmp_path):
    lines = []
    for i in range(1, 200_001):
        if i % 50_000 == 0:
            lines.append(f"{i:06d} FAILED test_case_{i} - AssertionError: expected 1, got 2")
        else:
            lines.append(f"{i:06d} PASSED test_case_{i} in 0.01s ........................")
    body = "\n".join(lines) + "\n"
    assert len(body) >= 10_000_000

    async with connect(tmp_path / "store") as (s, _):
        result = await s.call_tool(
            "store_output",
            {"name": "pytest/full.log", "content": body, "tags": ["pytest"]},
        )
        stored = ok(result)
        # The id and a preview come back, never the content.
        assert len(text_of(result)) < 5_000
        assert stored["size"] == len(body.encode())
        assert stored["preview"]["lines"] == 200_000
        assert stored["preview"]["mime_type"] == "text/plain"
        assert "000001 PASSED" in stored["preview"]["head"]
        assert "200000 FAILED" in stored["preview"]["tail"]
        art = stored["artifact_id"]

        tail = ok(await s.call_tool("read_part", {"artifact_id": art, "mode": "tail", "lines": 3}))
        assert [l["number"] for l in tail["lines"]] == [199_998, 199_999, 200_000]
        assert tail["lines"][-1]["text"].startswith("200000 FAILED")
        assert tail["total_lines"] == 200_000
        assert tail["truncated"] is False

        grep = ok(await s.call_tool(
            "read_part",
            {"artifact_id": art, "mode": "grep", "pattern": r"FAILED", "context": 1, "max_matches": 3},
        ))
        matched = [l["number"] for l in grep["lines"] if l["matched"]]
        assert matched == [50_000, 100_000, 150_000]
        context = [l["number"] for l in grep["lines"] if not l["matched"]]
        assert 49_999 in context and 50_001 in context
        # The match limit cut the grep short: continue_with finds the last one.
        more = ok(await s.call_tool("read_part", grep["continue_with"]))
        assert [l["number"] for l in more["lines"] if l["matched"]] == [200_000]
        assert "continue_with" not in more

        middle = ok(await s.call_tool(
            "read_part", {"artifact_id": art, "mode": "lines", "start": 123_456, "count": 2}))
        assert [l["text"][:6] for l in middle["lines"]] == ["123456", "123457"]

        found = ok(await s.call_tool("query_artifacts", {"tags_all": ["pytest"], "min_size": 10_000_000}))
        assert [a["artifact_id"] for a in found["artifacts"]] == [art]


@pytest.mark.anyio
async def test_bad_input_is_a_tool_error_a_model_can_act_on(tmp_path):
    async with connect(tmp_path / "store") as (s, _):
        art = ok(await s.call_tool("store_output", {"name": "x.txt", "content": "x\n"}))["artifact_id"]

        bad = await s.call_tool("read_part", {"artifact_id": art, "mode": "middle"})
        assert bad.is_error
        msg = text_of(bad)
        assert "`mode`" in msg and "tail" in msg and "Example of a valid call" in msg
        assert bad.structured_content["error"]["argument"] == "mode"

        bad = await s.call_tool("read_part", {"artifact_id": "not-an-id", "mode": "tail"})
        assert bad.is_error
        assert bad.structured_content["error"]["argument"] == "artifact_id"

        bad = await s.call_tool("store_output", {"name": "y", "content": "a", "colour": "red"})
        assert bad.is_error
        assert "colour" in text_of(bad)

        bad = await s.call_tool("read_part", {"artifact_id": "0192f0c4-9a5e-7b3c-8d2e-4f6a7b8c9d0e"})
        assert bad.is_error
        assert bad.structured_content["error"]["code"] == "artifact_not_found"

        with pytest.raises(MCPError):
            await s.call_tool("no_such_tool", {})

        # The server is still serving after all of that.
        again = ok(await s.call_tool("read_part", {"artifact_id": art}))
        assert again["lines"][0]["text"] == "x"


@pytest.mark.anyio
async def test_read_resources_text_binary_large_and_by_session(tmp_path):
    async with connect(tmp_path / "store") as (s, _):
        small = ok(await s.call_tool("store_output", {"name": "hello.txt", "content": "hello, resource\n"}))
        png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
        binary = ok(await s.call_tool("store_output", {
            "name": "pixel.png", "content_base64": base64.b64encode(png).decode(), "mime_type": "image/png"}))
        big = ok(await s.call_tool("store_output", {"name": "big.log", "content": "0123456789\n" * 100_000}))

        r = await s.read_resource(small["uri"])
        assert r.contents[0].text == "hello, resource\n"
        assert r.contents[0].mime_type == "text/plain"

        r = await s.read_resource(binary["uri"])
        assert base64.b64decode(r.contents[0].blob) == png
        assert r.contents[0].mime_type == "image/png"

        r = await s.read_resource(big["uri"])
        note = json.loads(r.contents[0].text)
        assert note["read_part"]["artifact_id"] == big["artifact_id"]
        assert "read_part" in note["omitted"]

        r = await s.read_resource(f"cairn://session/{small['session_id']}/artifacts")
        listing = json.loads(r.contents[0].text)
        assert {a["name"] for a in listing["artifacts"]} == {"hello.txt", "pixel.png", "big.log"}

        with pytest.raises(MCPError):
            await s.read_resource("cairn://artifact/0192f0c4-9a5e-7b3c-8d2e-4f6a7b8c9d0e")


@pytest.mark.anyio
async def test_sessions_checkpoint_fork_over_stdio(tmp_path):
    async with connect(tmp_path / "store") as (s, _):
        sess = ok(await s.call_tool("create_session", {"name": "task", "key": "task-7"}))
        sid = sess["session_id"]
        ok(await s.call_tool("store_output", {"session_id": sid, "name": "plan.md", "content": "1. fix\n"}))
        cp = ok(await s.call_tool("checkpoint", {"session_id": sid, "label": "planned"}))
        fork = ok(await s.call_tool("fork", {"session_id": sid, "checkpoint_id": cp["checkpoint_id"]}))
        assert fork["parent_id"] == sid
        children = ok(await s.call_tool("list_sessions", {"parent_id": sid}))
        assert [c["session_id"] for c in children["sessions"]] == [fork["session_id"]]
        same = ok(await s.call_tool("create_session", {"key": "task-7"}))
        assert same["session_id"] == sid and same["created"] is False
        assert re.fullmatch(r"[0-9a-f-]{36}", sid)


@pytest.mark.anyio
async def test_memo_hit_for_the_same_tool_and_arguments(tmp_path):
    call = {"tool": "pytest", "arguments": {"path": "tests/", "flags": ["-x", "-q"]}}
    async with connect(tmp_path / "store") as (s, _):
        assert ok(await s.call_tool("memo_lookup", call))["hit"] is False
        out = ok(await s.call_tool("store_output", {"name": "pytest.log", "content": "41 passed, 1 failed\n"}))
        ok(await s.call_tool("memo_store", {**call, "artifact_id": out["artifact_id"]}))
    # A new server process on the same store: the entry survived, and key order does not matter.
    async with connect(tmp_path / "store") as (s, _):
        hit = ok(await s.call_tool(
            "memo_lookup", {"tool": "pytest", "arguments": {"flags": ["-x", "-q"], "path": "tests/"}}))
        assert hit["hit"] is True
        assert hit["artifact"]["artifact_id"] == out["artifact_id"]
        assert hit["preview"]["head"].startswith("41 passed")
        miss = ok(await s.call_tool("memo_lookup", {"tool": "pytest", "arguments": {"path": "src/"}}))
        assert miss["hit"] is False
