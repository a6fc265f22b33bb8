#!/usr/bin/env python3
"""Replay the demo's prediction requests into Kafka, live.

Reads a JSONL file of messages (``streamskew demo`` writes ``requests.jsonl``), rewrites each
message's ``timestamp`` to *now* plus its offset from the first message (so the spacing is
kept and windows close while you watch) and produces them with kafka-python (``acks=all``,
key = ``request_id``) at ``--rate`` messages per second. Lines that are not JSON objects (the
demo mixes a few in) are sent unchanged: they are what the detector dead-letters.

At the default 500 msg/s the demo's 70 minutes of requests (one every 200 ms) take 42 s, so
event time runs 100x faster than the clock. A second replay starts after the newest event
time already in the topic, so its records are not late for the detector.

    python docker/produce_demo.py --bootstrap-servers localhost:29092 \\
        --input streamskew-demo/requests.jsonl --create

``--create`` creates the topic when it is missing (``--partitions``, ``--replication-factor``),
``--create-only`` creates it (and ``--also-create`` topics) and exits.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError, TopicAlreadyExistsError

GAP_MS = 60_000  # between a replay and the newest event time already in the topic
PROGRESS_S = 5.0


@dataclass
class Message:
    key: bytes | None
    value: bytes
    timestamp_ms: int | None  # event time as read, None when absent or unreadable


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Replay prediction requests (JSONL) into a Kafka topic with live "
                    "timestamps.")
    parser.add_argument("--bootstrap-servers", default="localhost:9092",
                        help="Kafka bootstrap servers, comma separated (default: %(default)s)")
    parser.add_argument("--topic", default="prediction-requests",
                        help="topic to produce to (default: %(default)s)")
    parser.add_argument("--input", type=Path, default=Path("/data/requests.jsonl"),
                        help="JSONL file of messages (default: %(default)s)")
    parser.add_argument("--rate", type=float, default=500.0,
                        help="messages per second, 0 = as fast as possible (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=None,
                        help="send at most this many messages")
    parser.add_argument("--timestamp-field", default="timestamp",
                        help="top-level field holding the event time, epoch ms or ISO-8601 "
                             "(default: %(default)s)")
    parser.add_argument("--start-ms", type=int, default=None,
                        help="event time of the first message, epoch ms (default: now, or "
                             "after the newest event time already in the topic)")
    parser.add_argument("--align-ms", type=int, default=60_000,
                        help="round the default start up to a multiple of this, e.g. the "
                             "pane; 0 = off (default: %(default)s)")
    create = parser.add_mutually_exclusive_group()
    create.add_argument("--create", action="store_true",
                        help="create the topic first if it is missing")
    create.add_argument("--create-only", action="store_true",
                        help="create the topic(s) if missing, then exit without producing")
    parser.add_argument("--partitions", type=int, default=6,
                        help="partitions of a topic this script creates (default: %(default)s)")
    parser.add_argument("--replication-factor", type=int, default=1,
                        help="replication factor of created topics (default: %(default)s)")
    parser.add_argument("--also-create", action="append", default=[], metavar="TOPIC[:N]",
                        help="another topic to create if missing, with N partitions "
                             "(default 1); repeatable")
    parser.add_argument("--wait", type=float, default=60.0,
                        help="seconds to wait for the broker to answer (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.rate < 0:
        parser.error("--rate must be >= 0")
    if args.align_ms < 0:
        parser.error("--align-ms must be >= 0")
    if args.partitions < 1 or args.replication_factor < 1:
        parser.error("--partitions and --replication-factor must be >= 1")
    try:
        args.extra_topics = [_topic_spec(spec) for spec in args.also_create]
    except ValueError as exc:
        parser.error(str(exc))
    return args


def _topic_spec(spec: str) -> tuple[str, int]:
    name, _, partitions = spec.partition(":")
    if not name or (partitions and not partitions.isdigit()) or partitions == "0":
        raise ValueError(f"--also-create {spec!r}: expected TOPIC or TOPIC:PARTITIONS")
    return name, int(partitions or 1)


def _servers(text: str) -> list[str]:
    return [server.strip() for server in text.split(",") if server.strip()]


# -- topics ---------------------------------------------------------------------------------


def create_topics(bootstrap: list[str], topics: dict[str, int], replication_factor: int,
                  wait_s: float) -> list[str]:
    """Create the topics (name -> partitions) that do not exist yet; returns the created."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="streamskew-demo-admin",
                             bootstrap_timeout_ms=int(wait_s * 1000))
    try:
        existing = set(admin.list_topics())
        missing = {name: n for name, n in topics.items() if name not in existing}
        created = []
        for name, partitions in missing.items():
            try:
                admin.create_topics(
                    {name: {"num_partitions": partitions,
                            "replication_factor": replication_factor}},
                    wait_for_metadata=True)
                created.append(name)
            except TopicAlreadyExistsError:  # created concurrently
                pass
        return created
    finally:
        admin.close()


def newest_event_time(bootstrap: list[str], topic: str, field: str, wait_s: float,
                      tail: int = 20) -> int | None:
    """The largest event time among the last ``tail`` records of each partition."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             group_id=None, bootstrap_timeout_ms=int(wait_s * 1000))
    try:
        partition_ids = consumer.partitions_for_topic(topic) or set()
        partitions = [TopicPartition(topic, p) for p in sorted(partition_ids)]
        if not partitions:
            return None
        consumer.assign(partitions)
        begin = consumer.beginning_offsets(partitions)
        end = consumer.end_offsets(partitions)
        remaining = {tp: end[tp] - max(begin[tp], end[tp] - tail) for tp in partitions}
        for tp in partitions:
            consumer.seek(tp, max(begin[tp], end[tp] - tail))
        newest: int | None = None
        deadline = time.monotonic() + 10.0
        while any(n > 0 for n in remaining.values()) and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=500).items():
                for record in records:
                    remaining[tp] -= 1
                    stamp = _event_time(_as_object(record.value), field)
                    if stamp is not None and (newest is None or stamp > newest):
                        newest = stamp
        return newest
    finally:
        consumer.close()


# -- messages -------------------------------------------------------------------------------


def _as_object(raw: bytes | None) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _event_time(message: dict[str, Any] | None, field: str) -> int | None:
    """Epoch ms of ``message[field]`` (a number of ms or an ISO-8601 string), else None."""
    if message is None:
        return None
    value = message.get(field)
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return int(moment.timestamp() * 1000)
    return None


def _format_time(original: Any, ms: int) -> Any:
    """``ms`` in the representation of the original value (number or ISO-8601 string)."""
    if isinstance(original, str):
        moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return ms


def read_messages(path: Path, field: str, limit: int | None = None) -> Iterator[Message]:
    """The file's non-empty lines, each with its key (``request_id``) and event time."""
    with open(path, "rb") as handle:
        sent = 0
        for line in handle:
            line = line.strip()
            if not line:
                continue
            if limit is not None and sent >= limit:
                return
            sent += 1
            message = _as_object(line)
            key = message.get("request_id") if message else None
            yield Message(key=str(key).encode() if key is not None else None, value=line,
                          timestamp_ms=_event_time(message, field))


def retime(message: Message, field: str, shift_ms: int) -> bytes:
    """The message with its event time moved by ``shift_ms`` (other lines unchanged)."""
    if message.timestamp_ms is None:
        return message.value
    data = json.loads(message.value)
    data[field] = _format_time(data[field], message.timestamp_ms + shift_ms)
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def first_event_time(path: Path, field: str) -> int | None:
    for message in read_messages(path, field):
        if message.timestamp_ms is not None:
            return message.timestamp_ms
    return None


def _clock(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# -- producing ------------------------------------------------------------------------------


class Progress:
    """Counts deliveries and failures; prints a line every few seconds."""

    def __init__(self, total: int | None) -> None:
        self.total = total
        self.sent = 0
        self.delivered = 0
        self.failed = 0
        self.first_error: str | None = None
        self.started = time.monotonic()
        self.last_print = self.started

    def ok(self, _metadata: Any) -> None:
        self.delivered += 1

    def error(self, exc: BaseException) -> None:
        self.failed += 1
        if self.first_error is None:
            self.first_error = f"{type(exc).__name__}: {exc}"

    def tick(self, event_ms: int | None, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_print < PROGRESS_S:
            return
        self.last_print = now
        elapsed = max(now - self.started, 1e-9)
        of = f"/{self.total}" if self.total is not None else ""
        at = f"  event time {_clock(event_ms)}" if event_ms is not None else ""
        print(f"sent {self.sent}{of}  delivered {self.delivered}  failed {self.failed}  "
              f"{self.sent / elapsed:.0f} msg/s{at}", file=sys.stderr, flush=True)


def produce(args: argparse.Namespace, bootstrap: list[str]) -> int:
    if not args.input.is_file():
        print(f"error: {args.input}: no such file (run `streamskew demo --output-dir "
              f"{args.input.parent}` first)", file=sys.stderr)
        return 2
    first = first_event_time(args.input, args.timestamp_field)
    start = args.start_ms
    if start is None and first is not None:
        start = int(time.time() * 1000)
        newest = newest_event_time(bootstrap, args.topic, args.timestamp_field, args.wait)
        if newest is not None and newest + GAP_MS > start:
            print(f"the topic already holds event times up to {_clock(newest)}: starting "
                  "after them", file=sys.stderr)
            start = newest + GAP_MS
        if args.align_ms:  # whole panes: the same windows (and events) as the file demo
            start = -(-start // args.align_ms) * args.align_ms
    shift = start - first if start is not None and first is not None else 0
    total = sum(1 for _ in read_messages(args.input, args.timestamp_field, args.limit))
    print(f"producing {total} messages from {args.input} to {args.topic} at "
          f"{f'{args.rate:g} msg/s' if args.rate else 'full speed'}", file=sys.stderr)

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                             client_id="streamskew-demo-producer",
                             bootstrap_timeout_ms=int(args.wait * 1000))
    progress = Progress(total)
    event_ms: int | None = None
    interrupted = False
    try:
        for message in read_messages(args.input, args.timestamp_field, args.limit):
            if args.rate:  # pace: message i leaves no earlier than i / rate after the start
                due = progress.started + progress.sent / args.rate
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            if message.timestamp_ms is not None:
                event_ms = message.timestamp_ms + shift
            future = producer.send(args.topic, key=message.key,
                                   value=retime(message, args.timestamp_field, shift))
            future.add_callback(progress.ok).add_errback(progress.error)
            progress.sent += 1
            progress.tick(event_ms)
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted: flushing what was sent", file=sys.stderr)
    finally:
        producer.flush(timeout=60)
        producer.close(timeout=10)
    progress.tick(event_ms, force=True)
    if progress.failed:
        print(f"error: {progress.failed} messages were not delivered; first: "
              f"{progress.first_error}", file=sys.stderr)
        return 1
    return 130 if interrupted else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    bootstrap = _servers(args.bootstrap_servers)
    # `docker stop` sends SIGTERM: flush like on Ctrl-C.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        if args.create or args.create_only:
            wanted = {args.topic: args.partitions, **dict(args.extra_topics)}
            created = create_topics(bootstrap, wanted, args.replication_factor, args.wait)
            for name in wanted:
                state = "created" if name in created else "exists"
                print(f"topic {name}: {state}", file=sys.stderr)
            if args.create_only:
                return 0
        return produce(args, bootstrap)
    except KafkaError as exc:
        print(f"error: Kafka at {args.bootstrap_servers}: {exc or type(exc).__name__}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
