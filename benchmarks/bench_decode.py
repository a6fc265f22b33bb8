"""Messages/s from raw JSON bytes to columnar feature arrays vs ``orjson.loads`` alone.

streamskew side: ``Decoder(MessageConfig(), schema).decode(batch)`` over batches of 10,000
messages (a list of bytes, as the engine calls it): parse + validate + one float64 / object
array per feature, event times, model names, new-feature counts. Reference:
``[orjson.loads(m) for m in batch]`` on the same batches (parse only, no columns). Both sides
are timed interleaved in one process; see benchmarks/_common.py.

Messages are prediction-request envelopes with 20 features (14 numeric, 6 categorical, ~2%
nulls per feature), e.g.::

    {"request_id": "r-1", "timestamp": 1764324000000, "model": "fraud", "model_version": "3",
     "features": {"amount": 12.5, "country": "DE", ...}, "prediction": 0.87}

    python benchmarks/bench_decode.py [--quick] [--no-record] [--rounds N]

The last line printed is ``ratio_vs_orjson=<x>``: streamskew messages/s / orjson messages/s on
clean messages (the row with 1% malformed messages is reported separately).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    append_results,
    interleaved,
    parse_args,
    print_header,
    rate,
    text_table,
)

from streamskew.config import MessageConfig
from streamskew.records import Decoder

BATCH = 10_000
NULL_RATE = 0.02
MALFORMED_RATE = 0.01

# name -> kind of generated values
NUMERIC = {
    "amount": "amount", "balance": "amount", "avg_amount_7d": "amount",
    "account_age_days": "int", "txn_count_1h": "int", "txn_count_24h": "int",
    "items": "int", "hour_of_day": "int",
    "distance_km": "float", "ip_risk": "unit", "email_risk": "unit",
    "velocity_ratio": "float", "discount": "unit", "latency_ms": "float",
}
CATEGORICAL = {
    "country": ["DE", "FR", "US", "GB", "NL", "ES", "IT", "PL", "SE", "BR"],
    "currency": ["EUR", "USD", "GBP", "SEK", "PLN", "BRL"],
    "channel": ["web", "app", "pos", "phone"],
    "device_os": ["ios", "android", "windows", "macos", "linux"],
    "merchant_category": [f"mcc_{5000 + i}" for i in range(60)],
    "card_type": ["visa", "mastercard", "amex", "debit"],
}
SCHEMA = ({name: "numeric" for name in NUMERIC} | {name: "categorical" for name in CATEGORICAL}
          | {"prediction": "numeric"})


def feature_columns(rng: np.random.Generator, n: int) -> dict[str, list[object]]:
    """``n`` rows of the 20 features (also the data of bench_e2e.py)."""
    columns: dict[str, list[object]] = {}
    for name, kind in NUMERIC.items():
        if kind == "amount":
            values = np.round(rng.lognormal(3.5, 1.3, n), 2).tolist()
        elif kind == "int":
            values = rng.poisson(6.0, n).tolist()
        elif kind == "unit":
            values = np.round(rng.random(n), 4).tolist()
        else:
            values = np.round(rng.gamma(2.0, 20.0, n), 3).tolist()
        columns[name] = values
    for name, vocabulary in CATEGORICAL.items():
        weights = 1.0 / np.arange(1, len(vocabulary) + 1)  # Zipf-like popularity
        picks = rng.choice(len(vocabulary), n, p=weights / weights.sum())
        columns[name] = [vocabulary[i] for i in picks]
    for values in columns.values():
        for i in np.flatnonzero(rng.random(n) < NULL_RATE):
            values[i] = None
    return columns


def make_messages(n: int, seed: int = 0) -> list[bytes]:
    """``n`` distinct, realistic prediction-request messages (orjson-encoded)."""
    rng = np.random.default_rng(seed)
    columns = feature_columns(rng, n)
    predictions = np.round(rng.random(n), 4).tolist()
    names = list(columns)
    messages = []
    for i in range(n):
        features = {name: columns[name][i] for name in names}
        messages.append(orjson.dumps({
            "request_id": f"r-{i}", "timestamp": 1764324000000 + i * 7, "model": "fraud",
            "model_version": "3", "features": features, "prediction": predictions[i]}))
    return messages


def add_malformed(messages: list[bytes], rate: float, seed: int = 1) -> tuple[list[bytes], int]:
    """A copy with ``rate`` of the messages broken (truncated JSON, plain text, bad UTF-8)."""
    rng = np.random.default_rng(seed)
    out = list(messages)
    broken = rng.choice(len(out), round(len(out) * rate), replace=False)
    for k, i in enumerate(broken):
        raw = out[i]
        if k % 3 == 0:
            out[i] = raw[: len(raw) // 2]  # truncated
        elif k % 3 == 1:
            out[i] = b"upstream timeout: " + raw[:40]  # not JSON at all
        else:
            out[i] = raw[:30] + b"\xff\xfe" + raw[30:]  # invalid UTF-8
    return out, len(broken)


def batches(messages: list[bytes]) -> list[list[bytes]]:
    return [messages[i:i + BATCH] for i in range(0, len(messages), BATCH)]


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], default_rounds=5)
    n = 20_000 if args.quick else 200_000
    params = {"messages": f"{n:,}", "batch": f"{BATCH:,}", "rounds": args.rounds,
              "warm-up calls": 1, "features": f"{len(NUMERIC)} numeric + {len(CATEGORICAL)} "
              "categorical (+ prediction)", "null rate per feature": f"{NULL_RATE:.0%}",
              "headline row": "clean"}
    print_header("bench_decode: streamskew Decoder.decode vs orjson.loads", params)

    messages = make_messages(n)
    size = sum(map(len, messages)) / n
    params["mean message size"] = f"{size:.0f} B"
    print(f"  generated {n:,} messages, mean {size:.0f} bytes; e.g.\n  {messages[0].decode()}\n")
    decoder = Decoder(MessageConfig(), SCHEMA)

    clean = batches(messages)
    dirty_messages, broken = add_malformed(messages, MALFORMED_RATE)
    dirty = batches(dirty_messages)

    def ours_on(data: list[list[bytes]]):
        def run() -> int:
            return sum(decoder.decode(batch)[0].count for batch in data)
        return run

    def orjson_clean() -> int:
        return sum(len([orjson.loads(m) for m in batch]) for batch in clean)

    def orjson_tolerant() -> int:
        # The reference has to survive bad messages too: catch per message.
        parsed = 0
        for batch in dirty:
            objects = []
            for m in batch:
                try:
                    objects.append(orjson.loads(m))
                except orjson.JSONDecodeError:
                    objects.append(None)
            parsed += len(objects)
        return parsed

    # Sanity (first batch): every clean message is accepted; exactly the broken ones are not.
    columns, bad = decoder.decode(clean[0])
    assert columns.count == len(clean[0]) and not bad, bad[:3]
    columns, bad = decoder.decode(dirty[0])
    rejected = sum(not b.used for b in bad)
    assert rejected == len(dirty[0]) - columns.count > 0
    assert rejected == sum(a != b for a, b in zip(clean[0], dirty[0], strict=True))

    headers = ["messages", "streamskew decode", "orjson.loads", "ratio", "ratio range"]
    rows: list[list[str]] = []
    results = {}
    for label, ours, reference in [
        ("clean (headline)", ours_on(clean), orjson_clean),
        (f"{MALFORMED_RATE:.0%} malformed", ours_on(dirty), orjson_tolerant),
    ]:
        timing = interleaved(ours, reference, args.rounds)
        results[label] = timing.ratio
        low, high = timing.ratio_range
        rows.append([label, rate(n, timing.ours_median), rate(n, timing.reference_median),
                     f"{timing.ratio:.2f}", f"{low:.2f}..{high:.2f}"])
        print(f"  {label}: ratio {timing.ratio:.2f}", flush=True)

    print()
    print(text_table(headers, rows))
    notes = [
        "Throughput = messages / median seconds for all batches; ratio = streamskew "
        "messages/s / orjson messages/s (target >= 0.5).",
        f"streamskew side: `decoder.decode(batch)` per batch of {BATCH:,} (list of bytes); "
        "reference: `[orjson.loads(m) for m in batch]` (parse only, no columns).",
        f"`{MALFORMED_RATE:.0%} malformed`: {broken:,} messages broken (truncated JSON, plain "
        "text, invalid UTF-8) spread over all batches, so every batch takes the decoder's "
        "per-message fallback; the reference there is orjson.loads per message with "
        "try/except.",
        "Headline (`ratio_vs_orjson`) = the clean row.",
    ]
    if not args.no_record:
        append_results("bench_decode: Decoder.decode vs orjson.loads", params, headers, rows,
                       notes)
    print(f"ratio_vs_orjson={results['clean (headline)']:.2f}")


if __name__ == "__main__":
    main()
