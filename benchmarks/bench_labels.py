"""The label join's cost on a real broker: ``streamskew run --until-end`` with [labels] on vs off.

Two topics of 6 partitions each: N prediction-request messages (the envelope of
bench_e2e.py: 20 features + a prediction score, event times spread over 60 minutes,
round-robin partitions) and one label per request (``{"request_id", "label", "timestamp"}``,
the label 0/1 drawn from the score, its time an exponential delay of mean 5 minutes after
the request, capped at 50; in label-time order, keyed by request id, so Kafka's partitioner
spreads them with no relation to the request's partition).

Timed, interleaved in one process (benchmarks/_common.py), fresh consumer group and
internal topics each round, one process each (``DetectorService(...).run()``):

- **join on**: the config with ``[labels] topic = <labels topic>`` (max_delay 1h,
  performance windows 30m / pane 10m: what labels delayed by minutes are judged over; the
  skew windows stay 15m / pane 1m as in bench_e2e.py): the
  service reads both topics, ships the join's arrays to the evaluator, joins every label,
  judges performance windows and CBPE estimates, checkpoints the join;
- **join off**: the same config without ``[labels]``, reading the requests topic only.

Both read the same N requests and do the same skew work; "on" also reads the N labels. The
ratio compares requests per second (= seconds off / seconds on). The memory per pending
request is measured apart: a PerformanceMonitor fed the requests without labels, its pending
table's bytes divided by the requests it holds.

    python benchmarks/bench_labels.py [--quick] [--no-record] [--rounds N] [--messages N]
                                      [--bootstrap-servers HOST:PORT]

The last line printed is ``ratio_join_vs_off=<x>`` (target at least 0.8).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from kafka import KafkaProducer

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
from bench_decode import feature_columns
from bench_e2e import (
    CANDIDATES,
    PARTITIONS,
    PREFERRED,
    PRODUCER_SETTINGS,
    TRAINING_ROWS,
    WINDOW,
    _source_revision,
    _unique,
    broker,
    create_topic,
    delete_topics,
    end_offsets,
    fast_producer_crc,
    internal_topic_names,
    load,
    message_chunks,
)

from streamskew import Baseline, Config
from streamskew.kafka.service import DetectorService, ServiceStats
from streamskew.performance import PerformanceMonitor

MEAN_DELAY_MS = 5 * 60_000
MAX_DELAY_MS = 50 * 60_000
LABELS = {"max_delay": "1h", "min_labels": 100, "size": "30m", "pane": "10m"}
RUN_TIMEOUT_S = 900.0


def labelled_baseline(seed: int = 7) -> Baseline:
    """The 20 features' baseline plus a validation set for the reference performance: a
    score and a label drawn from it (a calibrated model)."""
    rng = np.random.default_rng(seed)
    columns = feature_columns(rng, TRAINING_ROWS)
    scores = np.round(rng.random(TRAINING_ROWS), 4)
    columns["prediction"] = scores.tolist()
    columns["label"] = (rng.random(TRAINING_ROWS) < scores).astype(int).tolist()
    return Baseline.from_columns(columns, label="label")


def label_records(n: int, seed: int = 1) -> list[tuple[bytes, bytes, int]]:
    """(key, value, label time) of one label per request, in label-time order."""
    rng = np.random.default_rng(seed)
    out = []
    for messages, times in message_chunks(n):
        for message, t in zip(messages, times, strict=True):
            request = orjson.loads(message)
            at = t + int(min(rng.exponential(MEAN_DELAY_MS), MAX_DELAY_MS))
            label = int(rng.random() < request["prediction"])
            out.append((request["request_id"].encode(), orjson.dumps(
                {"request_id": request["request_id"], "label": label, "timestamp": at}), at))
    out.sort(key=lambda r: r[2])
    return out


def load_labels(bootstrap: str, topic: str, n: int) -> tuple[float, int]:
    create_topic(bootstrap, topic)
    records = label_records(n)
    start = time.perf_counter()
    with fast_producer_crc():
        producer = KafkaProducer(bootstrap_servers=bootstrap, **PRODUCER_SETTINGS)
        for key, value, at in records:
            producer.send(topic, key=key, value=value, timestamp_ms=at)
        producer.flush()
        producer.close()
    return time.perf_counter() - start, sum(len(v) for _, v, _ in records)


def config_for(bootstrap: str, requests: str, labels: str | None, group: str,
               settings: dict[str, Any]) -> Config:
    client = {k: v for k, v in settings.items() if k != "max_poll_records"}
    raw: dict[str, Any] = {
        "window": WINDOW,
        "kafka": {"bootstrap_servers": bootstrap, "topics": [requests], "group_id": group,
                  **client},
    }
    if labels is not None:
        raw["labels"] = {**LABELS, "topic": labels}
    return Config.from_dict(raw)


def run_once(config: Config, baseline: Baseline, settings: dict[str, Any]) -> ServiceStats:
    stop = threading.Event()
    timer = threading.Timer(RUN_TIMEOUT_S, stop.set)
    timer.start()
    try:
        stats = DetectorService(config, baseline, until_end=True,
                                max_poll_records=settings["max_poll_records"]).run(stop)
    finally:
        timer.cancel()
    if stop.is_set():
        raise TimeoutError(f"streamskew run did not finish in {RUN_TIMEOUT_S:.0f} s")
    return stats


def pending_bytes(config: Config, baseline: Baseline, n: int) -> tuple[int, int, int]:
    """(pending requests, table bytes, table capacity) after n requests and no label."""
    monitor = PerformanceMonitor(config, {"default": baseline})
    for messages, _ in message_chunks(n):
        monitor.add_requests(messages, source="requests")
    memory = monitor.join.memory
    return memory["pending"], memory["pending_bytes"], monitor.join.pending.capacity


def main() -> None:
    def extra(parser: Any) -> None:
        parser.add_argument("--messages", type=int, default=None,
                            help="requests (and labels) in the topics (default 300,000; "
                            "--quick: 50,000)")
        parser.add_argument("--bootstrap-servers", default=os.environ.get("STREAMSKEW_BOOTSTRAP"),
                            help="use this broker instead of starting a LocalKafka")

    args = parse_args(__doc__.splitlines()[0], default_rounds=3, quick_rounds=2, extra=extra)
    n = args.messages or (50_000 if args.quick else 300_000)
    logging.basicConfig(level=logging.WARNING, format="  %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.ERROR)
    settings = CANDIDATES[PREFERRED]
    params: dict[str, Any] = {
        "requests": f"{n:,}", "labels": f"{n:,} (one per request)",
        "partitions": f"{PARTITIONS} + {PARTITIONS}", "rounds": args.rounds,
        "window": f"{WINDOW['size']} / pane {WINDOW['pane']}",
        "labels config": ", ".join(f"{k}={v}" for k, v in LABELS.items()),
        "label delay": f"exponential, mean {MEAN_DELAY_MS // 60_000} min, capped at "
                       f"{MAX_DELAY_MS // 60_000} min",
        "consumer settings (both)": PREFERRED,
        "streamskew source": _source_revision(),
    }
    print_header("bench_labels: run --until-end with the label join on vs off", params)
    baseline = labelled_baseline()
    with broker(args.bootstrap_servers) as (bootstrap, broker_info):
        params["broker"] = broker_info
        created: list[str] = []
        try:
            ratio = _benchmark(args, n, bootstrap, baseline, settings, params, created)
        finally:
            if args.bootstrap_servers and created:
                with contextlib.suppress(Exception):
                    delete_topics(bootstrap, created)
    print(f"ratio_join_vs_off={ratio:.2f}")


def _benchmark(args: Any, n: int, bootstrap: str, baseline: Baseline, settings: dict[str, Any],
               params: dict[str, Any], created: list[str]) -> float:
    requests, labels = _unique("bench-labels-req"), _unique("bench-labels-lab")
    created += [requests, labels]
    _, produce_s, size = load(bootstrap, requests, n)
    label_s, label_size = load_labels(bootstrap, labels, n)
    assert sum(end_offsets(bootstrap, requests).values()) == n
    params["mean sizes"] = f"request {size / n:.0f} B, label {label_size / n:.0f} B"
    print(f"  loaded {n:,} requests ({produce_s:.1f} s) and {n:,} labels ({label_s:.1f} s)",
          flush=True)

    warm = _unique("bench-labels-warm")
    created += internal_topic_names(warm)
    run_once(config_for(bootstrap, requests, labels, warm, settings), baseline, settings)

    last: dict[str, ServiceStats] = {}

    def side(with_labels: bool) -> Any:
        name = "join on" if with_labels else "join off"

        def run() -> None:
            group = _unique("bench-labels-g")
            created.extend(internal_topic_names(group))
            config = config_for(bootstrap, requests, labels if with_labels else None, group,
                                settings)
            start = time.perf_counter()
            stats = run_once(config, baseline, settings)
            seconds = time.perf_counter() - start
            assert stats.builders.records >= n, stats.builders
            if with_labels:
                assert stats.labels is not None and stats.labels.labels == n, stats.labels
            last[name] = stats
            print(f"    {name}: {seconds:.2f} s ({rate(n, seconds)} requests), "
                  f"{stats.transactions} transactions, {len(stats.events)} events"
                  + (f"; {stats.labels.summary()}" if stats.labels else ""), flush=True)
        return run

    seconds = interleaved_sides({"join on": side(True), "join off": side(False)}, args.rounds)
    timing = Timing(seconds["join on"], seconds["join off"])
    low, high = timing.ratio_range
    pending, table_bytes, capacity = pending_bytes(config_for(bootstrap, requests, labels, "m",
                                                              settings), baseline, n)
    per_request = table_bytes / pending
    headers = ["requests", "join on: requests/s", "(all messages/s)", "join off: requests/s",
               "ratio", "ratio range", "bytes per pending request"]
    rows = [[f"{n:,}", rate(n, timing.ours_median), rate(2 * n, timing.ours_median),
             rate(n, timing.reference_median), f"{timing.ratio:.2f}", f"{low:.2f}..{high:.2f}",
             f"{per_request:.1f}"]]
    print()
    print(text_table(headers, rows))
    notes = [
        "ratio = join-on requests/s / join-off requests/s = median seconds off / median "
        "seconds on (target >= 0.8). Both sides: one in-process `DetectorService(config, "
        "baseline, until_end=True).run()`, the same requests topic and skew checks; 'on' "
        "has `[labels] topic` and so also reads, ships, joins and checkpoints the labels "
        "topic ('all messages/s' counts requests + labels).",
        "Seconds per round: " + "; ".join(f"{k} " + ", ".join(f"{s:.2f}" for s in v)
                                          for k, v in seconds.items())
        + ". Warm-up: one untimed join-on run.",
        f"Memory per pending request: {per_request:.1f} B = pending table bytes "
        f"{table_bytes:,} / {pending:,} pending requests (table capacity {capacity:,}: the "
        "hash table keeps a load factor below 1, so bytes per entry fall between 39 and "
        "54 B as it fills).",
        "Last round: " + "; ".join(f"{k}: {st.windows} windows, {len(st.events)} events, "
                                  f"{st.transactions} transactions"
                                  for k, st in last.items()) + ".",
    ]
    if not args.no_record:
        append_results("bench_labels: run --until-end with the label join on vs off", params,
                       headers, rows, notes)
    return timing.ratio


if __name__ == "__main__":
    main()
