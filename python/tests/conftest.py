"""Fixtures: one real ``cairn serve`` (loopback, ephemeral port, temporary data folder) for
the whole run, and clients on it. The binary comes from ``$CAIRN_BIN`` or the repository's
``target/debug/cairn``."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from cairn_store import AsyncClient, Client, LocalServer

REPO = Path(__file__).resolve().parents[2]


def cairn_bin() -> str:
    env = os.environ.get("CAIRN_BIN")
    if env:
        return env
    for profile in ("debug", "release"):
        p = REPO / "target" / profile / "cairn"
        if p.is_file():
            return str(p)
    raise RuntimeError("no cairn binary: set CAIRN_BIN or run `cargo build -p cairn-cli` (python/run-tests.sh does)")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    # Anonymous loopback callers get no admin scope unless the server opens it (`open_admin`);
    # the suite calls the admin routes (stats, gc, verify, metrics) without a token.
    config = tmp_path_factory.mktemp("cairn-serve") / "serve.toml"
    config.write_text("[server]\nopen_admin = true\n")
    with LocalServer(binary=cairn_bin(), args=["--config", str(config)]) as srv:
        yield srv


@pytest.fixture
def client(server: LocalServer) -> Iterator[Client]:
    with server.client() as c:
        yield c


@pytest.fixture
async def aclient(server: LocalServer) -> AsyncIterator[AsyncClient]:
    async with server.async_client() as c:
        yield c
