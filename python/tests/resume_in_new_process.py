"""Run by the end-to-end test in a fresh interpreter: resumes an interrupted thread from the
server alone (no state from the first process) and prints the final state as JSON."""

from __future__ import annotations

import json
import sys

from langgraph.types import Command

from cairn_store.langgraph import CairnSaver
from graphs import interrupt_graph


def main() -> None:
    url, thread = sys.argv[1], sys.argv[2]
    with CairnSaver.from_url(url) as saver:
        graph = interrupt_graph().compile(checkpointer=saver)
        config = {"configurable": {"thread_id": thread}}
        pending = graph.get_state(config)
        assert pending.next == ("ask",), pending.next
        out = graph.invoke(Command(resume="from the second process"), config)
        print(json.dumps({"out": out, "next": list(graph.get_state(config).next)}))


if __name__ == "__main__":
    main()
