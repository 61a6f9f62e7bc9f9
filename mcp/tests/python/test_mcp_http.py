"""MCP over streamable HTTP inside `cairn serve` (at /mcp), driven by the official MCP Python SDK's
streamable HTTP client.

Run through run.sh. Each test starts its own `cairn serve` on 127.0.0.1 (an ephemeral port) with
its own data folder and bearer tokens, made with `cairn token create`.
"""

import json
import os
import subprocess
from contextlib import asynccontextmanager

import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

CAIRN_BIN = os.environ.get("CAIRN_BIN", "cairn")


@pytest.fixture
def anyio_backend():
    return "asyncio"


def token(data, tenant, *extra):
    out = subprocess.run(
        [CAIRN_BIN, "--json", "token", "create", "--data", str(data), "--tenant", tenant, *extra],
        check=True, capture_output=True, text=True)
    return json.loads(out.stdout)["token"]


@pytest.fixture
def server(tmp_path):
    """A running `cairn serve` with tokens for tenants a (read-write and read-only) and b."""
    data = tmp_path / "data"
    tokens = {
        "a": token(data, "a"),
        "a_ro": token(data, "a", "--read-only"),
        "b": token(data, "b"),
    }
    proc = subprocess.Popen(
        [CAIRN_BIN, "serve", "--data", str(data), "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url
        yield url.rstrip("/"), tokens
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@asynccontextmanager
async def connect(url, tok):
    headers = {"Authorization": f"Bearer {tok}"} if tok else None
    async with create_mcp_http_client(headers=headers) as http:
        async with streamable_http_client(f"{url}/mcp", http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                init = await session.initialize()
                yield session, init


def ok(result):
    assert not result.is_error, result.content[0].text
    assert json.loads(result.content[0].text) == result.structured_content
    return result.structured_content


@pytest.mark.anyio
async def test_http_store_read_grep_memo_and_errors(server):
    url, tokens = server
    async with connect(url, tokens["a"]) as (s, init):
        assert init.server_info.name == "cairn"
        names = {t.name for t in (await s.list_tools()).tools}
        assert {"store_output", "read_part", "memo_lookup", "memo_store"} <= names

        lines = [f"{i} {'FAILED test_x' if i % 1000 == 0 else 'ok'}" for i in range(1, 20_001)]
        stored = ok(await s.call_tool("store_output", {
            "name": "pytest.log", "content": "\n".join(lines) + "\n", "tags": ["pytest"]}))
        art = stored["artifact_id"]
        assert stored["preview"]["lines"] == 20_000

        tail = ok(await s.call_tool("read_part", {"artifact_id": art, "mode": "tail", "lines": 2}))
        assert [l["text"] for l in tail["lines"]] == lines[-2:]
        grep = ok(await s.call_tool("read_part", {
            "artifact_id": art, "mode": "grep", "pattern": "FAILED", "max_matches": 3}))
        assert [l["number"] for l in grep["lines"] if l["matched"]] == [1000, 2000, 3000]
        assert grep["truncated"] is True
        more = ok(await s.call_tool("read_part", grep["continue_with"]))
        assert [l["number"] for l in more["lines"] if l["matched"]][0] == 4000

        call = {"tool": "pytest", "arguments": {"k": "x"}}
        assert ok(await s.call_tool("memo_lookup", call))["hit"] is False
        ok(await s.call_tool("memo_store", {**call, "artifact_id": art}))
        hit = ok(await s.call_tool("memo_lookup", call))
        assert hit["hit"] is True and hit["artifact"]["artifact_id"] == art

        bad = await s.call_tool("read_part", {"artifact_id": art, "mode": "middle"})
        assert bad.is_error and "mode" in bad.content[0].text
        # A network server never reads files on its own machine.
        bad = await s.call_tool("store_output", {"name": "p", "path": "/etc/hostname"})
        assert bad.is_error

        resources = (await s.list_resources()).resources
        assert any(str(r.uri) == f"cairn://artifact/{art}" for r in resources)

    # The same artifact through the REST API with the same token: one store per tenant.
    async with httpx2.AsyncClient() as http:
        r = await http.get(f"{url}/v1/artifacts/{art}",
                           headers={"Authorization": f"Bearer {tokens['a']}"})
        assert r.status_code == 200 and r.json()["name"] == "pytest.log"

    # Another tenant sees nothing of tenant a's store, and its memo misses.
    async with connect(url, tokens["b"]) as (s, _):
        bad = await s.call_tool("read_part", {"artifact_id": art, "mode": "tail"})
        assert bad.is_error and "artifact_not_found" in json.dumps(bad.structured_content)
        assert ok(await s.call_tool("memo_lookup", call))["hit"] is False

    # A read-only token reads, and may not write.
    async with connect(url, tokens["a_ro"]) as (s, _):
        ok(await s.call_tool("read_part", {"artifact_id": art, "mode": "head", "lines": 1}))
        bad = await s.call_tool("store_output", {"name": "x", "content": "x"})
        assert bad.is_error and bad.structured_content["error"]["code"] == "forbidden"


@pytest.mark.anyio
async def test_http_needs_a_valid_token(server):
    url, _ = server
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"}}}
    async with httpx2.AsyncClient() as http:
        for headers in ({}, {"Authorization": "Bearer nope"}):
            r = await http.post(f"{url}/mcp", json=body, headers={
                "Accept": "application/json, text/event-stream", **headers})
            assert r.status_code == 401, r.text
            assert r.json()["error"]["code"] == "unauthorized"
