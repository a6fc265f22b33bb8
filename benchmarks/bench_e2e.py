"""End to end on a real broker: ``streamskew run --until-end`` vs a bare KafkaConsumer.

One topic with 6 partitions holds N prediction-request messages (default 1,000,000; the same
20-feature envelope as bench_decode.py: 14 numeric + 6 categorical features, ~2% nulls, plus
a prediction), with event times spread evenly over 60 minutes, in event-time order,
round-robin over the partitions, record timestamp = event time. ``amount`` triples from
minute 40 on, so the run also raises (and publishes) alerts.

Timed, interleaved in one process (see benchmarks/_common.py), with a fresh consumer group
(and, for streamskew, fresh internal topics: their names derive from the group) every round:

- streamskew, one process: ``DetectorService(config, baseline, until_end=True).run()``
  in-process (window 15m, pane 1m, min_count default), timed from constructing the service
  to ``run()`` returning: topic checks/creation, both group joins, decode + fold, the
  exactly-once transactions (panes, watermarks, checkpoints, offsets), the evaluator's
  windows and alerts, the final flush and close.
- streamskew, ``--workers N`` (default: one per core, at most one per partition; the
  headline): ``run_workers(...)``, which spawns N worker processes of the same consumer group
  as ``streamskew run --workers N`` does; their start-up is timed too.
- reference: a bare kafka-python ``KafkaConsumer`` (``group_id=None``, all partitions
  assigned, ``seek_to_beginning``) that polls and ``orjson.loads`` every value until it has
  consumed the end offsets known beforehand, then closes.

Both sides use the same consumer settings where they overlap (fetch sizes, waits,
``max_poll_records``, ``check_crcs``, ``isolation_level``); the service gets them through its
``[kafka]`` section (kafka-python names pass through) and ``max_poll_records=``. Before the
timed rounds a few settings are tried on the bare consumer (two passes on a prefix of the
topic, for the record); both sides use ``max_partition_fetch_bytes`` = 4 MiB with the
service's default ``max_poll_records=5000`` (see PREFERRED). ``check_crcs`` is kafka-python's
default (on) when the ``crc32c`` C package is installed, and off on both sides when it is not
(pure-Python CRC-32C caps a consumer near 10k messages/s; a probe row shows it). Loading the
topic is timed and reported separately (not in the ratio).

A broker is started with ``LocalKafka`` in a temporary folder (and stopped at the end)
unless ``--bootstrap-servers`` or ``$STREAMSKEW_BOOTSTRAP`` names one; on such an external
broker the topics this script created are deleted at the end.

    python benchmarks/bench_e2e.py [--quick] [--no-record] [--rounds N] [--messages N]
                                   [--workers N] [--bootstrap-servers HOST:PORT]

The last line printed is ``ratio_vs_bare_consumer=<x>``: streamskew (``--workers N``)
messages/s / bare consumer messages/s (ratio of the median times); the line before it,
``ratio_single_process=<x>``, is the same for one streamskew process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import numba
import numpy as np
import orjson
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.record import util as kafka_util

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    Timing,
    append_results,
    interleaved_sides,
    parse_args,
    print_header,
    rate,
    text_table,
)
from bench_decode import CATEGORICAL, NULL_RATE, NUMERIC, feature_columns

from streamskew import Baseline, Config
from streamskew.kafka.service import DetectorService, ServiceStats
from streamskew.kafka.workers import run_workers

PARTITIONS = 6
START = 1_764_324_000_000  # 2025-11-28 10:00 UTC (the topic keeps it: retention.ms = -1)
SPAN_MS = 60 * 60_000
DRIFT_FROM_MS = 40 * 60_000  # amount x3 from minute 40 on
DRIFT_FEATURE = "amount"
TRAINING_ROWS = 100_000
WARMUP_MESSAGES = 10_000
CHUNK = 50_000
WINDOW = {"size": "15m", "pane": "1m", "allowed_lateness": "2s"}
MiB = 1024 * 1024

# Loading only (not timed in the ratio): throughput first, nothing the consumers depend on.
PRODUCER_SETTINGS: dict[str, Any] = {
    "acks": 1, "enable_idempotence": False, "compression_type": None, "linger_ms": 50,
    "batch_size": 512 * 1024, "max_request_size": 8 * MiB,
}

# Candidate consumer settings, tried on the bare consumer (reported; PREFERRED is used by both
# sides). fetch_min_bytes stays 1 everywhere: a larger one would delay every fetch of the
# service's quiet panes topic by up to fetch_max_wait_ms (the same setting applies there).
# check_crcs: kafka-python's default (on) with the `crc32c` C package; without it kafka-python
# checks CRC-32C in pure Python (~5 MB/s here), so it is off on both sides then.
C_CRC32C = kafka_util.crc32c_c is not None
_BASE = {"fetch_min_bytes": 1, "fetch_max_wait_ms": 500, "fetch_max_bytes": 50 * MiB,
         "check_crcs": C_CRC32C}
CANDIDATES: dict[str, dict[str, Any]] = {
    "kafka-python defaults": {**_BASE, "max_partition_fetch_bytes": 1 * MiB,
                              "max_poll_records": 500},
    "max_poll_records 5000": {**_BASE, "max_partition_fetch_bytes": 1 * MiB,
                              "max_poll_records": 5000},
    "4 MiB/partition, 5000": {**_BASE, "max_partition_fetch_bytes": 4 * MiB,
                              "max_poll_records": 5000},
    "8 MiB/partition, 20000": {**_BASE, "max_partition_fetch_bytes": 8 * MiB,
                               "max_poll_records": 20000},
}
CRC_PROBE_MESSAGES = 30_000  # pure-Python check_crcs=True probe: only this many (it is slow)
TUNE_MESSAGES = 150_000  # the settings are compared on this prefix of the topic
# Used by both sides: the fastest on average over several trial runs here (the others are
# within noise), with the service's own default max_poll_records (5000). It is fixed rather
# than picked per run, because the service's time can depend a lot on max_poll_records: when
# one checkpoint takes longer than checkpoint_interval_s, the service checkpoints after every
# poll (seen with pure-Python CRC and 150 KB panes: max_poll_records=500 made a 1M run take
# > 15 min), so a noisy comparison must not flip it. A warning is printed (and recorded) if
# another candidate is more than TIE_MARGIN faster on the bare consumer.
PREFERRED = "4 MiB/partition, 5000"
TIE_MARGIN = 0.25
RUN_TIMEOUT_S = 900.0  # one timed run; only a safety net against a dead broker


# -- data ----------------------------------------------------------------------------------------


def message_chunks(n: int, seed: int = 0) -> Iterator[tuple[list[bytes], list[int]]]:
    """The stream in event-time order, as (messages, event times) chunks."""
    rng = np.random.default_rng(seed)
    names = [*NUMERIC, *CATEGORICAL]
    for first in range(0, n, CHUNK):
        count = min(CHUNK, n - first)
        columns = feature_columns(rng, count)
        times = (START + np.arange(first, first + count, dtype=np.int64) * SPAN_MS // n).tolist()
        drift = columns[DRIFT_FEATURE]
        for i, t in enumerate(times):
            if t >= START + DRIFT_FROM_MS and drift[i] is not None:
                drift[i] = round(drift[i] * 3.0, 2)
        predictions = np.round(rng.random(count), 4).tolist()
        messages = []
        for i in range(count):
            messages.append(orjson.dumps({
                "request_id": f"r-{first + i}", "timestamp": times[i], "model": "fraud",
                "model_version": "3", "features": {name: columns[name][i] for name in names},
                "prediction": predictions[i]}))
        yield messages, times


def training_baseline(seed: int = 7) -> Baseline:
    """The baseline of the 20 features from a training sample (no drift)."""
    return Baseline.from_columns(feature_columns(np.random.default_rng(seed), TRAINING_ROWS))


# -- loading -------------------------------------------------------------------------------------


def _crc32c_table() -> np.ndarray:
    table = np.zeros(256, dtype=np.int64)
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table[i] = crc
    return table


@numba.njit(nogil=True)
def _crc32c_kernel(data: np.ndarray, table: np.ndarray) -> int:  # pragma: no cover (numba)
    crc = 0xFFFFFFFF
    for i in range(data.size):
        crc = table[(crc ^ data[i]) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


@contextlib.contextmanager
def fast_producer_crc() -> Iterator[None]:
    """While loading, let kafka-python's record-batch builder use a compiled CRC-32C.

    Without the optional ``crc32c`` package kafka-python computes the CRC of every record
    batch in pure Python (~5 MB/s here, minutes for the topic). The replacement is checked
    against kafka-python's own implementation first and removed afterwards, and only used
    when the ``crc32c`` C package is missing; it never affects the timed runs.
    """
    from kafka.record import default_records, util

    table = _crc32c_table()

    def compiled(memview: Any) -> int:
        return int(_crc32c_kernel(np.frombuffer(memview, dtype=np.uint8), table))

    sample = memoryview(np.random.default_rng(3).integers(0, 256, 4099, dtype=np.uint8)
                        .tobytes())
    if util.crc32c_c is not None or compiled(sample) != util.crc32c_py(sample):
        yield  # a C implementation is installed (or ours disagrees): leave kafka-python as is
        return
    original = default_records.calc_crc32c
    default_records.calc_crc32c = compiled
    try:
        yield
    finally:
        default_records.calc_crc32c = original


def create_topic(bootstrap: str, name: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics({name: {"num_partitions": PARTITIONS,
                                    "configs": {"retention.ms": "-1"}}},
                            wait_for_metadata=True)
    finally:
        admin.close()


def load(bootstrap: str, topic: str, n: int) -> tuple[float, float, int]:
    """Create and fill the topic; returns (generate seconds, produce seconds, value bytes).

    Producing overlaps generating chunk by chunk; the produce time excludes generation."""
    create_topic(bootstrap, topic)
    generate = produce = 0.0
    size = 0
    with fast_producer_crc():
        producer = KafkaProducer(bootstrap_servers=bootstrap, **PRODUCER_SETTINGS)
        sent = 0
        chunks = message_chunks(n)
        while True:
            start = time.perf_counter()
            chunk = next(chunks, None)
            generate += time.perf_counter() - start
            if chunk is None:
                break
            messages, times = chunk
            start = time.perf_counter()
            send = producer.send
            for i, (message, t) in enumerate(zip(messages, times, strict=True)):
                send(topic, value=message, partition=(sent + i) % PARTITIONS, timestamp_ms=t)
            sent += len(messages)
            size += sum(map(len, messages))
            produce += time.perf_counter() - start
        start = time.perf_counter()
        producer.flush()
        producer.close()
        produce += time.perf_counter() - start
    return generate, produce, size


def end_offsets(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        begin = consumer.beginning_offsets(partitions)
        end = consumer.end_offsets(partitions)
        assert all(begin[tp] == 0 for tp in partitions), begin
        return end
    finally:
        consumer.close()


# -- the two sides -------------------------------------------------------------------------------


def bare_consumer(bootstrap: str, topic: str, settings: dict[str, Any], expected: int,
                  limit: int | None = None) -> int:
    """Poll and orjson.loads every value of the topic (or the first ``limit`` messages)."""
    target = expected if limit is None else min(limit, expected)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, isolation_level="read_committed",
                             **settings)
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        loads = orjson.loads
        consumed = 0
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while consumed < target:
            if time.monotonic() > deadline:
                raise TimeoutError(f"bare consumer: {consumed:,} of {target:,} messages after "
                                   f"{RUN_TIMEOUT_S:.0f} s (is the broker still up?)")
            for records in consumer.poll(timeout_ms=100).values():
                parsed = [loads(r.value) for r in records]
                consumed += len(parsed)
    finally:
        consumer.close()
    return consumed


def service_config(bootstrap: str, topic: str, group: str,
                   settings: dict[str, Any]) -> Config:
    """Like tests/kafka_helpers.service_config, with the benchmark's window and the shared
    consumer settings (max_poll_records goes to the constructor)."""
    client = {k: v for k, v in settings.items() if k != "max_poll_records"}
    return Config.from_dict({
        "window": WINDOW,
        "kafka": {"bootstrap_servers": bootstrap, "topics": [topic], "group_id": group,
                  "alerts_topic": f"{group}.alerts", "dlq_topic": f"{group}.dlq",
                  "panes_topic": f"{group}.panes", "state_topic": f"{group}.state",
                  **client},
    })


def internal_topic_names(group: str) -> list[str]:
    return [f"{group}.{suffix}" for suffix in ("alerts", "dlq", "panes", "state")]


def run_service(bootstrap: str, topic: str, baseline: Baseline, settings: dict[str, Any],
                group: str, workers: int = 1) -> ServiceStats:
    """One ``streamskew run --until-end [--workers N]``, in-process (the workers are spawned
    processes, as the CLI makes them)."""
    config = service_config(bootstrap, topic, group, settings)
    stop = threading.Event()  # only a safety net: a dead broker must not hang the run
    timer = threading.Timer(RUN_TIMEOUT_S, stop.set)
    timer.start()
    try:
        if workers > 1:
            stats = run_workers(config, baseline, workers, stop, until_end=True,
                                max_poll_records=settings["max_poll_records"])
        else:
            stats = DetectorService(config, baseline, until_end=True,
                                    max_poll_records=settings["max_poll_records"]).run(stop)
    finally:
        timer.cancel()
    if stop.is_set():
        raise TimeoutError(f"streamskew run did not finish in {RUN_TIMEOUT_S:.0f} s "
                           "(is the broker still up?)")
    return stats


# -- main ----------------------------------------------------------------------------------------


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def broker(external: str | None) -> Iterator[tuple[str, str]]:
    """(bootstrap, description): the given broker, or a LocalKafka started for the run."""
    if external:
        yield external, f"external ({external})"
        return
    from streamskew.kafka.local import LocalKafka

    directory = tempfile.mkdtemp(prefix="bench-e2e-kafka-")
    local = LocalKafka(port=0, directory=directory)
    try:
        bootstrap = local.start(timeout=180)
        print(f"  started LocalKafka {local.version} at {bootstrap} in {directory}", flush=True)
        yield bootstrap, f"LocalKafka {local.version} (single KRaft node, same machine)"
    finally:
        local.stop(timeout=60)
        shutil.rmtree(directory, ignore_errors=True)


def delete_topics(bootstrap: str, names: list[str]) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        existing = set(admin.list_topics())
        doomed = [n for n in names if n in existing]
        if doomed:
            admin.delete_topics(doomed)
    finally:
        admin.close()


def _fmt_settings(settings: dict[str, Any]) -> str:
    def value(v: Any) -> str:
        return f"{v // MiB} MiB" if isinstance(v, int) and not isinstance(v, bool) \
            and v >= MiB and v % MiB == 0 else str(v)
    return ", ".join(f"{k}={value(v)}" for k, v in settings.items())


def main() -> None:
    def extra(parser: Any) -> None:
        parser.add_argument("--messages", type=int, default=None,
                            help="messages in the topic (default 1,000,000; --quick: 100,000)")
        parser.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, PARTITIONS),
                            help="streamskew worker processes of the headline row (default: "
                            "one per core, at most one per partition); a 1-process row is "
                            "always timed too")
        parser.add_argument("--bootstrap-servers", default=os.environ.get("STREAMSKEW_BOOTSTRAP"),
                            help="use this broker instead of starting a LocalKafka "
                            "(default: $STREAMSKEW_BOOTSTRAP)")

    args = parse_args(__doc__.splitlines()[0], default_rounds=3, quick_rounds=2, extra=extra)
    n = args.messages or (100_000 if args.quick else 1_000_000)
    logging.basicConfig(level=logging.WARNING, format="  %(levelname)s %(name)s: %(message)s")
    # kafka-python warns about every >100 ms step of its event loop and about group_id=None.
    logging.getLogger("kafka").setLevel(logging.ERROR)

    params: dict[str, Any] = {
        "messages": f"{n:,}", "partitions": PARTITIONS, "rounds": args.rounds,
        "features": f"{len(NUMERIC)} numeric + {len(CATEGORICAL)} categorical (+ prediction)",
        "null rate per feature": f"{NULL_RATE:.0%}",
        "event times": f"{SPAN_MS // 60_000} min, event-time order, round-robin partitions",
        "drift": f"{DRIFT_FEATURE} x3 from minute {DRIFT_FROM_MS // 60_000}",
        "window": f"{WINDOW['size']} / pane {WINDOW['pane']} / lateness "
                  f"{WINDOW['allowed_lateness']}, min_count default",
        "training sample": f"{TRAINING_ROWS:,} rows",
        "kafka-python": metadata.version("kafka-python"),
        "crc32c (C)": _version("crc32c") if C_CRC32C else "not installed",
        "streamskew source": _source_revision(),
        "streamskew workers (headline)": args.workers,
    }
    print_header("bench_e2e: streamskew run --until-end (DetectorService) vs bare KafkaConsumer",
                 params)

    with broker(args.bootstrap_servers) as (bootstrap, broker_info):
        params["broker"] = broker_info
        created: list[str] = []
        try:
            ratio = _benchmark(args, n, bootstrap, params, created)
        finally:
            if args.bootstrap_servers and created:
                with contextlib.suppress(Exception):
                    delete_topics(bootstrap, created)
    print(f"ratio_vs_bare_consumer={ratio:.2f}")


def _benchmark(args: Any, n: int, bootstrap: str, params: dict[str, Any],
               created: list[str]) -> float:
    baseline = training_baseline()
    print(f"  baseline: {len(baseline.features)} features from {TRAINING_ROWS:,} training rows")

    topic, warm = _unique("bench-e2e"), _unique("bench-e2e-warmup")
    created += [topic, warm]
    generate, produce, size = load(bootstrap, topic, n)
    end = end_offsets(bootstrap, topic)
    assert sum(end.values()) == n, end
    params["mean message size"] = f"{size / n:.0f} B"
    load_note = (f"load (not in the ratio): generating {generate:.1f} s; producing "
                 f"{produce:.1f} s = {rate(n, produce)}, {size / produce / MiB:.1f} MiB/s "
                 f"({_fmt_settings(PRODUCER_SETTINGS)}"
                 + ("" if C_CRC32C else "; CRC-32C of the batches compiled with numba for the "
                    "load only, the crc32c package being missing") + ")")
    print(f"  loaded {n:,} messages ({size / MiB:.0f} MiB, mean {size / n:.0f} B) into {topic}:"
          f" generating {generate:.1f} s, producing {produce:.1f} s ({rate(n, produce)})",
          flush=True)
    warm_n = min(WARMUP_MESSAGES, n)
    load(bootstrap, warm, warm_n)

    # -- settings tried on the bare consumer (for the record); both sides use PREFERRED --
    tuning_rows: list[list[str]] = []
    bare_consumer(bootstrap, warm, CANDIDATES["kafka-python defaults"], warm_n)  # warm-up
    tune_n = min(TUNE_MESSAGES, n)
    runs: dict[str, list[float]] = {name: [] for name in CANDIDATES}
    for order in (list(CANDIDATES), list(reversed(CANDIDATES))):  # two passes, A-B-C-D-D-C-B-A
        for name in order:
            seconds, read = _timed_call(lambda s=CANDIDATES[name]: bare_consumer(
                bootstrap, topic, s, n, limit=tune_n))
            runs[name].append(read / seconds)
    rates = {name: max(values) for name, values in runs.items()}
    for name, settings in CANDIDATES.items():
        passes = " / ".join(rate(r, 1.0) for r in runs[name])
        tuning_rows.append([f"{name} (first {tune_n:,} msgs)", _fmt_settings(settings), passes,
                            rate(rates[name], 1.0)])
        print(f"  bare consumer, {name}, first {tune_n:,}: {passes}", flush=True)
    fastest = max(rates, key=rates.__getitem__)
    best_name = PREFERRED
    tuning_note = (f"Both sides use '{PREFERRED}' (fixed, see PREFERRED in the script); on the "
                   f"bare consumer it reached {rates[PREFERRED] / rates[fastest]:.0%} of the "
                   f"fastest candidate ('{fastest}') in this run.")
    if rates[fastest] > (1 + TIE_MARGIN) * rates[PREFERRED]:
        tuning_note += (f" WARNING: '{fastest}' was more than {TIE_MARGIN:.0%} faster on the "
                        "bare consumer here; the reference may be handicapped.")
    print(f"  {tuning_note}", flush=True)
    if not C_CRC32C:  # how much the pure-Python CRC check would cost (why it is off)
        crc_settings = {**CANDIDATES[best_name], "check_crcs": True}
        crc_n = min(CRC_PROBE_MESSAGES, n)
        seconds, read = _timed_call(lambda: bare_consumer(bootstrap, topic, crc_settings, n,
                                                          limit=crc_n))
        tuning_rows.append([f"{best_name} + check_crcs=True (first {crc_n:,} msgs only)",
                            "check_crcs=True (pure-Python CRC-32C: no crc32c package)",
                            rate(read, seconds), rate(read, seconds)])
        print(f"  bare consumer, check_crcs=True, first {crc_n:,}: {rate(read, seconds)}",
              flush=True)
    settings = CANDIDATES[best_name]
    params["consumer settings (both sides)"] = (
        f"{best_name}: {_fmt_settings(settings)}, isolation_level=read_committed")
    print(f"  -> both sides use '{best_name}': {_fmt_settings(settings)}\n", flush=True)

    # -- warm-up (numba cache load, imports, connections) on the small topic, then rounds --
    group = _unique("bench-e2e-warm")
    created += internal_topic_names(group)
    run_service(bootstrap, warm, baseline, settings, group)
    bare_consumer(bootstrap, warm, settings, warm_n)

    last: dict[str, ServiceStats] = {}
    transactions: dict[str, list[int]] = {}

    def ours(workers: int) -> Callable[[], None]:
        label = _label(workers)

        def side() -> None:
            group = _unique("bench-e2e-g")
            created.extend(internal_topic_names(group))
            start = time.perf_counter()
            stats = run_service(bootstrap, topic, baseline, settings, group, workers)
            seconds = time.perf_counter() - start
            # Every record folded: a rebalance between workers may make one re-read a few.
            assert stats.builders.accepted >= n and stats.builders.records >= n, stats.builders
            last[label] = stats
            transactions.setdefault(label, []).append(stats.transactions)
            print(f"    {label}: {seconds:.2f} s ({rate(n, seconds)}), {stats.transactions} "
                  f"transactions, {stats.windows} windows, {len(stats.events)} events",
                  flush=True)
        return side

    def reference() -> None:
        start = time.perf_counter()
        assert bare_consumer(bootstrap, topic, settings, n) == n
        seconds = time.perf_counter() - start
        print(f"    bare consumer: {seconds:.2f} s ({rate(n, seconds)})", flush=True)

    counts = sorted({1, args.workers})
    sides: dict[str, Callable[[], None]] = {_label(w): ours(w) for w in counts}
    seconds = interleaved_sides({**sides, "bare": reference}, args.rounds)
    timings = {label: Timing(seconds[label], seconds["bare"]) for label in sides}

    headers = ["messages", "streamskew", "messages/s", "bare KafkaConsumer", "ratio",
               "ratio range"]
    rows = []
    for label, timing in timings.items():
        low, high = timing.ratio_range
        rows.append([f"{n:,} ({PARTITIONS} partitions)", label, rate(n, timing.ours_median),
                     rate(n, timing.reference_median), f"{timing.ratio:.2f}",
                     f"{low:.2f}..{high:.2f}"])
    print()
    print(text_table(headers, rows))
    print("\n  seconds per round: " + "; ".join(
        f"{label} " + ", ".join(f"{s:.2f}" for s in values) for label, values in seconds.items()))
    print()
    print(text_table(["bare consumer settings tried", "settings", "messages/s per pass",
                      "best"], tuning_rows))

    headline = _label(args.workers)
    notes = [
        "Throughput = messages / median seconds per run; ratio = streamskew messages/s / bare "
        f"consumer messages/s (target >= 0.8). Headline (`ratio_vs_bare_consumer`): "
        f"`{headline}`.",
        "streamskew side: `streamskew run --until-end [--workers N]` in-process: "
        "`DetectorService(config, baseline, until_end=True, max_poll_records=...).run()` for "
        "one process; `run_workers(config, baseline, N, until_end=True, ...)` for N, which "
        "spawns N worker processes (each a full DetectorService of the same consumer group, "
        "as the CLI does), so their start-up (imports, numba cache load) is timed too. Fresh "
        "group id and fresh internal topics each round, timed from construction to the "
        "return (topic creation, group joins and rebalances, transactions, commits, "
        "evaluator flush, close). Reference: one bare `KafkaConsumer(group_id=None)`, all "
        "partitions assigned, seek_to_beginning, `orjson.loads` of every value until the "
        "end offsets, close. The bare consumer is one process; `--workers N` uses N "
        f"processes on this {os.cpu_count()}-core machine, which also hosts the broker.",
        "Seconds per round: " + "; ".join(f"{label} " + ", ".join(f"{s:.2f}" for s in values)
                                          for label, values in seconds.items())
        + f". Warm-up: one untimed single-process run and one bare run on a {warm_n:,}-message"
        " topic.",
        "streamskew transactions per round: " + "; ".join(
            f"{label} " + ", ".join(map(str, values)) for label, values in transactions.items())
        + "; last round: " + "; ".join(
            f"{label}: {st.windows} windows judged, {len(st.events)} events published, "
            f"{st.builders.late} late records, {st.builders.records:,} records read"
            for label, st in last.items()) + ".",
        f"Bare consumer settings tried (two passes on the first {tune_n:,} messages, best "
        "of the two): " + "; ".join(f"{r[0]}: {r[3]}" for r in tuning_rows) + ". "
        + tuning_note,
        ("check_crcs on for both sides (the `crc32c` C package is installed)." if C_CRC32C
         else "check_crcs off for both sides: the `crc32c` C package is not installed, so "
         "kafka-python checks CRC-32C in pure Python (see the check_crcs=True probe); the "
         "service's own producer then also computes every batch CRC in pure Python."),
        load_note,
    ]
    if not args.no_record:
        append_results("bench_e2e: streamskew run --until-end vs bare KafkaConsumer", params,
                       headers, rows, notes)
    if args.workers != 1:
        print(f"ratio_single_process={timings[_label(1)].ratio:.2f}")
    return timings[headline].ratio


def _label(workers: int) -> str:
    return "run (1 process)" if workers == 1 else f"run --workers {workers}"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "installed"


def _source_revision() -> str:
    """The git commit of the code under test, and whether its working tree differs (other
    work in progress is measured too). Read-only git commands only."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, text=True,
                              capture_output=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "streamskew",
                                "pyproject.toml"], cwd=root, timeout=10).returncode
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}" + (" + uncommitted changes" if dirty else "")


def _timed_call(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


if __name__ == "__main__":
    main()
