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
from typing import IO, Any

import orjson

from .baseline import Baseline
from .config import Config
from .detector import Detector, SkewEvent, WindowResult
from .inputs import FileProblem, Input, resolve_inputs, sniff_format
from .readers import file_format
from .records import NO_TIME, BadRecord

__all__ = ["DetectRun", "InputCounts", "LineBatch", "dead_letter_json", "detect_file",
           "iter_line_batches"]

BATCH_LINES = 20_000
#: With labels, requests and labels are read in smaller batches, interleaved by event time
#: as a live run would receive them, so the pending requests stay few.
INTERLEAVED_BATCH_LINES = 2_000


@dataclass
class LineBatch:
    """Consecutive non-blank lines of one input, with their line numbers (from 1)."""

    source: str
    numbers: list[int]
    lines: list[bytes]


def iter_batches(source: Input, batch: int = BATCH_LINES,
                 on_bytes: Callable[[int], None] | None = None,
                 labels: bool = False) -> Iterator[LineBatch]:
    """The lines of one input in batches, newline bytes removed; blank lines are skipped
    (they are not records) and the line numbers stay exact. ``labels``: the input holds
    label records (``--labels``), which the error for a table names."""
    with source.open() as opened:
        _check_messages(source, opened.head, labels)
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


def _check_messages(source: Input, head: bytes, labels: bool = False) -> None:
    """Training tables are not messages: say so before every line is rejected."""
    try:
        named = file_format(source) if not source.is_stdin else None
    except FileProblem:
        named = None  # no known extension: the content decides
    if named in ("csv", "parquet") or sniff_format(head) == "parquet":
        kind = "Parquet" if named == "parquet" or sniff_format(head) == "parquet" else "CSV"
        if labels:
            raise FileProblem(f"{source.label}: --labels reads JSON lines of label records "
                              f"(request id, label, label time: the paths in [labels]); "
                              f"this is a {kind} file. Write it as JSON lines (pandas: "
                              "to_json(orient='records', lines=True))")
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
                on_bad_record: Callable[[BadRecord], None] | None = None,
                labels: Sequence[str | os.PathLike[str]] = (),
                on_performance_window: Callable[[Any], None] | None = None) -> DetectRun:
    """Run the engine over one or several JSONL inputs (files, ``-`` for stdin), in order.

    ``labels`` are JSONL files of label records (``[labels]`` in the config), read beside
    the requests and fed to the engine interleaved by event time (label time against
    request time), as a live run receives them; bad label records go to ``dead_letters``
    too, with their input and line."""
    from tqdm import tqdm

    names = [path] if isinstance(path, str | os.PathLike) else list(path)
    sources = resolve_inputs(str(name) for name in names)
    label_sources = resolve_inputs(str(name) for name in labels) if labels else []
    if label_sources and config.labels is None:
        from dataclasses import replace

        from .config import LabelsConfig

        config = replace(config, labels=LabelsConfig())  # the defaults: README
    current = LineBatch("", [], [])
    current_labels = LineBatch("", [], [])

    def on_bad(record: BadRecord) -> None:
        if on_bad_record is not None:
            on_bad_record(record)
        if dead_letters is not None:  # the record's id is its line number in its input
            dead_letters.write(dead_letter_json(record, record.position, current.source)
                               + b"\n")

    def on_bad_label(record: BadRecord) -> None:
        if dead_letters is not None:
            dead_letters.write(dead_letter_json(record, record.position,
                                                current_labels.source) + b"\n")

    detector = Detector(config, baseline, on_bad_record=on_bad, on_window=on_window,
                        on_performance_window=on_performance_window,
                        on_bad_label=on_bad_label)
    run = DetectRun(detector, [], 0)

    def emit(new: list[SkewEvent]) -> None:
        for event in new:
            run.events.append(event)
            if on_event is not None:
                on_event(event)

    sizes = [source.size() for source in sources]
    total = None if None in sizes else sum(sizes)  # type: ignore[arg-type]
    batch_lines = INTERLEAVED_BATCH_LINES if label_sources else BATCH_LINES
    label_stream = _label_batches(label_sources, config)

    with tqdm(total=total, unit="B", unit_scale=True, desc="detect", disable=not progress,
              leave=False) as bar:
        for source in sources:
            before = detector.stats
            counts = InputCounts(source.label)
            start = (before.records, before.accepted, before.bad_total, before.late)
            done = bar.n

            def advance(position: int, offset: int = done) -> None:
                bar.update(max(offset + position - bar.n, 0))

            for batch in iter_batches(source, batch_lines, on_bytes=advance):
                for label_batch in label_stream.before(_first_time(batch, config, False)):
                    current_labels = label_batch
                    emit(detector.process_labels(label_batch.lines, ids=label_batch.numbers))
                current = batch  # read by on_bad
                emit(_process(detector, batch))
                run.lines += len(batch.lines)
            after = detector.stats
            counts.records, counts.accepted, counts.rejected, counts.late = (
                after.records - start[0], after.accepted - start[1],
                after.bad_total - start[2], after.late - start[3])
            run.inputs.append(counts)
        for label_batch in label_stream.before(None):
            current_labels = label_batch
            emit(detector.process_labels(label_batch.lines, ids=label_batch.numbers))
        emit(detector.flush())
    return run


class _LabelStream:
    """Label batches, handed out in step with the requests by their first event time."""

    def __init__(self, sources: list[Input], config: Config) -> None:
        self.config = config
        self.batches = (batch for source in sources
                        for batch in iter_batches(source, INTERLEAVED_BATCH_LINES,
                                                  labels=True))
        self.next: LineBatch | None = None
        self.next_time: int | None = None

    def before(self, time: int | None) -> Iterator[LineBatch]:
        """Batches whose first label time is at or before ``time`` (all when None or when
        the requests carry no time)."""
        while True:
            if self.next is None:
                self.next = next(self.batches, None)
                if self.next is None:
                    return
                self.next_time = _first_time(self.next, self.config, True)
            if time is not None and self.next_time is not None and self.next_time > time:
                return
            batch, self.next = self.next, None
            yield batch


def _label_batches(sources: list[Input], config: Config) -> _LabelStream:
    return _LabelStream(sources, config)


def _first_time(batch: LineBatch, config: Config, labels: bool) -> int | None:
    """The event time of a batch's first line that has one (None: none in the first lines)."""
    from .records import _get, _path, _to_millis

    if labels:
        path = _path(config.labels.label_time if config.labels else "timestamp")
    else:
        path = _path(config.message.timestamp)
    if not path:
        return None
    for line in batch.lines[:16]:
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        millis, problem = _to_millis(_get(obj, path) if isinstance(obj, dict) else None)
        if problem is None and millis != NO_TIME:
            return millis
    return None


def _process(detector: Detector, batch: LineBatch) -> list[SkewEvent]:
    """The one call into the engine for a batch of lines: their line numbers are the
    records' ids, which bad records carry back as ``BadRecord.position``."""
    return detector.process(batch.lines, ids=batch.numbers)
