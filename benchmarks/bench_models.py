"""Many models on a real broker: ``streamskew run --until-end`` with 1 model x 20 features,
200 models x 20 features (the same records, the model named round-robin) and 1 model x 500
features.

Each case runs in its own Python process (so its peak resident memory is its own): it
creates a 6-partition topic, fills it with N prediction-request messages (event times spread
over 60 minutes, in event-time order, round-robin over partitions; untimed), then times one
``DetectorService(config, baselines, until_end=True).run()`` (the in-process equivalent of
``streamskew run --until-end``, single process). The 200 models are judged against one
baseline (``[models] max_models = 1000``): the per-model work (panes, windows, judgements) is
what is measured, not baseline loading. The 500-feature case uses N / 10 messages (each is
25x larger); its messages/s is per message, its evaluator cost per window.

Reported per case: messages/s of the run, the evaluator's CPU seconds per judged window
(``time.thread_time`` around ``Evaluator._judge``, which runs in the service's thread), judged
windows, and peak RSS of the case's process (``ru_maxrss``).

    python benchmarks/bench_models.py [--quick] [--no-record] [--messages N]
                                      [--bootstrap-servers HOST:PORT]

The last line is ``ratio_200_models_vs_1=<x>``: messages/s with 200 models / messages/s with
one (target >= 0.7).
"""

from __future__ import annotations

import json
import logging
import os
import resource
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from kafka import KafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import append_results, parse_args, print_header, rate, text_table
from bench_decode import feature_columns
from bench_e2e import PARTITIONS, broker, create_topic, delete_topics

from streamskew import Baseline, Config
from streamskew.detector.evaluator import Evaluator
from streamskew.kafka.service import DetectorService

SPAN_MS = 60 * 60_000
T0 = 1_764_324_000_000
CASES = {"1x20": (1, 20), "200x20": (200, 20), "1x500": (1, 500)}


def _columns(rng: np.random.Generator, n: int, features: int) -> dict[str, list[Any]]:
    if features == 20:
        return feature_columns(rng, n)
    return {f"f{j:03d}": np.round(rng.gamma(2.0, 20.0, n), 3).tolist() for j in range(features)}


def _messages(first: int, count: int, total: int, models: int, features: int
              ) -> tuple[list[bytes], list[int]]:
    """Messages ``first .. first + count`` of ``total`` spread evenly over SPAN_MS."""
    rng = np.random.default_rng(first)
    columns = _columns(rng, count, features)
    names = list(columns)
    times = (T0 + (first + np.arange(count)) * (SPAN_MS // total)).tolist()
    out = []
    for i in range(count):
        out.append(orjson.dumps({"timestamp": times[i],
                                 "model": f"m{(first + i) % models:03d}",
                                 "features": {k: columns[k][i] for k in names},
                                 "prediction": round(float(rng.random()), 4)}))
    return out, times


def _baseline(features: int) -> Baseline:
    rng = np.random.default_rng(7)
    columns = _columns(rng, 20_000, features)
    columns["prediction"] = np.round(rng.random(20_000), 4).tolist()
    return Baseline.from_columns(columns)


def run_case(bootstrap: str, case: str, n: int) -> dict[str, Any]:
    models, features = CASES[case]
    if features == 500:
        n //= 10
    baseline = _baseline(features)
    topic, group = f"bench-models-{case}-{uuid.uuid4().hex[:6]}", f"g-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=50,
                             batch_size=1 << 20, max_request_size=8 << 20)
    for start in range(0, n, 50_000):
        messages, times = _messages(start, min(50_000, n - start), n, models, features)
        for i, (message, t) in enumerate(zip(messages, times, strict=True)):
            producer.send(topic, value=message, partition=(start + i) % PARTITIONS,
                          timestamp_ms=t)
    producer.flush()
    producer.close()
    config = Config.from_dict({
        "window": {"size": "15m", "pane": "1m"},
        "models": {"max_models": 1000},
        "kafka": {"bootstrap_servers": bootstrap, "topics": [topic], "group_id": group,
                  "max_partition_fetch_bytes": 4 << 20, "fetch_max_bytes": 64 << 20},
    })
    judged = {"windows": 0, "cpu": 0.0}
    original = Evaluator._judge

    def timed(self: Evaluator, *args: Any, **kwargs: Any) -> Any:
        start = time.thread_time()
        try:
            return original(self, *args, **kwargs)
        finally:
            judged["cpu"] += time.thread_time() - start
            judged["windows"] += 1

    Evaluator._judge = timed  # type: ignore[method-assign]
    stop = threading.Event()
    timer = threading.Timer(900, stop.set)
    timer.start()
    start = time.perf_counter()
    try:
        stats = DetectorService(config, {"default": baseline}, until_end=True).run(stop)
    finally:
        timer.cancel()
        Evaluator._judge = original  # type: ignore[method-assign]
    seconds = time.perf_counter() - start
    delete_topics(bootstrap, [topic] + [f"{group}.{s}" for s in ("alerts", "dlq", "panes",
                                                                 "state")])
    return {"case": case, "messages": n, "seconds": seconds, "windows": judged["windows"],
            "cpu_per_window": judged["cpu"] / max(judged["windows"], 1),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "records": getattr(stats, "records", None)}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--case":  # one case, in its own process
        logging.basicConfig(level=logging.WARNING)
        logging.getLogger("kafka").setLevel(logging.ERROR)
        print(json.dumps(run_case(sys.argv[2], sys.argv[3], int(sys.argv[4]))))
        return

    def extra(parser: Any) -> None:
        parser.add_argument("--messages", type=int, default=None,
                            help="messages per 20-feature case (default 300,000; --quick: "
                            "60,000); the 500-feature case uses a tenth")
        parser.add_argument("--cases", default=",".join(CASES),
                            help="which cases to run, comma-separated (default: all)")
        parser.add_argument("--bootstrap-servers", default=os.environ.get("STREAMSKEW_BOOTSTRAP"))

    args = parse_args(__doc__.splitlines()[0], default_rounds=1, quick_rounds=1, extra=extra)
    n = args.messages or (60_000 if args.quick else 300_000)
    title = "bench_models: 1 vs 200 models vs 500 features, streamskew run --until-end"
    parameters = {"messages": n, "partitions": PARTITIONS, "window": "15m/1m",
                  "process": "single (DetectorService in-process)"}
    print_header(title, parameters)
    results = []
    with broker(args.bootstrap_servers) as (bootstrap, description):
        parameters["broker"] = description
        for case in args.cases.split(","):
            out = subprocess.run([sys.executable, __file__, "--case", bootstrap, case, str(n)],
                                 capture_output=True, text=True, check=False)
            if out.returncode:
                sys.exit(f"case {case} failed:\n{out.stderr[-3000:]}")
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"  {case}: {results[-1]}", flush=True)
    headers = ["case", "messages", "seconds", "messages/s", "windows judged",
               "evaluator CPU s / window", "peak RSS MB"]
    rows = [[r["case"], f"{r['messages']:,}", f"{r['seconds']:.1f}",
             rate(r["messages"], r["seconds"]), f"{r['windows']:,}",
             f"{r['cpu_per_window'] * 1000:.2f} ms", f"{r['peak_rss_mb']:.0f}"]
            for r in results]
    print(text_table(headers, rows))
    by = {r["case"]: r["messages"] / r["seconds"] for r in results}
    ratio = by["200x20"] / by["1x20"] if {"200x20", "1x20"} <= set(by) else float("nan")
    if not args.no_record:
        append_results(title, parameters, headers, rows,
                       [f"ratio_200_models_vs_1={ratio:.2f} (messages/s, target >= 0.7)"])
    print(f"ratio_200_models_vs_1={ratio:.2f}")


if __name__ == "__main__":
    main()
