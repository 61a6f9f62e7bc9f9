"""The sync path end to end with real compiled graphs: invoke, stream, interrupt and resume,
time travel, a run resumed in another process, dedup of unchanged state, copy without content,
and the refusal to unpickle."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command

from cairn_store import CairnError, Client, LocalServer
from cairn_store.langgraph import KIND_VALUE, CairnSaver, doc_name
from graphs import State, interrupt_graph, linear_graph

HERE = Path(__file__).resolve().parent


def cfg(thread: str) -> dict:
    return {"configurable": {"thread_id": thread}}


@pytest.fixture
def saver(client: Client) -> CairnSaver:
    return CairnSaver(client)


def test_invoke_and_state(saver: CairnSaver) -> None:
    graph = linear_graph(3).compile(checkpointer=saver)
    t = str(uuid.uuid4())
    out = graph.invoke({"log": ["in"], "count": 0}, cfg(t))
    assert out == {"log": ["in", "s0", "s1", "s2"], "count": 3}
    state = graph.get_state(cfg(t))
    assert state.values["count"] == 3 and state.next == ()
    # A second invoke on the same thread continues from the stored state.
    out2 = graph.invoke({"log": ["again"]}, cfg(t))
    assert out2["log"] == ["in", "s0", "s1", "s2", "again", "s0", "s1", "s2"] and out2["count"] == 6
    history = list(graph.get_state_history(cfg(t)))
    assert len(history) == 10  # (input + 3 steps + ... ) twice: 5 checkpoints per run
    assert [h.metadata["step"] for h in history[:5]] == [8, 7, 6, 5, 4]


def test_stream_yields_each_step(saver: CairnSaver) -> None:
    graph = linear_graph(4).compile(checkpointer=saver)
    t = str(uuid.uuid4())
    chunks = list(graph.stream({"count": 10}, cfg(t), stream_mode="updates"))
    assert [list(c.keys())[0] for c in chunks] == ["s0", "s1", "s2", "s3"]
    assert chunks[-1]["s3"]["count"] == 14
    values = list(graph.stream({"count": 0}, cfg(str(uuid.uuid4())), stream_mode="values"))
    assert [v["count"] for v in values] == [0, 1, 2, 3, 4]


def test_interrupt_and_resume(saver: CairnSaver) -> None:
    graph = interrupt_graph().compile(checkpointer=saver)
    t = str(uuid.uuid4())
    first = graph.invoke({"count": 0}, cfg(t))
    assert first["__interrupt__"][0].value == {"question": "what now?", "count": 1}
    assert graph.get_state(cfg(t)).next == ("ask",)
    done = graph.invoke(Command(resume="yes"), cfg(t))
    assert done["answer"] == "yes"
    assert done["log"] == ["before", "asked:yes", "after"]
    assert graph.get_state(cfg(t)).next == ()


def test_time_travel_to_an_earlier_checkpoint(saver: CairnSaver) -> None:
    graph = linear_graph(3).compile(checkpointer=saver)
    t = str(uuid.uuid4())
    graph.invoke({"log": [], "count": 0}, cfg(t))
    history = list(graph.get_state_history(cfg(t)))
    after_s0 = next(h for h in history if h.next == ("s1",))
    assert after_s0.values == {"log": ["s0"], "count": 1}
    # Replay from there: the graph runs s1 and s2 again on a new branch.
    replay = graph.invoke(None, after_s0.config)
    assert replay == {"log": ["s0", "s1", "s2"], "count": 3}
    # Fork from there with changed state.
    forked_cfg = graph.update_state(after_s0.config, {"count": 100})
    forked = graph.invoke(None, forked_cfg)
    assert forked["count"] == 102
    assert graph.get_state(cfg(t)).values["count"] == 102
    # The original branch is still readable.
    assert graph.get_state(after_s0.config).values == {"log": ["s0"], "count": 1}


def test_run_resumed_in_a_new_process(saver: CairnSaver, server: LocalServer) -> None:
    graph = interrupt_graph().compile(checkpointer=saver)
    t = str(uuid.uuid4())
    graph.invoke({"count": 5}, cfg(t))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, str(HERE / "resume_in_new_process.py"), server.url, t],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["out"]["answer"] == "from the second process"
    assert result["out"]["count"] == 7 and result["next"] == []
    # This process sees the run the other one finished.
    assert graph.get_state(cfg(t)).values["answer"] == "from the second process"


def _big_graph() -> StateGraph:
    def grow(state: State) -> dict:
        return {"log": [f"n{state.get('count', 0)}"], "count": state.get("count", 0) + 1}

    def route(state: State) -> str:
        return END if state.get("count", 0) >= 6 else "grow"

    g = StateGraph(State)
    g.add_node("grow", grow)
    g.add_edge(START, "grow")
    g.add_conditional_edges("grow", route)
    return g


def test_unchanged_large_state_is_stored_once(saver: CairnSaver, client: Client) -> None:
    graph = _big_graph().compile(checkpointer=saver)
    t = str(uuid.uuid4())
    doc = "large unchanged document " * 4000  # ~100 KB
    out = graph.invoke({"doc": doc, "count": 0, "log": []}, cfg(t))
    assert out["count"] == 6 and out["doc"] == doc
    sid = saver.thread_session(t)
    assert sid is not None
    values = list(client.query(session=sid.id, kind=KIND_VALUE))
    big = [a for a in values if a.name.startswith("lg/v/n/doc/")]
    assert len(big) == 1, [(a.name, a.size) for a in values]
    # The only other large value is the input itself (channel __start__), also written once.
    assert sorted(a.name.split("/")[3] for a in values if a.size > 90_000) == ["__start__", "doc"]
    docs = list(client.query(session=sid.id, kind="lg_checkpoint"))
    assert len(docs) >= 7 and all(a.size < 20_000 for a in docs)
    # A second thread with the same document stores a new record but sends and stores no new content.
    t2 = str(uuid.uuid4())
    graph.invoke({"doc": doc, "count": 0, "log": []}, cfg(t2))
    s2 = saver.thread_session(t2)
    assert s2 is not None
    big2 = [a for a in client.query(session=s2.id, kind=KIND_VALUE) if a.name.startswith("lg/v/n/doc/")]
    assert len(big2) == 1 and big2[0].hash == big[0].hash


def test_copy_thread_shares_content_and_diverges(saver: CairnSaver, client: Client) -> None:
    graph = interrupt_graph().compile(checkpointer=saver)
    src, dst = str(uuid.uuid4()), str(uuid.uuid4())
    graph.invoke({"count": 0, "doc": "x" * 50_000}, cfg(src))
    before = client.stats()
    saver.copy_thread(src, dst)
    after = client.stats()
    assert after.artifacts > before.artifacts
    assert (after.content_bytes, after.stored_bytes, after.blobs) == (
        before.content_bytes,
        before.stored_bytes,
        before.blobs,
    ), "copy_thread must copy no content"
    with pytest.raises(ValueError, match="already exists"):
        saver.copy_thread(src, dst)
    a = saver.thread_session(src)
    b = saver.thread_session(dst)
    assert a is not None and b is not None and a.id != b.id
    ha = sorted(x.hash for x in client.query(session=a.id))
    hb = sorted(x.hash for x in client.query(session=b.id))
    assert ha == hb
    # Both threads resume independently from the copied interrupt.
    assert graph.invoke(Command(resume="src"), cfg(src))["answer"] == "src"
    assert graph.invoke(Command(resume="dst"), cfg(dst))["answer"] == "dst"
    assert graph.get_state(cfg(src)).values["answer"] == "src"


def test_pickle_is_never_used(saver: CairnSaver, client: Client) -> None:
    with pytest.raises(ValueError, match="pickle"):
        CairnSaver(client, serde=JsonPlusSerializer(pickle_fallback=True))
    t = str(uuid.uuid4())
    graph = linear_graph(1).compile(checkpointer=saver)
    graph.invoke({"count": 0}, cfg(t))
    tup = saver.get_tuple(cfg(t))
    assert tup is not None
    sess = saver.thread_session(t)
    assert sess is not None
    # A document that claims pickled metadata (as an attacker with write access could plant).
    evil = {
        "format": 1,
        "checkpoint": {
            "t": "msgpack",
            "d": base64.b64encode(saver.serde.dumps_typed(dict(tup.checkpoint, channel_values={}))[1]).decode(),
        },
        "metadata": {"t": "pickle", "d": base64.b64encode(b"cos\nsystem\n(S'echo owned'\ntR.").decode()},
        "parent_checkpoint_id": None,
        "channels": {},
    }
    cid = "ffffffff-ffff-6fff-ffff-ffffffffffff"
    client.put(
        sess.id,
        doc_name("", cid),
        json.dumps(evil).encode(),
        kind="lg_checkpoint",
        metadata={"checkpoint_ns": "", "checkpoint_id": cid, "parent_checkpoint_id": None},
    )
    fresh = CairnSaver(client)
    with pytest.raises(CairnError) as e:
        fresh.get_tuple({"configurable": {"thread_id": t, "checkpoint_ns": "", "checkpoint_id": cid}})
    assert e.value.code == "unsafe_data"


async def test_async_saver_with_a_real_graph(server: LocalServer) -> None:
    from cairn_store.langgraph import AsyncCairnSaver

    async with AsyncCairnSaver.from_url(server.url) as asaver:
        graph = interrupt_graph().compile(checkpointer=asaver)
        t = str(uuid.uuid4())
        first = await graph.ainvoke({"count": 0}, cfg(t))
        assert first["__interrupt__"][0].value["question"] == "what now?"
        chunks = [c async for c in graph.astream(Command(resume="async"), cfg(t), stream_mode="updates")]
        assert [list(c)[0] for c in chunks] == ["ask", "after"]
        state = await graph.aget_state(cfg(t))
        assert state.values["answer"] == "async" and state.values["count"] == 2
        # The sync side of the async saver reads the same thread.
        assert graph.get_state(cfg(t)).values["answer"] == "async"


def test_thread_deleted_by_another_client_is_recreated(saver: CairnSaver, client: Client) -> None:
    graph = linear_graph(2).compile(checkpointer=saver)
    t = str(uuid.uuid4())
    graph.invoke({"count": 0}, cfg(t))
    old = saver.thread_session(t)
    assert old is not None
    client.delete_session(old.id, recursive=True)  # behind the saver's back
    out = graph.invoke({"count": 10}, cfg(t))
    assert out["count"] == 12
    new = saver.thread_session(t)
    assert new is not None and new.id != old.id
    assert len(list(graph.get_state_history(cfg(t)))) == 4
