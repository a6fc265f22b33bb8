"""Training-data files -> chunks of columns, for baselines larger than memory.

CSV (header row), JSONL (flat records, or messages in the prediction-request envelope) and
Parquet (``pip install 'streamskew[parquet]'``). Each reader yields ``dict[str, list]`` chunks
of at most ``chunk_rows`` rows; a column absent from a row holds ``None`` there. Values keep
their file types: strings from CSV, JSON types from JSONL, Python values from Parquet.
A line that cannot be read is reported with its file and line number, never silently dropped.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .config import MessageConfig
from .inputs import FileProblem, Input, Opened, sniff_format
from .records import _get, _path

__all__ = ["FORMATS", "FileProblem", "SkippedLines", "file_format", "read_chunks"]

FORMATS = ("csv", "jsonl", "parquet")
#: The name pandas gives an unnamed column when it reads a CSV (and writes it back).
_PANDAS_UNNAMED = re.compile(r"Unnamed: 0")

Note = Callable[[str], None]


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


_SUFFIXES = ((".csv", "csv"), (".tsv", None), (".jsonl", "jsonl"), (".ndjson", "jsonl"),
             (".json", "jsonl"), (".parquet", "parquet"), (".pq", "parquet"))


def file_format(path: str | Path | Input) -> str:
    """The format named by the file's extension (``.gz`` allowed for CSV/JSONL).

    >>> file_format("train.csv.gz"), file_format("requests.ndjson"), file_format("t.pq")
    ('csv', 'jsonl', 'parquet')
    """
    source = path if isinstance(path, Input) else Input(str(path))
    name = source.suffix_name
    for suffix, fmt in _SUFFIXES:
        if name.endswith(suffix) and fmt is not None:
            return fmt
    raise FileProblem(f"{source.label}: unknown file type; use .csv, .jsonl (or .ndjson), "
                      ".parquet (CSV and JSONL may be gzipped: .csv.gz)")


def read_chunks(path: str | Path | Input, message: MessageConfig, chunk_rows: int,
                skipped: SkippedLines, on_bytes: Callable[[int], None] | None = None,
                note: Note | None = None, keep_copy: bool = False,
                ) -> Iterator[dict[str, list[Any]]]:
    """Yield column chunks of one input (see the module docs).

    ``note(text)`` hears what was done to the input that the user should know (a skipped
    index column); ``keep_copy`` keeps standard input for a second pass (see
    :mod:`streamskew.inputs`).
    """
    source = path if isinstance(path, Input) else Input(str(path))
    fmt = None if source.is_stdin else file_format(source)
    if fmt == "parquet":
        yield from _parquet_chunks(source, chunk_rows, on_bytes)
        return
    with source.open(keep_copy=keep_copy) as opened:
        fmt = fmt or sniff_format(opened.head)
        if fmt == "parquet":
            raise FileProblem(f"{source.label}: Parquet cannot be read from a stream; pass "
                              "the file's path")
        if fmt == "csv":
            yield from _csv_chunks(source, opened, chunk_rows, skipped, on_bytes, note)
        else:
            yield from _jsonl_chunks(source, opened, message, chunk_rows, skipped, on_bytes)
        if on_bytes:
            on_bytes(opened.consumed())


def _columns(rows: list[dict[str, Any]], names: dict[str, None]) -> dict[str, list[Any]]:
    return {name: [row.get(name) for row in rows] for name in names}


def _csv_header(source: Input, header: list[str], note: Note | None
                ) -> tuple[list[str], int]:
    """The column names, and how many leading columns to skip (pandas' unnamed index)."""
    where = f"{source.label}:1"
    skip = 0
    if len(header) > 1 and (header[0] == "" or _PANDAS_UNNAMED.fullmatch(header[0])) \
            and all(header[1:]):
        skip = 1
        if note is not None:
            note(f"{source.label}: the first column has no name ({header[0]!r}): the index "
                 "pandas writes with DataFrame.to_csv(); skipped it (to_csv(index=False) "
                 "leaves it out)")
    names = header[skip:]
    empty = [i + skip + 1 for i, name in enumerate(names) if not name.strip()]
    if empty:
        raise FileProblem(f"{where}: column {', '.join(map(str, empty))} of the header row "
                          "has no name; every column needs a unique name")
    seen: set[str] = set()
    twice = sorted({name for name in names if name in seen or seen.add(name)})  # type: ignore[func-returns-value]
    if twice:
        raise FileProblem(f"{where}: the header row names {', '.join(map(repr, twice))} "
                          "more than once; every column needs a unique, non-empty name")
    return names, skip


def _csv_chunks(source: Input, opened: Opened, chunk_rows: int, skipped: SkippedLines,
                on_bytes: Callable[[int], None] | None, note: Note | None,
                ) -> Iterator[dict[str, list[Any]]]:
    handle = io.TextIOWrapper(opened.stream, encoding="utf-8", newline="")
    reader = csv.reader(handle)
    label = source.label
    try:
        header = next(reader)
    except StopIteration:
        raise FileProblem(f"{label}: empty file; a CSV needs a header row") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise FileProblem(f"{label}:1: cannot read the header row: {exc}") from None
    header, skip = _csv_header(source, header, note)
    width = len(header) + skip
    columns: list[list[Any]] = [[] for _ in header]
    rows = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except (csv.Error, UnicodeDecodeError) as exc:
            skipped.add(f"{label}:{reader.line_num}", "unreadable CSV line", str(exc))
            continue
        if len(row) != width:
            if row:  # blank lines are fine
                skipped.add(f"{label}:{reader.line_num}", "wrong number of fields",
                            f"{len(row) - skip} where the header has {width - skip}")
            continue
        for column, value in zip(columns, row[skip:] if skip else row, strict=True):
            column.append(value)
        rows += 1
        if rows == chunk_rows:
            yield dict(zip(header, columns, strict=True))
            if on_bytes:
                on_bytes(opened.consumed())
            columns = [[] for _ in header]
            rows = 0
    if rows:
        yield dict(zip(header, columns, strict=True))


def _jsonl_chunks(source: Input, opened: Opened, message: MessageConfig, chunk_rows: int,
                  skipped: SkippedLines, on_bytes: Callable[[int], None] | None,
                  ) -> Iterator[dict[str, list[Any]]]:
    features_path = _path(message.features)
    prediction_path = _path(message.prediction)
    prediction_name = prediction_path[-1] if prediction_path else None
    envelope_keys = {p[0] for p in (_path(message.timestamp), _path(message.model),
                                    prediction_path) if p}
    envelope_keys.update(message.exclude)
    label = source.label
    rows: list[dict[str, Any]] = []
    names: dict[str, None] = {}
    for number, line in enumerate(opened.stream, start=1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            skipped.add(f"{label}:{number}", "invalid JSON", str(exc))
            continue
        if not isinstance(obj, dict):
            skipped.add(f"{label}:{number}", "not a JSON object")
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
                on_bytes(opened.consumed())
            rows = []
    if rows:
        yield _columns(rows, names)


def _parquet_chunks(source: Input, chunk_rows: int,
                    on_bytes: Callable[[int], None] | None) -> Iterator[dict[str, list[Any]]]:
    label = source.label
    path = source.path
    assert path is not None
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise FileProblem(f"{label}: reading Parquet needs pyarrow: "
                          "pip install 'streamskew[parquet]'") from None
    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise FileProblem(f"{label}: not a readable Parquet file ({exc})") from None
    size = source.size() or 0
    total = max(parquet.metadata.num_rows, 1)
    done = 0
    for batch in parquet.iter_batches(batch_size=chunk_rows):
        done += batch.num_rows
        yield {name: batch.column(i).to_pylist() for i, name in enumerate(batch.schema.names)}
        if on_bytes:
            on_bytes(int(size * done / total))
