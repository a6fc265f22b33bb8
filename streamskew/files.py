"""File adapter: JSONL prediction-request messages -> the engine -> events and dead letters.

Each line carries the same bytes a Kafka record value would. Inputs are files or ``-``
(stdin), gzipped or not (:mod:`streamskew.inputs`); several are read one after another as
one stream, in the order given. Bad lines never stop the run: each one goes to the
dead-letter file with its reason, its input and its line number.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO

import orjson

from .baseline import Baseline
from .config import Config
from .detector import Detector, SkewEvent, WindowResult
from .inputs import FileProblem, Input, resolve_inputs, sniff_format
from .readers import file_format
from .records import BadRecord

__all__ = ["DetectRun", "InputCounts", "LineBatch", "dead_letter_json", "detect_file",
           "iter_line_batches"]

BATCH_LINES = 20_000


@dataclass
class LineBatch:
    """Consecutive non-blank lines of one input, with their line numbers (from 1)."""

    source: str
    numbers: list[int]
    lines: list[bytes]


def iter_batches(source: Input, batch: int = BATCH_LINES,
                 on_bytes: Callable[[int], None] | None = None) -> Iterator[LineBatch]:
    """The lines of one input in batches, newline bytes removed; blank lines are skipped
    (they are not records) and the line numbers stay exact."""
    with source.open() as opened:
        _check_messages(source, opened.head)
        numbers: list[int] = []
        lines: list[bytes] = []
        for number, line in enumerate(opened.stream, start=1):
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            numbers.append(number)
            lines.append(line)
            if len(lines) == batch:
                yield LineBatch(source.label, numbers, lines)
                if on_bytes is not None:
                    on_bytes(opened.consumed())
                numbers, lines = [], []
        if lines:
            yield LineBatch(source.label, numbers, lines)
        if on_bytes is not None:
            on_bytes(opened.consumed())


def iter_line_batches(path: str | os.PathLike[str], batch: int = BATCH_LINES
                      ) -> Iterator[tuple[list[int], list[bytes]]]:
    """Yield ``(line numbers, lines)`` batches of one JSONL file (gzip and ``-`` allowed)."""
    [source] = resolve_inputs([str(path)])
    for part in iter_batches(source, batch):
        yield part.numbers, part.lines


def _check_messages(source: Input, head: bytes) -> None:
    """Training tables are not messages: say so before every line is rejected."""
    try:
        named = file_format(source) if not source.is_stdin else None
    except FileProblem:
        named = None  # no known extension: the content decides
    if named in ("csv", "parquet") or sniff_format(head) == "parquet":
        kind = "Parquet" if named == "parquet" or sniff_format(head) == "parquet" else "CSV"
        raise FileProblem(f"{source.label}: detect reads JSON lines of prediction-request "
                          f"messages (what a Kafka record value holds); this is a {kind} "
                          "file. Training tables go to `streamskew baseline build`; to "
                          "judge logged rows, write them as JSON lines (pandas: "
                          "to_json(orient='records', lines=True)) with [message] features = \"\"")


def dead_letter_json(record: BadRecord, line: int | None = None,
                     source: str | None = None) -> bytes:
    """One dead-letter line: the reason, where it was, and the original bytes."""
    entry: dict[str, object] = {"reason": record.reason, "detail": record.detail,
                                "used": record.used}
    if source is not None:
        entry["source"] = source
    if line is not None:
        entry["line"] = line
    if record.event_time is not None:
        entry["event_time"] = record.event_time
    try:
        entry["raw"] = record.raw.decode("utf-8")
    except UnicodeDecodeError:
        entry["raw_base64"] = base64.b64encode(record.raw).decode()
    return orjson.dumps(entry)


@dataclass
class InputCounts:
    """What one input contributed (the engine's counters, before and after it)."""

    source: str
    records: int = 0
    accepted: int = 0
    rejected: int = 0
    late: int = 0


@dataclass
class DetectRun:
    """What a ``detect`` run produced."""

    detector: Detector
    events: list[SkewEvent]
    lines: int
    inputs: list[InputCounts] = field(default_factory=list)


def detect_file(config: Config, baseline: Baseline,
                path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                on_event: Callable[[SkewEvent], None] | None = None,
                dead_letters: IO[bytes] | None = None,
                on_window: Callable[[WindowResult], None] | None = None,
                progress: bool = False,
                on_bad_record: Callable[[BadRecord], None] | None = None) -> DetectRun:
    """Run the engine over one or several JSONL inputs (files, ``-`` for stdin), in order."""
    from tqdm import tqdm

    names = [path] if isinstance(path, str | os.PathLike) else list(path)
    sources = resolve_inputs(str(name) for name in names)
    current = LineBatch("", [], [])

    def on_bad(record: BadRecord) -> None:
        if on_bad_record is not None:
            on_bad_record(record)
        if dead_letters is not None:  # the record's id is its line number in its input
            dead_letters.write(dead_letter_json(record, record.position, current.source)
                               + b"\n")

    detector = Detector(config, baseline, on_bad_record=on_bad, on_window=on_window)
    run = DetectRun(detector, [], 0)

    def emit(new: list[SkewEvent]) -> None:
        for event in new:
            run.events.append(event)
            if on_event is not None:
                on_event(event)

    sizes = [source.size() for source in sources]
    total = None if None in sizes else sum(sizes)  # type: ignore[arg-type]
    with tqdm(total=total, unit="B", unit_scale=True, desc="detect", disable=not progress,
              leave=False) as bar:
        for source in sources:
            before = detector.stats
            counts = InputCounts(source.label)
            start = (before.records, before.accepted, before.bad_total, before.late)
            done = bar.n

            def advance(position: int, offset: int = done) -> None:
                bar.update(max(offset + position - bar.n, 0))

            for batch in iter_batches(source, on_bytes=advance):
                current = batch  # read by on_bad
                emit(_process(detector, batch))
                run.lines += len(batch.lines)
            after = detector.stats
            counts.records, counts.accepted, counts.rejected, counts.late = (
                after.records - start[0], after.accepted - start[1],
                after.bad_total - start[2], after.late - start[3])
            run.inputs.append(counts)
        emit(detector.flush())
    return run


def _process(detector: Detector, batch: LineBatch) -> list[SkewEvent]:
    """The one call into the engine for a batch of lines: their line numbers are the
    records' ids, which bad records carry back as ``BadRecord.position``."""
    return detector.process(batch.lines, ids=batch.numbers)
