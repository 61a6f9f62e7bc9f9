"""The client against a real server: every route family, streaming, verification, errors."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import httpx
import pytest

import cairn_store
from cairn_store import (
    ArtifactNotFound,
    ArtifactQuery,
    AsyncClient,
    Client,
    HashMismatch,
    IntegrityError,
    InvalidInput,
    InvalidTransition,
    LocalServer,
    SessionNotFound,
    hash_bytes,
)
from cairn_store._content import Verifier


def test_importing_the_package_imports_no_framework() -> None:
    import subprocess
    import sys

    code = (
        "import sys, cairn_store; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('langgraph', 'langchain_core', 'agents', 'openai') "
        "or m.startswith('google.adk') or m.startswith('google.genai')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert cairn_store.__version__


def test_health(client: Client) -> None:
    assert client.health() is True


def test_sessions_lifecycle(client: Client) -> None:
    key = f"k-{uuid.uuid4()}"
    root = client.create_session(name="root", tags=["py"], metadata={"a": 1})
    assert root.status == "active" and root.tags == ["py"] and root.metadata == {"a": 1}
    child = client.create_session(name="child", parent=root.id)
    assert child.parent_id == root.id
    s1 = client.session_by_key(key, name="keyed")
    s2 = client.session_by_key(key, name="other")
    assert s1.id == s2.id and s1.key == key
    found = client.find_session(key)
    assert found is not None and found.id == s1.id
    assert client.find_session(f"absent-{uuid.uuid4()}") is None
    assert client.get_session(root.id).name == "root"
    assert [s.id for s in client.children(root.id)] == [child.id]
    assert {s.id for s in client.session_tree(root.id)} == {root.id, child.id}
    upd = client.update_session(root.id, metadata={"b": 2}, add_tags=["x"], remove_tags=["py"])
    assert upd.metadata == {"a": 1, "b": 2} and upd.tags == ["x"]
    assert client.transition(child.id, "suspend").status == "suspended"
    assert client.transition(child.id, "resume").status == "active"
    assert client.transition(child.id, "complete", reason="done").status == "completed"
    with pytest.raises(InvalidTransition):
        client.transition(child.id, "resume")
    client.delete_session(root.id, recursive=True)
    with pytest.raises(SessionNotFound) as e:
        client.get_session(root.id)
    assert e.value.status == 404 and e.value.code == "session_not_found"


def test_iter_sessions_follows_cursors(client: Client) -> None:
    tag = f"page-{uuid.uuid4().hex[:8]}"
    made = {client.create_session(tags=[tag]).id for _ in range(7)}
    seen = [s.id for s in client.iter_sessions(tags=[tag], page_size=3)]
    assert len(seen) == 7 and set(seen) == made


def test_put_from_bytes_file_and_iterator_and_read_back(client: Client, tmp_path: Path) -> None:
    s = client.create_session(name="puts")
    a = client.put(
        s.id, "dir/a.txt", b"hello", kind="user_input", tags=["t1"], metadata={"m": 1}, mime_type="text/plain"
    )
    assert (a.name, a.version, a.size, a.hash) == ("dir/a.txt", 1, 5, hash_bytes(b"hello"))
    assert a.kind == "user_input" and a.tags == ["t1"] and a.metadata == {"m": 1} and a.mime_type == "text/plain"
    f = tmp_path / "big.bin"
    data = bytes(range(256)) * 12_000  # ~3 MiB, several chunks
    f.write_bytes(data)
    b = client.put(s.id, "big.bin", f)
    assert b.size == len(data) and b.hash == hash_bytes(data)
    chunks = (data[i : i + 100_000] for i in range(0, len(data), 100_000))
    c = client.put(s.id, "big.bin", chunks)
    assert c.version == 2 and c.hash == b.hash
    d = client.put(s.id, "stream.bin", io.BytesIO(b"from a file object"))
    assert client.read(d.id) == b"from a file object"
    assert client.read(b.id) == data
    out = tmp_path / "out.bin"
    assert client.download(c.id, out) == len(data) and out.read_bytes() == data
    assert client.read_range(b.id, 10, 19) == data[10:20]
    assert client.read_range(b.id, len(data) - 5) == data[-5:]
    vs = client.versions(s.id, "big.bin")
    assert [v.version for v in vs] == [1, 2]
    assert client.artifact_by_name(s.id, "big.bin").version == 2
    assert client.artifact_by_name(s.id, "big.bin", version=1).id == b.id
    assert client.get_artifact(a.id).name == "dir/a.txt"
    page = client.list_artifacts_page(s.id)
    assert {x.name for x in page.items} == {"dir/a.txt", "big.bin", "stream.bin"}
    client.delete_artifact(a.id)
    with pytest.raises(ArtifactNotFound):
        client.get_artifact(a.id)


def test_content_the_store_holds_is_not_sent_again(server: LocalServer) -> None:
    sent: list[tuple[str, str | None]] = []

    def hook(req: httpx.Request) -> None:
        if req.method == "PUT":
            sent.append((req.url.path, req.headers.get("content-length")))

    http = httpx.Client(base_url=server.url, event_hooks={"request": [hook]})
    with Client(server.url, http=http) as c:
        s = c.create_session()
        blob = uuid.uuid4().bytes * 10_000
        assert c.missing_blobs([hash_bytes(blob)]) == {hash_bytes(blob)}
        first = c.put(s.id, "one", blob)
        assert c.missing_blobs([hash_bytes(blob)]) == set()
        second = c.put(s.id, "two", blob)
        assert second.hash == first.hash and second.size == len(blob)
        assert c.read(second.id) == blob
    assert sent[0][1] == str(len(blob))
    assert sent[1][1] == "0", "the second upload of held content must send no body"


def test_declared_hash_mismatch_is_refused(client: Client, server: LocalServer) -> None:
    s = client.create_session()
    wrong = hash_bytes(b"something else")
    r = httpx.put(
        f"{server.url}/v1/sessions/{s.id}/artifacts/x",
        params={"kind": "agent_output"},
        headers={"X-Cairn-Hash": wrong},
        content=b"the real bytes",
    )
    from cairn_store._errors import error_from_response

    err = error_from_response(r.status_code, r.json())
    assert isinstance(err, HashMismatch) and r.status_code == 422
    assert client.list_artifacts_page(s.id).items == []


def test_bad_input_raises_invalid_input(client: Client) -> None:
    s = client.create_session()
    with pytest.raises(InvalidInput) as e:
        client.put(s.id, "x", b"data", kind="Not A Kind")
    assert "kind" in str(e.value)


def test_verifier_refuses_damaged_content() -> None:
    v = Verifier(f'"{hash_bytes(b"good")}"', "artifact X")
    v.update(b"evil")
    with pytest.raises(IntegrityError):
        v.check()
    ok = Verifier(hash_bytes(b"good"), "artifact X")
    ok.update(b"go")
    ok.update(b"od")
    ok.check()


def test_query_iterates_every_page(client: Client) -> None:
    s = client.create_session()
    for i in range(9):
        client.put(
            s.id, f"q/{i}.json", f'{{"i":{i}}}'.encode(), kind="tool_result", tags=["even" if i % 2 == 0 else "odd"]
        )
    client.put(s.id, "other.txt", b"x", kind="user_input")
    got = list(client.query(ArtifactQuery(session=s.id, kind="tool_result"), page_size=4))
    assert sorted(a.name for a in got) == sorted(f"q/{i}.json" for i in range(9))
    evens = list(client.query(session=s.id, tags=("even",)))
    assert len(evens) == 5
    glob = list(client.query(session=s.id, name="q/*", descending=True, page_size=2))
    assert [a.name for a in glob] == [f"q/{i}.json" for i in reversed(range(9))]


def test_events_page_and_iterate(client: Client) -> None:
    s = client.create_session()
    for i in range(5):
        client.append_event(s.id, "step", {"i": i})
    events = list(client.events(s.id, page_size=2))
    assert events[0].type == "created"
    custom = [e for e in events if e.type == "custom"]
    assert [e.data["payload"]["i"] for e in custom] == list(range(5))
    assert [e.seq for e in events] == sorted(e.seq for e in events)


async def test_async_client_round_trip(aclient: AsyncClient) -> None:
    s = await aclient.create_session(name="async")
    data = b"async bytes" * 1000
    a = await aclient.put(s.id, "a.bin", data)
    assert await aclient.read(a.id) == data
    assert await aclient.read_range(a.id, 0, 4) == data[:5]
    names = [x.name async for x in aclient.query(session=s.id)]
    assert names == ["a.bin"]
    with pytest.raises(SessionNotFound):
        await aclient.get_session(str(uuid.uuid4()))


def test_local_server_stops_and_removes_its_folder(server: LocalServer) -> None:
    srv = LocalServer(binary=server.binary).start()
    data = srv.data
    with srv.client() as c:
        assert c.health()
    assert srv.stop() is not None
    assert not data.exists()


def test_checkpoints_restore_fork_copy_merge(client: Client) -> None:
    s = client.create_session(name="cp")
    a1 = client.put(s.id, "plan.md", b"v1")
    cp = client.create_checkpoint(s.id, "first", state={"step": 1})
    assert cp.label == "first" and cp.state == {"step": 1} and cp.artifact_count == 1
    client.put(s.id, "plan.md", b"v2")
    client.put(s.id, "extra.txt", b"extra")
    assert client.get_checkpoint(cp.id).id == cp.id
    assert [c.id for c in client.checkpoints_page(s.id).items] == [cp.id]
    fork = client.fork(s.id, checkpoint=cp.id, name="fork", tags=["f"])
    assert fork.parent_id == s.id and fork.tags == ["f"]
    fork_names = {a.name: a for a in client.list_artifacts_page(fork.id).items}
    assert set(fork_names) == {"plan.md"} and fork_names["plan.md"].hash == a1.hash
    copy = client.copy(s.id, name="copy")
    assert {a.name for a in client.list_artifacts_page(copy.id).items} == {"plan.md", "extra.txt"}
    merged = client.merge([fork.id, copy.id], name="merged", tags=["m"])
    assert merged.tags == ["m"] and len(client.versions(merged.id, "plan.md")) >= 2
    assert {x["kind"] for x in client.lineage(merged.id)} == {"merge"}
    report = client.restore_checkpoint(cp.id)
    assert report
    assert client.read(client.artifact_by_name(s.id, "plan.md").id) == b"v1"
    client.delete_checkpoint(cp.id)
    with pytest.raises(cairn_store.CheckpointNotFound):
        client.get_checkpoint(cp.id)


def test_history_timeline_and_bundles(client: Client, tmp_path: Path) -> None:
    s = client.create_session(name="chat")
    client.say(s.id, "user", "hello")
    m = client.say(s.id, "assistant", "hi there", metadata={"model": "x"})
    assert m.role == "assistant" and m.metadata == {"model": "x"}
    hist = client.history(s.id)
    assert [(h.role, h.content) for h in hist] == [("user", "hello"), ("assistant", "hi there")]
    assert [h.content for h in client.history(s.id, last=1)] == ["hi there"]
    tl = client.timeline_page(s.id, limit=100)
    assert len(tl.items) >= 3
    bundle = tmp_path / "chat.cairn"
    n = client.export_bundle(s.id, bundle)
    assert n == bundle.stat().st_size and n > 0
    report = client.import_bundle(bundle, new_ids=True)
    assert report
    chats = [x for x in client.iter_sessions() if x.name == "chat"]
    assert len(chats) == 2


def test_admin_stats_gc_verify(client: Client) -> None:
    before = client.stats()
    s = client.create_session()
    client.put(s.id, "s.bin", uuid.uuid4().bytes * 100)
    after = client.stats()
    assert after.artifacts == before.artifacts + 1 and after.content_bytes == before.content_bytes + 1600
    assert isinstance(client.gc(), dict)
    assert isinstance(client.verify(), dict)


def test_operational_routes_and_every_route_has_a_client_call(client: Client) -> None:
    assert client.ready() is True
    assert "cairn" in client.metrics() or "http" in client.metrics()
    doc = client.openapi()
    served = {(m.upper(), path) for path, ops in doc["paths"].items() for m in ops}
    import inspect

    from cairn_store import _api, _client

    source = inspect.getsource(_api) + inspect.getsource(_client)
    missing = []
    for method, path in sorted(served):
        if path == "/mcp":
            continue  # the Model Context Protocol endpoint, for MCP clients (tested in mcp/tests/python)
        # A path template appears in _api with the parameters as f-string segments.
        parts = [p for p in path.split("/") if p and not p.startswith("{")]
        if not all(f"/{p}\"" in source or f"/{p}/" in source or f'"{p}' in source for p in parts):
            missing.append((method, path))
    assert missing == [], f"routes without a client call: {missing}"


def test_tokens_tenants_and_scopes(server: LocalServer, tmp_path: Path) -> None:
    import subprocess

    data = tmp_path / "data"

    def token(*args: str) -> str:
        out = subprocess.run(
            [server.binary, "token", "create", "--data", str(data), *args],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.splitlines()[0].strip()

    alice, bob, reader = token("--tenant", "alice"), token("--tenant", "bob"), token("--tenant", "alice", "--read-only")
    with LocalServer(data, binary=server.binary, token=alice) as srv:
        with Client(srv.url, token="") as anon, pytest.raises(cairn_store.Unauthorized):
            anon.create_session()
        with srv.client() as a, Client(srv.url, token=bob) as b, Client(srv.url, token=reader) as r:
            s = a.create_session(name="alice's")
            art = a.put(s.id, "secret.txt", b"alice only")
            with pytest.raises(SessionNotFound):
                b.get_session(s.id)
            with pytest.raises(ArtifactNotFound):
                b.read(art.id)
            # A hash probe across tenants looks exactly like content that does not exist.
            assert b.missing_blobs([art.hash]) == {art.hash}
            assert r.read(art.id) == b"alice only"
            with pytest.raises(cairn_store.Forbidden):
                r.create_session()


def test_partial_reads_memo_and_webhook_routes(client: Client) -> None:
    s = client.create_session()
    text = "".join(f"line {i}: {'ERROR' if i % 10 == 0 else 'ok'}\n" for i in range(1, 101))
    art = client.put(s.id, "log.txt", text.encode())
    tail = client.read_part(art.id, "tail", lines=3)
    assert tail["content"]["lines"][-1]["text"].startswith("line 100")
    grep = client.read_part(art.id, "grep", pattern="ERROR", max_matches=2)
    assert grep["content"]["matches"] == 2 and grep["truncated"] and grep["next_line"] == 30
    assert [x["number"] for x in grep["content"]["lines"]] == [10, 20]
    p = client.preview(art.id)
    assert p["lines"] == 100 and p["size"] == len(text)
    assert client.memo_lookup("search", {"q": 1}) is None
    client.memo_store("search", {"q": 1}, art.id)
    hit = client.memo_lookup("search", {"q": 1})
    assert hit is not None and hit["artifact"]["id"] == art.id
    assert client.memo_stats("search")["hits"] == 1
    assert client.set_memo_ttl("search", 60) == 60 and client.memo_ttl("search") == 60
    assert client.memo_forget("search", {"q": 1}) is True
    assert isinstance(client.list_webhooks(), (list, dict))
