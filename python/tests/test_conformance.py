"""The official ``langgraph-checkpoint-conformance`` suite, in full (base and extended
capabilities), against both savers on a real server."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES
from langgraph.checkpoint.conformance.report import ProgressCallbacks

from cairn_store import LocalServer
from cairn_store.langgraph import AsyncCairnSaver, CairnSaver


def _check(report) -> None:  # type: ignore[no-untyped-def]
    report.print_report()
    failures = {name: r.failures for name, r in report.results.items() if r.failures}
    assert failures == {}
    for cap in ALL_CAPABILITIES:
        r = report.results[cap.value]
        assert r.detected, f"{cap.value} not detected"
        assert r.passed is True and r.tests_passed > 0, f"{cap.value}: {r}"
    assert report.conformance_level() == "FULL"


@pytest.mark.parametrize("saver_cls", [CairnSaver, AsyncCairnSaver])
async def test_conformance_full(server: LocalServer, saver_cls: type) -> None:
    async def factory() -> AsyncGenerator[object, None]:
        if saver_cls is CairnSaver:
            with server.client() as c:
                yield CairnSaver(c)
        else:
            async with AsyncCairnSaver.from_url(server.url) as s:
                yield s

    registered = checkpointer_test(name=saver_cls.__name__)(factory)
    report = await validate(registered, progress=ProgressCallbacks.verbose())
    _check(report)
