"""Read skew events back from the alerts topic: ``streamskew alerts``.

The detector writes events to ``[kafka] alerts_topic`` in transactions, keyed ``model/feature``
(see README, "Events"). This module reads them with a group-less consumer: every partition is
assigned by hand and nothing is ever committed, so looking at alerts never moves anybody's
offsets. Only committed transactions are read (``isolation_level="read_committed"``).

Python API::

    for event in read_alerts(config, since_ms=parse_time("-1h")):   # dicts, as stored
        print(event["model"], event["feature"], event["check"])

    with AlertReader(config) as reader:          # records with partition/offset/raw bytes
        for record in reader.backlog():          # up to the end offsets seen at start
            ...
        for record in reader.follow(stop):       # then new ones, until stop.set()
            ...

A value that is not a skew event is reported (``on_invalid``; default: a warning line on
stderr naming partition and offset) and skipped.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import click
import orjson

from ..config import Config, ConfigError
from ..errors import StreamskewError
from ..timeparse import ACCEPTED_FORMS, format_time, parse_time
from .clients import consumer_settings
from .failures import connect_admin

__all__ = ["AlertReader", "AlertRecord", "AlertsError", "alerts", "parse_event", "read_alerts"]

EVENT_TYPES = ("skew_detected", "skew_resolved")
_POLL_MS = 250
OLDER_SCAN_LIMIT = 100_000  # offsets read to count the events before --since exactly
#: Fields the reader relies on, with the JSON types they must have.
_STRING_FIELDS = ("type", "model", "feature", "check", "metric", "severity")
_NUMBER_FIELDS = ("value", "threshold")


class AlertsError(StreamskewError, RuntimeError):
    """The alerts cannot be read (missing topic, unreachable broker); the message says why."""


@dataclass(frozen=True)
class AlertRecord:
    """One skew event read from the alerts topic, with where it was stored."""

    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    raw: bytes
    event: dict[str, Any]


InvalidHandler = Callable[[str, int, int, str], None]


def parse_event(value: bytes | None) -> dict[str, Any]:
    """Decode a record value into a skew event dict; ``ValueError`` says what is wrong.

    >>> from streamskew.detector.events import SkewEvent
    >>> event = SkewEvent("skew_detected", "fraud", "amount", "numeric", "distribution", "jsd",
    ...                   0.25, 0.1, "critical", 0, 600000, 3000, "d988d5313e68f9db", 37758)
    >>> parse_event(event.to_json()) == event.to_dict()
    True
    >>> parse_event(b'{"schema": "streamskew.event/v1", "type": "skew_detected"}')
    Traceback (most recent call last):
    ...
    ValueError: not a skew event: missing model, feature, check, metric, severity, value, threshold, window
    >>> parse_event(b"oops")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: not JSON: ...
    """  # noqa: E501
    if value is None:
        raise ValueError("empty value (tombstone)")
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(event, dict):
        raise ValueError(f"not a skew event: a JSON {type(event).__name__}, not an object")
    schema = event.get("schema")
    if not isinstance(schema, str) or not schema.startswith("streamskew.event/"):
        raise ValueError(f"not a skew event: schema is {schema!r}, "
                         "expected 'streamskew.event/v1'")
    missing = [name for name in (*_STRING_FIELDS, *_NUMBER_FIELDS, "window")
               if name not in event]
    if missing:
        raise ValueError(f"not a skew event: missing {', '.join(missing)}")
    wrong = [name for name in _STRING_FIELDS if not isinstance(event[name], str)]
    wrong += [name for name in _NUMBER_FIELDS
              if event[name] is not None
              and (isinstance(event[name], bool) or not isinstance(event[name], int | float))]
    window = event["window"]
    if not isinstance(window, dict) or not isinstance(window.get("end"), int | None):
        wrong.append("window")
    if wrong:
        raise ValueError(f"not a skew event: wrong type of {', '.join(wrong)}")
    return event


def _normalize_types(types: Iterable[str]) -> frozenset[str]:
    out = set()
    for name in types:
        full = name if name.startswith("skew_") else f"skew_{name}"
        if full not in EVENT_TYPES:
            raise ValueError(f"unknown event type {name!r}; use detected or resolved")
        out.add(full)
    return frozenset(out)


def warn_invalid(topic: str, partition: int, offset: int, reason: str) -> None:
    """The default ``on_invalid``: one warning line on stderr."""
    click.echo(f"warning: {topic} partition {partition} offset {offset}: {reason}; skipped",
               err=True)


class AlertReader:
    """A group-less, read-committed consumer of every partition of the alerts topic.

    ``backlog()`` yields what was in the topic when the reader was opened (from ``since_ms``,
    or the beginning); ``follow(stop)`` then yields what arrives later until ``stop`` is set.
    Filters: ``models``, ``features`` (any of the given names), ``types`` (``detected``,
    ``resolved`` or the full ``skew_...`` names). Raises ``AlertsError`` when the topic does
    not exist or the broker cannot be reached.
    """

    def __init__(self, config: Config, bootstrap_servers: str | None = None,
                 since_ms: int | None = None, models: Iterable[str] = (),
                 features: Iterable[str] = (), types: Iterable[str] = (),
                 on_invalid: InvalidHandler | None = None, poll_ms: int = _POLL_MS) -> None:
        from kafka import KafkaConsumer, TopicPartition
        from kafka.errors import KafkaError

        self.topic = config.kafka.alerts_topic
        self.models = frozenset(models)
        self.features = frozenset(features)
        self.types = _normalize_types(types)
        self.on_invalid: InvalidHandler = on_invalid or warn_invalid
        self.poll_ms = poll_ms
        self.since_ms = since_ms
        self.skipped_older = 0  # events older than since_ms found past the start offsets
        settings = consumer_settings(
            config.kafka, bootstrap_servers, group_id=None, enable_auto_commit=False,
            isolation_level="read_committed", auto_offset_reset="earliest",
            allow_auto_create_topics=False)
        settings.setdefault("client_id", "streamskew-alerts")
        servers = settings.get("bootstrap_servers")
        where = ",".join(servers) if isinstance(servers, list) else str(servers)
        # The first connection says why it failed (nothing listening, credentials refused).
        connect_admin(config.kafka, bootstrap_servers, "alerts").close()
        try:
            self._consumer = KafkaConsumer(**settings)
        except KafkaError as exc:
            raise AlertsError(f"cannot reach Kafka at {where}: {exc}") from None
        try:
            partitions = self._consumer.partitions_for_topic(self.topic)
            if not partitions:
                raise AlertsError(
                    f"the alerts topic {self.topic!r} does not exist on {where}; check "
                    f"`[kafka] alerts_topic` in the config (it is {self.topic!r}) and "
                    "--bootstrap-servers")
            self.partitions = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            self._consumer.assign(self.partitions)
            #: end offsets (last stable offsets) when the reader was opened: the backlog
            self.end_offsets: dict[Any, int] = dict(self._consumer.end_offsets(self.partitions))
            #: where each partition's backlog starts (the first offset at or after since_ms)
            self.start_offsets: dict[Any, int] = {}
            if since_ms is None:
                self._consumer.seek_to_beginning(*self.partitions)
            else:
                found = self._consumer.offsets_for_times(
                    {tp: max(0, int(since_ms)) for tp in self.partitions})
                for tp in self.partitions:
                    hit = found.get(tp)
                    self.start_offsets[tp] = hit.offset if hit is not None \
                        else self.end_offsets[tp]
                    self._consumer.seek(tp, self.start_offsets[tp])
        except AlertsError:
            self.close()
            raise
        except KafkaError as exc:
            self.close()
            raise AlertsError(f"cannot read {self.topic!r} from {where}: {exc}") from None

    def __enter__(self) -> AlertReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._consumer.close(autocommit=False)

    def backlog(self, stop: threading.Event | None = None) -> Iterator[AlertRecord]:
        """The events stored up to the end offsets seen when the reader was opened."""
        consumer = self._consumer
        remaining = {tp for tp in self.partitions
                     if consumer.position(tp) < self.end_offsets[tp]}
        consumer.pause(*(tp for tp in self.partitions if tp not in remaining))
        try:
            while remaining and not (stop is not None and stop.is_set()):
                for tp, records in consumer.poll(timeout_ms=self.poll_ms).items():
                    end = self.end_offsets[tp]
                    for record in records:
                        if record.offset >= end:  # arrived after we started: not ours yet
                            consumer.seek(tp, record.offset)
                            break
                        yield from self._accept(record)
                for tp in list(remaining):
                    if consumer.position(tp) >= self.end_offsets[tp]:
                        remaining.discard(tp)
                        consumer.pause(tp)
        finally:
            consumer.resume(*self.partitions)

    def follow(self, stop: threading.Event | None = None) -> Iterator[AlertRecord]:
        """Events as they arrive, until ``stop`` is set (forever without one)."""
        consumer = self._consumer
        consumer.resume(*self.partitions)
        while not (stop is not None and stop.is_set()):
            for records in consumer.poll(timeout_ms=self.poll_ms).values():
                for record in records:
                    yield from self._accept(record)

    def _accept(self, record: Any) -> Iterator[AlertRecord]:
        if self.since_ms is not None and record.timestamp < self.since_ms:
            # older than --since, yet after the offset found for it: an out-of-order record,
            # or one behind a transaction marker (markers carry the broker's clock)
            if self._wanted(record) is not None:
                self.skipped_older += 1
            return
        try:
            event = parse_event(record.value)
        except ValueError as exc:
            self.on_invalid(self.topic, record.partition, record.offset, str(exc))
            return
        if not self._matches(event):
            return
        yield AlertRecord(record.partition, record.offset, record.timestamp, record.key,
                          record.value, event)


    def _matches(self, event: Mapping[str, Any]) -> bool:
        return not ((self.models and event["model"] not in self.models)
                    or (self.features and event["feature"] not in self.features)
                    or (self.types and event["type"] not in self.types))

    def _wanted(self, record: Any) -> dict[str, Any] | None:
        """The record's event when it is one that the filters let through (else None)."""
        try:
            event = parse_event(record.value)
        except ValueError:
            return None
        return event if self._matches(event) else None

    def count_older(self, limit: int = OLDER_SCAN_LIMIT) -> tuple[int, bool]:
        """How many events (that the filters let through) lie before ``since_ms``: read from
        the beginning of each partition to its start offset, then go back there. Returns
        ``(count, exact)``; past ``limit`` offsets it does not read them and returns their
        number of offsets as an estimate (transaction markers take offsets too).

        Call it before :meth:`backlog`.
        """
        if self.since_ms is None:
            return 0, True
        consumer = self._consumer
        begins = consumer.beginning_offsets(self.partitions)
        todo = {tp: self.start_offsets[tp] for tp in self.partitions
                if self.start_offsets[tp] > begins[tp]}
        span = sum(end - begins[tp] for tp, end in todo.items())
        if span > limit:
            return span, False
        count = 0
        consumer.pause(*(tp for tp in self.partitions if tp not in todo))
        for tp in todo:
            consumer.seek(tp, begins[tp])
        try:
            remaining = set(todo)
            while remaining:
                for tp, records in consumer.poll(timeout_ms=self.poll_ms).items():
                    for record in records:
                        if record.offset >= todo[tp]:
                            break
                        if record.timestamp < self.since_ms and self._wanted(record):
                            count += 1
                for tp in list(remaining):
                    if consumer.position(tp) >= todo[tp]:
                        remaining.discard(tp)
                        consumer.pause(tp)
        finally:
            for tp in self.partitions:
                consumer.seek(tp, self.start_offsets[tp])
            consumer.resume(*self.partitions)
        return count, True


def read_alert_records(config: Config, bootstrap_servers: str | None = None,
                       since_ms: int | None = None, follow: bool = False,
                       models: Iterable[str] = (), features: Iterable[str] = (),
                       types: Iterable[str] = (), stop: threading.Event | None = None, *,
                       on_invalid: InvalidHandler | None = None) -> Iterator[AlertRecord]:
    """Like ``read_alerts``, with each event's partition, offset, timestamp and raw bytes."""
    with AlertReader(config, bootstrap_servers, since_ms, models, features, types,
                     on_invalid) as reader:
        yield from reader.backlog(stop)
        if follow:
            yield from reader.follow(stop)


def read_alerts(config: Config, bootstrap_servers: str | None = None,
                since_ms: int | None = None, follow: bool = False,
                models: Iterable[str] = (), features: Iterable[str] = (),
                types: Iterable[str] = (), stop: threading.Event | None = None, *,
                on_invalid: InvalidHandler | None = None) -> Iterator[dict[str, Any]]:
    """Skew events (dicts, as stored) from ``[kafka] alerts_topic``.

    Without ``follow`` the iterator ends at the end offsets seen when it started; with it, it
    waits for new events until ``stop`` (a ``threading.Event``) is set. Events of one
    partition (one ``model/feature`` key) come in the order they were written. Nothing is
    committed. ``AlertsError`` if the topic does not exist or the broker cannot be reached.
    """
    for record in read_alert_records(config, bootstrap_servers, since_ms, follow, models,
                                     features, types, stop, on_invalid=on_invalid):
        yield record.event


# -- the command -------------------------------------------------------------------------------

_COLUMNS = ("time", "type", "severity", "model", "feature", "check", "metric", "value",
            "threshold")
_RIGHT = frozenset({"value", "threshold"})
_SEVERITY_STYLE: Mapping[str, dict[str, Any]] = {
    "critical": {"fg": "red", "bold": True}, "warning": {"fg": "yellow"}, "info": {"fg": "green"}}
_TYPE_STYLE: Mapping[str, dict[str, Any]] = {
    "detected": {"fg": "red"}, "resolved": {"fg": "green"}}


class _Problem(click.ClickException):
    """A user-facing error: printed as is, exit code 1."""

    def format_message(self) -> str:
        return self.message


class _TimeParam(click.ParamType):
    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_time(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _number(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}"


def _row(event: Mapping[str, Any]) -> dict[str, str]:
    window = event.get("window") or {}
    kind = event["type"]
    return {"time": format_time(window.get("end")),
            "type": kind.removeprefix("skew_"), "severity": event["severity"],
            "model": event["model"], "feature": event["feature"], "check": event["check"],
            "metric": event["metric"], "value": _number(event["value"]),
            "threshold": _number(event["threshold"])}


class _Table:
    """Aligned rows; columns only widen, so rows printed later stay aligned with earlier ones."""

    def __init__(self, color: bool) -> None:
        self.color = color
        self.widths = {name: len(name) for name in _COLUMNS}
        self.header_done = False

    def print(self, rows: list[dict[str, str]]) -> None:
        for row in rows:
            for name in _COLUMNS:
                self.widths[name] = max(self.widths[name], len(row[name]))
        if not self.header_done:
            header = {name: name.upper() for name in _COLUMNS}
            click.echo(self._line(header, header=True))
            self.header_done = True
        for row in rows:
            click.echo(self._line(row))

    def _line(self, row: Mapping[str, str], header: bool = False) -> str:
        cells = []
        for name in _COLUMNS:
            text = row[name]
            cell = text.rjust(self.widths[name]) if name in _RIGHT else \
                text.ljust(self.widths[name])
            if self.color:
                if header:
                    cell = click.style(cell, bold=True)
                elif name == "severity":
                    cell = click.style(cell, **_SEVERITY_STYLE.get(text, {}))
                elif name == "type":
                    cell = click.style(cell, **_TYPE_STYLE.get(text, {}))
            cells.append(cell)
        return "  ".join(cells).rstrip()


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT / SIGTERM set ``stop`` (the loop then ends cleanly) while following."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@click.command("alerts")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="TOML config ([kafka] bootstrap_servers, alerts_topic, client settings).")
@click.option("--bootstrap-servers", help="host:port[,host:port] (overrides the config).")
@click.option("--follow", "-f", is_flag=True,
              help="Keep waiting for new events (Ctrl-C or SIGTERM ends).")
@click.option("--since", "since_ms", type=_TimeParam(),
              help=f"Start at this time (record time = window end): {ACCEPTED_FORMS}. "
                   "Default: the beginning of the topic.")
@click.option("--model", "models", multiple=True, help="Only this model (repeatable).")
@click.option("--feature", "features", multiple=True, help="Only this feature (repeatable).")
@click.option("--type", "types", multiple=True, type=click.Choice(["detected", "resolved"]),
              help="Only skew_detected or skew_resolved events.")
@click.option("--json", "as_json", is_flag=True, help="Print events as JSON lines, as stored.")
def alerts(config_path: str | None, bootstrap_servers: str | None, follow: bool,
           since_ms: int | None, models: tuple[str, ...], features: tuple[str, ...],
           types: tuple[str, ...], as_json: bool) -> None:
    """Show the skew events on the alerts topic (reads only: commits nothing).

    \b
    streamskew alerts --config streamskew.toml --since -2h
    streamskew alerts --follow --type detected --model fraud --json
    """
    try:
        config = Config.from_toml(config_path) if config_path else Config()
    except ConfigError as exc:
        raise _Problem(str(exc)) from None
    stop = threading.Event()
    try:
        reader = AlertReader(config, bootstrap_servers, since_ms, models, features, types)
    except AlertsError as exc:
        raise _Problem(str(exc)) from None
    stdout = sys.stdout
    table = None if as_json else _Table(color=stdout.isatty())
    shown = 0

    def show(records: list[AlertRecord]) -> None:
        nonlocal shown
        shown += len(records)
        if table is None:
            out = sys.stdout.buffer
            for record in records:
                out.write(record.raw + b"\n")
            out.flush()
        else:
            table.print([_row(record.event) for record in records])
            stdout.flush()

    older, exact = 0, True
    try:
        with reader, _stop_on_signals(stop) if follow else nullcontext():
            if since_ms is not None:
                older, exact = reader.count_older()
            if as_json:  # as stored, as they come
                for record in reader.backlog(stop):
                    show([record])
            else:  # a table reads best in time order: by window end, then key
                backlog = sorted(reader.backlog(stop), key=_time_order)
                if backlog or follow:
                    show(backlog)
            older += reader.skipped_older
            if since_ms is not None and older:
                _say_skipped(older, exact, since_ms)
                older = 0
            if follow:
                for record in reader.follow(stop):
                    show([record])
    except KeyboardInterrupt:  # Ctrl-C outside the handler's reach: still a clean end
        pass
    if shown == 0 and not follow:
        click.echo(f"no skew events on {reader.topic}"
                   + (f" since {format_time(since_ms)}" if since_ms is not None else ""),
                   err=True)


def _time_order(record: AlertRecord) -> tuple[int, str, str, str, int, int]:
    event = record.event
    end = (event.get("window") or {}).get("end")
    return (end if isinstance(end, int) else -1, event["model"], event["feature"],
            event["check"], record.partition, record.offset)


def _say_skipped(older: int, exact: bool, since_ms: int) -> None:
    about = "" if exact else "about "
    click.echo(f"skipped {about}{older:,} older event{'s' if older != 1 else ''} (before "
               f"{format_time(since_ms)}, --since)", err=True)
