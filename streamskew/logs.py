"""Logging for the whole process, configured once by the command line.

Every streamskew module logs with ``logging.getLogger(__name__)``; :func:`configure` sends
those lines to stderr, one per line, as text for people or as JSON for log shippers:

- level: ``info`` by default (service lifecycle lines and notes show), ``-v`` = ``debug``,
  ``-q`` = ``warning``, ``-qq`` = ``error``; ``--log-level`` names it outright;
- other libraries (kafka-python) log only with ``--debug``: their connection retries would
  otherwise bury the one line that says what is wrong;
- ``--log-format json``: one JSON object per line with ``time`` (UTC ISO-8601), ``level``,
  ``logger``, ``message``, any ``extra=`` fields, and ``exc`` (the traceback) when there is one.

>>> import io, json, logging
>>> out = io.StringIO()
>>> configure("info", "json", stream=out)
>>> logging.getLogger("streamskew.kafka.service").info("assigned %s", "requests/0",
...                                                    extra={"partitions": 1})
>>> line = json.loads(out.getvalue())
>>> line["level"], line["logger"], line["message"], line["partitions"]
('info', 'streamskew.kafka.service', 'assigned requests/0', 1)
>>> reset()
"""

from __future__ import annotations

import logging
import sys
import traceback
from datetime import UTC, datetime
from typing import IO, Any

import orjson

__all__ = ["FORMATS", "LEVELS", "JsonFormatter", "TextFormatter", "configure", "level_from",
           "reset", "settings"]

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")
DEFAULT_LEVEL = "info"
_ROOT = "streamskew"
# The attributes every LogRecord has; anything else came in through ``extra=``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message", "asctime", "taskName"}
_MARK = "_streamskew_handler"
_settings: dict[str, Any] = {}


def level_from(verbose: int = 0, quiet: int = 0, level: str | None = None) -> str:
    """The level name from ``-v``/``-q`` counts or an explicit ``--log-level``.

    >>> level_from(), level_from(verbose=1), level_from(quiet=1), level_from(quiet=2)
    ('info', 'debug', 'warning', 'error')
    >>> level_from(verbose=1, level="error")
    'error'
    """
    if level is not None:
        return level.lower()
    step = LEVELS.index(DEFAULT_LEVEL) - verbose + quiet
    return LEVELS[max(0, min(step, len(LEVELS) - 1))]


class TextFormatter(logging.Formatter):
    """``HH:MM:SS level message`` (local time), the traceback below when there is one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        original = record.levelname
        record.levelname = original.lower()
        try:
            return super().format(record)
        finally:
            record.levelname = original


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (see the module docs)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(), "logger": record.name,
            "message": record.getMessage()}
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        return orjson.dumps(entry, default=str).decode()


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to ``sys.stderr`` as it is when a line is logged (tests swap it)."""

    def __init__(self, stream: IO[str] | None) -> None:
        super().__init__(stream or sys.stderr)
        self._fixed = stream

    @property  # type: ignore[override]
    def stream(self) -> IO[str]:
        return self._fixed or sys.stderr

    @stream.setter
    def stream(self, value: IO[str]) -> None:
        pass  # the stream is looked up at each line



def configure(level: str = DEFAULT_LEVEL, fmt: str = "text", debug: bool = False,
              stream: IO[str] | None = None) -> None:
    """Send log lines to stderr (or ``stream``) for the whole process; call again to change.

    ``debug`` lets other libraries' lines through too (at ``warning`` and above, or at
    ``level`` if that is lower).
    """
    if level not in LEVELS:
        raise ValueError(f"log level {level!r}: use one of {', '.join(LEVELS)}")
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: use text or json")
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(handler)
    handler = _StderrHandler(stream)
    setattr(handler, _MARK, True)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    numeric = getattr(logging, level.upper())
    logging.getLogger(_ROOT).setLevel(numeric)
    # Other libraries: silent unless --debug (the root's level governs them).
    root.setLevel(min(numeric, logging.WARNING) if debug else logging.CRITICAL + 1)
    handler.setLevel(logging.DEBUG)
    _settings.clear()
    _settings.update(level=level, fmt=fmt, debug=debug)


def settings() -> dict[str, Any]:
    """The arguments of the last :func:`configure` call, to repeat it in a child process
    (``run --workers`` spawns its workers): ``logs.configure(**settings)``."""
    return dict(_settings)


def reset() -> None:
    """Undo :func:`configure` (tests)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger(_ROOT).setLevel(logging.NOTSET)
    _settings.clear()
