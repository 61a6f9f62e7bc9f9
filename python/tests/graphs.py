"""Small real LangGraph graphs shared by the end-to-end tests, the subprocess and the bench."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt


class State(TypedDict, total=False):
    """A log that grows, a counter, a large document that never changes, and an answer."""

    log: Annotated[list[str], operator.add]
    count: int
    doc: str
    answer: str


def _step(name: str) -> Any:
    def node(state: State) -> dict[str, Any]:
        return {"log": [name], "count": state.get("count", 0) + 1}

    return node


def linear_graph(steps: int = 3) -> StateGraph:
    """START -> s0 -> s1 -> ... -> END."""
    g = StateGraph(State)
    prev = START
    for i in range(steps):
        g.add_node(f"s{i}", _step(f"s{i}"))
        g.add_edge(prev, f"s{i}")
        prev = f"s{i}"
    g.add_edge(prev, END)
    return g


def ask(state: State) -> dict[str, Any]:
    """Stops for a human answer (``interrupt``), then records it."""
    answer = interrupt({"question": "what now?", "count": state.get("count", 0)})
    return {"answer": str(answer), "log": [f"asked:{answer}"]}


def interrupt_graph() -> StateGraph:
    """START -> before -> ask (interrupts) -> after -> END."""
    g = StateGraph(State)
    g.add_node("before", _step("before"))
    g.add_node("ask", ask)
    g.add_node("after", _step("after"))
    g.add_edge(START, "before")
    g.add_edge("before", "ask")
    g.add_edge("ask", "after")
    g.add_edge("after", END)
    return g
