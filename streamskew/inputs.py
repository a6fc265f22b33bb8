"""Open an input the same way for every command: files, gzip, stdin.

``streamskew detect`` and ``streamskew baseline build`` both take one or more inputs, each
either a path or ``-`` (also ``/dev/stdin``) for standard input. Whatever the form:

- gzip is recognised by its magic bytes (``1f 8b``), not by the name, so ``requests.jsonl``
  that is really gzipped, ``x.gz`` and ``zcat``-less pipes all read the same;
- a UTF-8 byte order mark (what ``encoding="utf-8-sig"`` and Excel write) is dropped;
- a directory, a missing file, or stdin named twice is a :class:`FileProblem` that says
  what to pass instead;
- reading is streaming (bounded memory); :meth:`Input.open` reports how many bytes of the
  source were consumed, for progress bars.

Standard input can be read only once, but a baseline build may need a second pass (columns
with more than 100,000 distinct values): ``Input.open(keep_copy=True)`` then copies what it
reads to a temporary file, which the second ``open()`` reads back and :meth:`Input.cleanup`
deletes.

>>> import gzip, os, tempfile
>>> folder = tempfile.mkdtemp()
>>> path = os.path.join(folder, "requests.jsonl")   # gzipped, although the name says not
>>> with open(path, "wb") as f:
...     _ = f.write(gzip.compress(b'\\xef\\xbb\\xbf{"a": 1}\\n{"a": 2}\\n'))
>>> [source] = resolve_inputs([path])
>>> with source.open() as opened:
...     opened.stream.read()
b'{"a": 1}\\n{"a": 2}\\n'
>>> resolve_inputs([folder])  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
streamskew.inputs.FileProblem: ...: is a directory; pass the files in it, e.g. .../*.jsonl
"""

from __future__ import annotations

import gzip
import io
import shutil
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

from .errors import StreamskewError

__all__ = ["STDIN_NAMES", "FileProblem", "Input", "Opened", "resolve_inputs", "sniff_format"]

STDIN_NAMES = ("-", "/dev/stdin")
GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"
PARQUET_MAGIC = b"PAR1"
_BUFFER = 1 << 16


class FileProblem(StreamskewError, ValueError):
    """An input file cannot be used; the message names the file (and line) and the fix."""


@dataclass
class Opened:
    """An open input: the decompressed bytes (BOM removed) and what was consumed so far."""

    stream: BinaryIO
    consumed: Callable[[], int]  # bytes read from the source itself (compressed if gzip)
    gzipped: bool
    head: bytes  # the first bytes of the decompressed content (to tell formats apart)


class Input:
    """One input as the user named it: a path, or standard input."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.is_stdin = name in STDIN_NAMES
        self.path = None if self.is_stdin else Path(name)
        self._copy: Path | None = None  # stdin, saved for a second pass

    def __repr__(self) -> str:
        return f"Input({self.name!r})"

    @property
    def label(self) -> str:
        """How messages name this input."""
        return "<stdin>" if self.is_stdin else self.name

    @property
    def suffix_name(self) -> str:
        """The file name without a ``.gz`` suffix, lower case ("" for stdin)."""
        return "" if self.path is None else self.path.name.lower().removesuffix(".gz")

    def size(self) -> int | None:
        """Bytes in the source when known (a regular file, or the saved copy of stdin)."""
        path = self._copy or self.path
        if path is None:
            return None
        try:
            stat = path.stat()
        except OSError:
            return None
        return stat.st_size if path.is_file() else None

    @contextmanager
    def open(self, keep_copy: bool = False) -> Iterator[Opened]:
        """Open for reading; ``keep_copy`` saves stdin so that it can be opened again."""
        if self.is_stdin and self._copy is None:
            copy = None
            if keep_copy:
                folder = tempfile.mkdtemp(prefix="streamskew-stdin-")
                self._copy = Path(folder) / "stdin"
                copy = open(self._copy, "wb")  # noqa: SIM115 - closed below
            raw = _Counting(_stdin_bytes(), copy)
            try:
                yield self._layers(raw)
            finally:
                if copy is not None:
                    copy.close()
            return
        path = self._copy or self.path
        assert path is not None
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise FileProblem(f"{self.label}: cannot read: {exc.strerror}") from None
        try:
            yield self._layers(_Counting(handle, None))
        finally:
            handle.close()

    def cleanup(self) -> None:
        """Delete the saved copy of stdin, if any."""
        if self._copy is not None:
            shutil.rmtree(self._copy.parent, ignore_errors=True)
            self._copy = None

    def _layers(self, raw: _Counting) -> Opened:
        stream: BinaryIO = io.BufferedReader(raw, buffer_size=_BUFFER)  # type: ignore[arg-type]
        head, stream = _peek(stream, 2)
        gzipped = head == GZIP_MAGIC
        if gzipped:
            stream = _Guarded(gzip.GzipFile(fileobj=stream, mode="rb"), self.label)  # type: ignore[assignment]
        head, stream = _peek(stream, 64)
        if head.startswith(UTF8_BOM):
            head, stream = _peek(_skip(stream, len(UTF8_BOM)), 64)
        return Opened(stream, lambda: raw.count, gzipped, head)


def resolve_inputs(names: Iterable[str]) -> list[Input]:
    """Check the inputs as named on the command line; raises :class:`FileProblem`."""
    inputs = [Input(str(name)) for name in names]
    if not inputs:
        raise FileProblem("no input: pass --input FILE (several allowed; - reads stdin)")
    if sum(source.is_stdin for source in inputs) > 1:
        raise FileProblem("standard input (-) can be read only once; name it once")
    for source in inputs:
        if source.path is None:
            continue
        if source.path.is_dir():
            raise FileProblem(f"{source.name}: is a directory; pass the files in it, e.g. "
                               f"{source.name.rstrip('/')}/*.jsonl")
        if not source.path.exists():
            raise FileProblem(f"{source.name}: no such file")
    return inputs


def _stdin_bytes() -> IO[bytes]:
    stream = sys.stdin
    if stream is None:  # pragma: no cover - a process started without stdin
        raise FileProblem("standard input is closed; pass a file instead of -")
    return getattr(stream, "buffer", stream)  # type: ignore[return-value]


def _peek(stream: BinaryIO, n: int) -> tuple[bytes, BinaryIO]:
    """The first ``n`` bytes (fewer at the end), and a stream that still starts with them."""
    head = b""
    while len(head) < n:
        chunk = stream.read(n - len(head))
        if not chunk:
            break
        head += chunk
    if not head:
        return head, stream
    return head, io.BufferedReader(_Prefixed(head, stream), buffer_size=_BUFFER)  # type: ignore[return-value]


def _skip(stream: BinaryIO, n: int) -> BinaryIO:
    stream.read(n)
    return stream


class _Counting(io.RawIOBase):
    """The source's bytes, counted (for progress) and optionally copied (stdin, two passes)."""

    def __init__(self, inner: IO[bytes], copy: IO[bytes] | None) -> None:
        self.inner = inner
        self.copy = copy
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.inner.read(len(buffer))
        if not data:
            return 0
        n = len(data)
        buffer[:n] = data
        self.count += n
        if self.copy is not None:
            self.copy.write(data)
        return n


class _Prefixed(io.RawIOBase):
    """Bytes already read (``head``), then the rest of ``inner``."""

    def __init__(self, head: bytes, inner: BinaryIO) -> None:
        self.head = head
        self.inner = inner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self.head:
            n = min(len(buffer), len(self.head))
            buffer[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        data = self.inner.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        return n


class _Guarded(io.RawIOBase):
    """A gzip stream whose damage (truncated, corrupt) is an :class:`FileProblem`."""

    def __init__(self, inner: gzip.GzipFile, label: str) -> None:
        self.inner = inner
        self.label = label

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        try:
            return self.inner.readinto(buffer)
        except (EOFError, OSError, zlib.error) as exc:
            raise FileProblem(f"{self.label}: damaged gzip data ({exc}); "
                               "check the file with `gzip -t`") from None

    def read(self, size: int = -1) -> bytes:
        try:
            return self.inner.read(size)
        except (EOFError, OSError, zlib.error) as exc:
            raise FileProblem(f"{self.label}: damaged gzip data ({exc}); "
                               "check the file with `gzip -t`") from None


def sniff_format(head: bytes) -> str:
    """``jsonl`` when the content starts with ``{``, ``parquet`` for Parquet, else ``csv``.

    >>> sniff_format(b' {"a": 1}'), sniff_format(b"PAR1..."), sniff_format(b"a,b\\n1,2")
    ('jsonl', 'parquet', 'csv')
    """
    head = head.lstrip()
    if head.startswith(PARQUET_MAGIC):
        return "parquet"
    return "jsonl" if head.startswith((b"{", b"[")) else "csv"

