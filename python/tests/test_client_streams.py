"""The client's streaming paths against a real server: the SSE event iterator (live delivery
and resume with Last-Event-ID) and the async client's verified download and bundles."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from cairn_store import ArtifactNotFound, AsyncClient, Client, ProtocolError
from cairn_store._client import _SseParser


async def test_sse_delivers_an_event_written_after_subscribing(aclient: AsyncClient) -> None:
    s = await aclient.create_session(name="sse-live")
    got: list[object] = []
    done = asyncio.Event()

    async def read() -> None:
        async for ev in aclient.stream_events(s.id):
            got.append(ev)
            if ev.type == "custom" and ev.data.get("name") == "after":
                done.set()
                return

    task = asyncio.create_task(read())
    try:
        # We cannot see when the server took the subscription, so write pings until the
        # stream delivers one (bounded), then write the event the test is about.
        for i in range(100):
            await aclient.append_event(s.id, "ping", {"i": i})
            await asyncio.sleep(0.1)
            if got:
                break
        assert got, "the stream delivered nothing within 10 s of pings"
        written = await aclient.append_event(s.id, "after", {"x": 1})
        await asyncio.wait_for(done.wait(), 30)
        last = got[-1]
        assert last.seq == written.seq and last.data["payload"] == {"x": 1}  # type: ignore[attr-defined]
        seqs = [e.seq for e in got]  # type: ignore[attr-defined]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_sse_resumes_after_last_event_id(client: Client) -> None:
    s = client.create_session(name="sse-resume")
    written = [client.append_event(s.id, "step", {"i": i}) for i in range(4)]
    resume_after = written[1].seq
    it = client.stream_events(s.id, last_event_id=resume_after)
    try:
        first, second = next(it), next(it)
    finally:
        it.close()
    # The stored events after the given id are replayed first, in order, none twice.
    assert (first.seq, second.seq) == (written[2].seq, written[3].seq)
    assert [first.data["payload"], second.data["payload"]] == [{"i": 2}, {"i": 3}]
    # The SESSION:SEQ form of the id works too.
    it = client.stream_events(s.id, last_event_id=f"{s.id}:{written[2].seq}")
    try:
        assert next(it).seq == written[3].seq
    finally:
        it.close()


def test_sse_parser_handles_ids_comments_and_missed_frames() -> None:
    p = _SseParser(None)
    assert p.feed(": keep-alive") is None and p.feed("") is None
    # One event whose JSON spans two `data:` lines (joined with a newline, as SSE says).
    for line in ["id: S:7", "event: custom", 'data: {"session_id":"S","seq":7,', 'data: "at":"2026-01-01T00:00:00Z"}']:
        assert p.feed(line) is None
    ev = p.feed("")
    assert ev is not None and ev.seq == 7 and ev.session_id == "S" and p.last_id == "S:7"
    p.feed("event: missed")
    p.feed('data: {"missed": 3}')
    assert p.feed("") is None and p.missed and p.last_id == "S:7"
    p.feed("data: not json")
    with pytest.raises(ProtocolError, match="not a Cairn event"):
        p.feed("")


async def test_async_download_is_streamed_and_verified(aclient: AsyncClient, tmp_path: Path) -> None:
    s = await aclient.create_session(name="adl")
    data = bytes(range(256)) * 4096  # 1 MiB
    a = await aclient.put(s.id, "big.bin", data)
    dest = tmp_path / "big.bin"
    n = await aclient.download(a.id, dest)
    assert n == len(data) and dest.read_bytes() == data
    assert not (tmp_path / "big.bin.cairn-partial").exists()
    with pytest.raises(ArtifactNotFound):
        await aclient.download("00000000-0000-0000-0000-000000000000", tmp_path / "none.bin")
    assert not (tmp_path / "none.bin").exists() and not (tmp_path / "none.bin.cairn-partial").exists()


def test_sync_download_leaves_nothing_on_error(client: Client, tmp_path: Path) -> None:
    with pytest.raises(ArtifactNotFound):
        client.download("00000000-0000-0000-0000-000000000000", tmp_path / "x.bin")
    assert list(tmp_path.iterdir()) == []


async def test_async_bundles_round_trip(aclient: AsyncClient, tmp_path: Path) -> None:
    s = await aclient.create_session(name="abundle", key=f"abundle-{tmp_path.name}")
    await aclient.put(s.id, "notes.md", b"# notes")
    await aclient.say(s.id, "user", "hello")
    bundle = tmp_path / "s.cairn"
    n = await aclient.export_bundle(s.id, bundle)
    assert n == bundle.stat().st_size and n > 0
    report = await aclient.import_bundle(bundle, new_ids=True, drop_keys=True)
    assert report
    copies = [x async for x in aclient.iter_sessions() if x.name == "abundle"]
    assert len(copies) == 2
    other = next(x for x in copies if x.id != s.id)
    assert other.key is None  # drop_keys
    arts = (await aclient.list_artifacts_page(other.id)).items
    notes = next(a for a in arts if a.name == "notes.md")
    assert await aclient.read(notes.id) == b"# notes"
    assert [m.content for m in await aclient.history(other.id)] == ["hello"]
