"""Benchmark: CairnSaver vs SqliteSaver and InMemorySaver on a graph whose state is large and
mostly unchanged (a big document plus a small growing log), over many steps.

Prints time per step and bytes stored for each saver, and the ratios against SqliteSaver
measured in the same run, with the machine's load (``uptime``). One run; no timing is asserted.

    python bench/bench_checkpointer.py --steps 200 --doc-kib 256 [--cairn-bin PATH]
"""

from __future__ import annotations

import argparse
import operator
import os
import pickle
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph

from cairn_store import LocalServer
from cairn_store.langgraph import CairnSaver


class State(TypedDict, total=False):
    doc: str
    notes: dict[str, str]
    log: Annotated[list[str], operator.add]
    step: int


def build(steps: int) -> StateGraph:
    def work(state: State) -> dict[str, Any]:
        n = state.get("step", 0) + 1
        out: dict[str, Any] = {"step": n, "log": [f"step {n}"]}
        if n % 50 == 0:  # the large state changes rarely
            out["notes"] = {**state.get("notes", {}), f"k{n}": "v" * 1000}
        return out

    def route(state: State) -> str:
        return END if state.get("step", 0) >= steps else "work"

    g = StateGraph(State)
    g.add_node("work", work)
    g.add_edge(START, "work")
    g.add_conditional_edges("work", route)
    return g


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run(name: str, saver: Any, steps: int, doc: str) -> float:
    graph = build(steps).compile(checkpointer=saver)
    config = {"configurable": {"thread_id": f"bench-{name}"}, "recursion_limit": steps + 10}
    t0 = time.perf_counter()
    out = graph.invoke({"doc": doc, "notes": {"seed": "x" * 20_000}, "log": [], "step": 0}, config)
    elapsed = time.perf_counter() - t0
    assert out["step"] == steps and out["doc"] == doc
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--doc-kib", type=int, default=256)
    ap.add_argument("--cairn-bin", default=os.environ.get("CAIRN_BIN"))
    args = ap.parse_args()
    doc = ("lorem ipsum dolor sit amet " * (args.doc_kib * 40))[: args.doc_kib * 1024]
    load_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    results: dict[str, tuple[float, int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        mem = InMemorySaver()
        t = run("memory", mem, args.steps, doc)
        mem_bytes = len(pickle.dumps((dict(mem.storage), dict(mem.writes), dict(mem.blobs))))
        results["InMemorySaver"] = (t, mem_bytes)

        db = Path(tmp) / "bench.sqlite"
        conn = sqlite3.connect(db, check_same_thread=False)
        t = run("sqlite", SqliteSaver(conn), args.steps, doc)
        conn.close()
        results["SqliteSaver"] = (t, dir_bytes(Path(tmp)))

        data = Path(tmp) / "cairn"
        with LocalServer(data, binary=args.cairn_bin) as srv, srv.client() as c:
            t = run("cairn", CairnSaver(c), args.steps, doc)
        results["CairnSaver"] = (t, dir_bytes(data))
    load_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()

    base_t, base_b = results["SqliteSaver"]
    print(f"graph: {args.steps} steps, {args.doc_kib} KiB document unchanged, 20 KiB notes changed every 50 steps")
    print(f"uptime before: {load_before}")
    print(f"uptime after:  {load_after}")
    print("| saver | ms per step | vs SqliteSaver | bytes stored | vs SqliteSaver |")
    print("|---|---:|---:|---:|---:|")
    for name, (t, b) in results.items():
        per = t / args.steps * 1000
        print(f"| {name} | {per:.2f} | {t / base_t:.2f}x | {b:,} | {b / base_b:.3f}x |")
    print("(InMemorySaver bytes: size of its pickled dicts, i.e. what it holds in memory)")


if __name__ == "__main__":
    main()
