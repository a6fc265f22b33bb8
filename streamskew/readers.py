"""Training-data files -> chunks of columns, for baselines larger than memory.

CSV (header row), JSONL (flat records, or messages in the prediction-request envelope) and
Parquet (``pip install 'streamskew[parquet]'``). Each reader yields ``dict[str, list]`` chunks
of at most ``chunk_rows`` rows; a column absent from a row holds ``None`` there. Values keep
their file types: strings from CSV, JSON types from JSONL, Python values from Parquet.
A line that cannot be read is reported with its file and line number, never silently dropped.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from .config import MessageConfig
from .errors import StreamskewError
from .records import _get, _path

__all__ = ["FORMATS", "FileProblem", "SkippedLines", "file_format", "read_chunks"]

FORMATS = ("csv", "jsonl", "parquet")


class FileProblem(StreamskewError, ValueError):
    """An input file cannot be used; the message names the file (and line) and the fix."""


@dataclass
class SkippedLines:
    """Lines of the input that could not be used, by reason, with a few examples."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    def add(self, where: str, reason: str, detail: str = "") -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if len(self.examples) < 5:
            self.examples.append(f"{where}: {reason}{f' ({detail})' if detail else ''}")

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def file_format(path: str | os.PathLike[str]) -> str:
    """The format named by the file's extension (``.gz`` allowed for CSV/JSONL)."""
    name = Path(path).name.lower().removesuffix(".gz")
    for suffix, fmt in ((".csv", "csv"), (".jsonl", "jsonl"), (".ndjson", "jsonl"),
                        (".json", "jsonl"), (".parquet", "parquet"), (".pq", "parquet")):
        if name.endswith(suffix):
            return fmt
    raise FileProblem(f"{path}: unknown file type; use .csv, .jsonl (or .ndjson), .parquet "
                      "(CSV and JSONL may be gzipped: .csv.gz)")


def _open_text(path: Path) -> IO[str]:
    if path.name.lower().endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def read_chunks(path: str | os.PathLike[str], message: MessageConfig, chunk_rows: int,
                skipped: SkippedLines, on_bytes: Callable[[int], None] | None = None,
                ) -> Iterator[dict[str, list[Any]]]:
    """Yield column chunks of one file (see the module docs)."""
    path = Path(path)
    if not path.is_file():
        raise FileProblem(f"{path}: no such file")
    fmt = file_format(path)
    if fmt == "csv":
        yield from _csv_chunks(path, chunk_rows, skipped, on_bytes)
    elif fmt == "jsonl":
        yield from _jsonl_chunks(path, message, chunk_rows, skipped, on_bytes)
    else:
        yield from _parquet_chunks(path, chunk_rows, on_bytes)


def _columns(rows: list[dict[str, Any]], names: dict[str, None]) -> dict[str, list[Any]]:
    return {name: [row.get(name) for row in rows] for name in names}


def _csv_chunks(path: Path, chunk_rows: int, skipped: SkippedLines,
                on_bytes: Callable[[int], None] | None) -> Iterator[dict[str, list[Any]]]:
    with _open_text(path) as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise FileProblem(f"{path}: empty file; a CSV needs a header row") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise FileProblem(f"{path}:1: cannot read the header row: {exc}") from None
        if len(set(header)) != len(header) or any(not name for name in header):
            raise FileProblem(f"{path}:1: the header row needs unique, non-empty column names")
        width = len(header)
        columns: list[list[Any]] = [[] for _ in header]
        rows = 0
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except (csv.Error, UnicodeDecodeError) as exc:
                skipped.add(f"{path}:{reader.line_num}", "unreadable CSV line", str(exc))
                continue
            if len(row) != width:
                if row:  # blank lines are fine
                    skipped.add(f"{path}:{reader.line_num}", "wrong number of fields",
                                f"{len(row)} where the header has {width}")
                continue
            for column, value in zip(columns, row, strict=True):
                column.append(value)
            rows += 1
            if rows == chunk_rows:
                yield dict(zip(header, columns, strict=True))
                if on_bytes:
                    on_bytes(_position(handle))
                columns = [[] for _ in header]
                rows = 0
        if rows:
            yield dict(zip(header, columns, strict=True))
    if on_bytes:
        on_bytes(path.stat().st_size)


def _position(handle: IO[str]) -> int:
    raw = getattr(handle, "buffer", None) or handle
    try:
        inner = getattr(raw, "fileobj", None) or raw  # gzip: bytes read from disk
        return inner.tell()
    except (OSError, ValueError):
        return 0


def _jsonl_chunks(path: Path, message: MessageConfig, chunk_rows: int, skipped: SkippedLines,
                  on_bytes: Callable[[int], None] | None) -> Iterator[dict[str, list[Any]]]:
    features_path = _path(message.features)
    prediction_path = _path(message.prediction)
    prediction_name = prediction_path[-1] if prediction_path else None
    envelope_keys = {p[0] for p in (_path(message.timestamp), _path(message.model),
                                    prediction_path) if p}
    envelope_keys.update(message.exclude)
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    rows: list[dict[str, Any]] = []
    names: dict[str, None] = {}
    with opener(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                skipped.add(f"{path}:{number}", "invalid JSON", str(exc))
                continue
            if not isinstance(obj, dict):
                skipped.add(f"{path}:{number}", "not a JSON object")
                continue
            features = _get(obj, features_path) if features_path else None
            if isinstance(features, dict):  # an envelope message
                row = dict(features)
                if prediction_name is not None:
                    prediction = _get(obj, prediction_path)
                    if prediction is not None:
                        row[prediction_name] = prediction
            else:  # a flat record
                row = {k: v for k, v in obj.items() if k not in envelope_keys}
                if prediction_name is not None and prediction_name in obj:
                    row[prediction_name] = obj[prediction_name]
            for name in row:
                if name not in names:
                    names[name] = None
            rows.append(row)
            if len(rows) == chunk_rows:
                yield _columns(rows, names)
                if on_bytes:
                    on_bytes(_position(handle))
                rows = []
    if rows:
        yield _columns(rows, names)
    if on_bytes:
        on_bytes(path.stat().st_size)


def _parquet_chunks(path: Path, chunk_rows: int,
                    on_bytes: Callable[[int], None] | None) -> Iterator[dict[str, list[Any]]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise FileProblem(f"{path}: reading Parquet needs pyarrow: "
                          "pip install 'streamskew[parquet]'") from None
    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise FileProblem(f"{path}: not a readable Parquet file ({exc})") from None
    size = path.stat().st_size
    total = max(parquet.metadata.num_rows, 1)
    done = 0
    for batch in parquet.iter_batches(batch_size=chunk_rows):
        done += batch.num_rows
        yield {name: batch.column(i).to_pylist() for i, name in enumerate(batch.schema.names)}
        if on_bytes:
            on_bytes(int(size * done / total))
