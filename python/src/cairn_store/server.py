"""Run a local ``cairn serve`` from Python, for notebooks and tests: no separate terminal."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from types import TracebackType

from ._client import AsyncClient, Client
from ._errors import CairnError


def find_binary(binary: str | os.PathLike[str] | None = None) -> str:
    """The ``cairn`` executable: ``binary`` if given, else ``$CAIRN_BIN``, else ``cairn`` on PATH."""
    if binary is not None:
        path = Path(binary)
        if not path.is_file():
            raise FileNotFoundError(f"the cairn binary {path} does not exist")
        return str(path)
    env = os.environ.get("CAIRN_BIN")
    if env:
        if not Path(env).is_file():
            raise FileNotFoundError(f"CAIRN_BIN={env} does not exist; build it with `cargo build -p cairn-cli`")
        return env
    found = shutil.which("cairn")
    if found is None:
        raise FileNotFoundError(
            "no cairn binary: pass binary=..., set CAIRN_BIN, or put `cairn` on PATH "
            "(`cargo build -p cairn-cli` builds target/debug/cairn)"
        )
    return found


class LocalServer:
    """A ``cairn serve`` process on 127.0.0.1 and a free port, stopped on exit.

    >>> with LocalServer() as srv, srv.client() as c:          # doctest: +SKIP
    ...     s = c.create_session(name="notebook")

    ``data`` is the server's data folder (a temporary one, deleted on exit, when None).
    ``args`` are extra ``cairn serve`` arguments. With no tokens in the data folder the server
    serves the single tenant ``default`` without authentication (loopback only).
    """

    def __init__(
        self,
        data: str | os.PathLike[str] | None = None,
        *,
        binary: str | os.PathLike[str] | None = None,
        args: list[str] | None = None,
        startup_timeout: float = 30.0,
        token: str | None = None,
    ) -> None:
        self.binary = find_binary(binary)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if data is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="cairn-serve-")
            data = self._tmp.name
        self.data = Path(data)
        self.args = list(args or [])
        self.startup_timeout = startup_timeout
        self.token = token
        self.url = ""
        self._proc: subprocess.Popen[str] | None = None
        self._stderr: list[str] = []

    def start(self) -> LocalServer:
        """Starts the server and waits for the URL it prints as its first stdout line."""
        cmd = [self.binary, "serve", "--data", str(self.data), "--listen", "127.0.0.1:0", *self.args]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(self._proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(self.startup_timeout)
        first = line[0].strip() if line else ""
        if not first.startswith("http"):
            self.stop()
            tail = "".join(self._stderr[-20:])
            raise CairnError(
                f"`{' '.join(cmd)}` did not print its URL within {self.startup_timeout}s "
                f"(first line {first!r}); its stderr:\n{tail}",
                code="server_start",
            )
        self.url = first.split()[-1] if " " in first else first
        threading.Thread(target=self._drain_stdout, daemon=True).start()
        return self

    def _drain_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for line in self._proc.stderr:
            self._stderr.append(line)
            if len(self._stderr) > 200:
                del self._stderr[:100]

    def _drain_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for _ in self._proc.stdout:
            pass

    @property
    def stderr(self) -> str:
        """The last lines the server wrote to stderr (its JSON request log)."""
        return "".join(self._stderr)

    def client(self) -> Client:
        """A sync client of this server."""
        return Client(self.url, token=self.token)

    def async_client(self) -> AsyncClient:
        """An async client of this server."""
        return AsyncClient(self.url, token=self.token)

    def stop(self, timeout: float = 15.0) -> int | None:
        """Stops the server gracefully (SIGTERM; SIGKILL after ``timeout``); returns its exit code."""
        code = None
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            code = self._proc.returncode
            self._proc = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        return code

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
