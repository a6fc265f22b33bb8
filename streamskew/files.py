"""File adapter: JSONL prediction-request messages -> the engine -> events and dead letters.

Each line carries the same bytes a Kafka record value would. Bad lines never stop the run:
each one goes to the dead-letter file with its reason and line number.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import orjson

from .baseline import Baseline
from .config import Config
from .detector import Detector, SkewEvent, WindowResult
from .records import BadRecord

__all__ = ["DetectRun", "dead_letter_json", "detect_file", "iter_line_batches"]

BATCH_LINES = 20_000


def iter_line_batches(path: str | os.PathLike[str], batch: int = BATCH_LINES
                      ) -> Iterator[tuple[list[int], list[bytes]]]:
    """Yield ``(line numbers, lines)`` batches of a JSONL file, newline bytes removed.

    Blank lines are not records and are skipped; the line numbers stay exact.
    """
    with open(path, "rb") as handle:
        numbers: list[int] = []
        lines: list[bytes] = []
        for number, line in enumerate(handle, start=1):
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            numbers.append(number)
            lines.append(line)
            if len(lines) == batch:
                yield numbers, lines
                numbers, lines = [], []
        if lines:
            yield numbers, lines


def dead_letter_json(record: BadRecord, line: int | None = None,
                     source: str | None = None) -> bytes:
    """One dead-letter line: the reason, where it was, and the original bytes."""
    entry: dict[str, object] = {"reason": record.reason, "detail": record.detail,
                                "used": record.used}
    if source is not None:
        entry["source"] = source
    if line is not None:
        entry["line"] = line
    try:
        entry["raw"] = record.raw.decode("utf-8")
    except UnicodeDecodeError:
        entry["raw_base64"] = base64.b64encode(record.raw).decode()
    return orjson.dumps(entry)


@dataclass
class DetectRun:
    """What a ``detect`` run produced."""

    detector: Detector
    events: list[SkewEvent]
    lines: int


def detect_file(config: Config, baseline: Baseline, path: str | os.PathLike[str],
                on_event: Callable[[SkewEvent], None] | None = None,
                dead_letters: IO[bytes] | None = None,
                on_window: Callable[[WindowResult], None] | None = None,
                progress: bool = False,
                on_bad_record: Callable[[BadRecord], None] | None = None) -> DetectRun:
    """Run the engine over one JSONL file of messages."""
    from tqdm import tqdm

    def on_bad(record: BadRecord) -> None:
        if on_bad_record is not None:
            on_bad_record(record)
        if dead_letters is not None:  # the record's id in the file is its line number
            dead_letters.write(dead_letter_json(record, record.position, str(path)) + b"\n")

    detector = Detector(config, baseline, on_bad_record=on_bad, on_window=on_window)
    events: list[SkewEvent] = []
    lines = 0

    def emit(new: list[SkewEvent]) -> None:
        for event in new:
            events.append(event)
            if on_event is not None:
                on_event(event)

    size = Path(path).stat().st_size
    with tqdm(total=size, unit="B", unit_scale=True, desc="detect", disable=not progress,
              leave=False) as bar:
        for line_numbers, batch in iter_line_batches(path):
            emit(detector.process(batch, ids=line_numbers))
            lines += len(batch)
            bar.update(sum(len(line) + 1 for line in batch))
        emit(detector.flush())
    return DetectRun(detector, events, lines)
