"""Local content handling shared by both clients: BLAKE3 hashing of uploads (so content the
store already holds is never sent), spooling of one-shot iterators, and verified downloads.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any, Union

import blake3

from ._errors import IntegrityError

CHUNK = 1 << 20
"""Upload and download chunk size (1 MiB)."""

SPOOL_IN_MEMORY = 8 << 20
"""A one-shot iterator up to this size is held in memory; larger ones spool to a temp file."""

Source = Union[bytes, bytearray, memoryview, str, "os.PathLike[str]", IO[bytes], Iterable[bytes]]
"""What an upload accepts: bytes, a file path, a binary file object, or an iterator of chunks."""


def hash_bytes(data: bytes | bytearray | memoryview) -> str:
    """The BLAKE3 hash of ``data`` as 64 hex digits (Cairn's content address)."""
    return blake3.blake3(bytes(data)).hexdigest()


@dataclass
class Prepared:
    """An upload whose hash and size are known and whose body can be read (again)."""

    hash: str
    size: int
    data: bytes | None = None
    file: IO[bytes] | None = None
    owned: bool = False

    def chunks(self) -> Iterator[bytes]:
        """The body in chunks, from the start."""
        if self.data is not None:
            yield self.data
            return
        assert self.file is not None
        self.file.seek(0)
        while True:
            b = self.file.read(CHUNK)
            if not b:
                return
            yield b

    async def achunks(self) -> AsyncIterator[bytes]:
        """The body in chunks, for the async client."""
        for b in self.chunks():
            yield b

    def close(self) -> None:
        """Closes the spool file this upload opened (never a caller's file)."""
        if self.owned and self.file is not None:
            self.file.close()


def prepare(source: Any) -> Prepared:
    """Hashes an upload source. Bytes are hashed in place; a path or file object is read once
    to hash and again to send; an iterator is spooled (memory, then a temp file) while hashed.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        return Prepared(hash_bytes(data), len(data), data=data)
    if isinstance(source, (str, os.PathLike)):
        f = open(source, "rb")  # noqa: SIM115 - closed by Prepared.close
        h, n = _hash_file(f)
        return Prepared(h, n, file=f, owned=True)
    if hasattr(source, "read"):
        if hasattr(source, "seek") and getattr(source, "seekable", lambda: False)():
            start = source.tell()
            h, n = _hash_file(source)
            source.seek(start)
            return Prepared(h, n, file=_Offset(source, start), owned=False)
        source = iter(lambda: source.read(CHUNK), b"")
    if isinstance(source, Iterable):
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115
        hasher = blake3.blake3()
        n = 0
        for chunk in source:
            if not isinstance(chunk, (bytes, bytearray, memoryview)):
                spool.close()
                raise TypeError(f"an upload iterator must yield bytes, got {type(chunk).__name__}")
            hasher.update(chunk)
            spool.write(chunk)
            n += len(chunk)
        return Prepared(hasher.hexdigest(), n, file=spool, owned=True)  # type: ignore[arg-type]
    raise TypeError(
        f"cannot upload a {type(source).__name__}: pass bytes, a file path, a binary file "
        "object or an iterator of bytes"
    )


class _Offset:
    """A caller's seekable file read from the position it was at when handed over."""

    def __init__(self, f: IO[bytes], start: int) -> None:
        self._f = f
        self._start = start

    def seek(self, pos: int) -> int:
        return self._f.seek(self._start + pos)

    def read(self, n: int = -1) -> bytes:
        return self._f.read(n)

    def close(self) -> None:
        """Leaves the caller's file open."""


def _hash_file(f: IO[bytes]) -> tuple[str, int]:
    hasher = blake3.blake3()
    n = 0
    while True:
        b = f.read(CHUNK)
        if not b:
            break
        hasher.update(b)
        n += len(b)
    return hasher.hexdigest(), n


class Verifier:
    """Hashes a download as it arrives and checks it against the expected hash at the end."""

    def __init__(self, expected: str, what: str) -> None:
        self.expected = expected.strip().strip('"').removeprefix("W/").strip('"').lower()
        self.what = what
        self._h = blake3.blake3()
        self.size = 0

    def update(self, chunk: bytes) -> None:
        """Adds received bytes."""
        self._h.update(chunk)
        self.size += len(chunk)

    def check(self) -> None:
        """Raises :class:`IntegrityError` when the received bytes do not hash as expected."""
        got = self._h.hexdigest()
        if got != self.expected:
            raise IntegrityError(
                f"{self.what}: received {self.size} bytes hashing to {got}, expected "
                f"{self.expected}; the content was damaged in transit or in the store"
            )
