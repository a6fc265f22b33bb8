"""Updates/s of streamskew's per-pane numeric update vs a datasketches KLL sketch.

streamskew side: the layout of a baseline built from a training sample of the same
distribution; each timed call does ``s = layout.empty(); s.update(values)`` (one numba pass:
bin counts + moments + the relative-error quantile sketch). Reference:
``kll_doubles_sketch(k=200).update(values)`` on the same float64 array (datasketches skips NaN
too). Both sides are timed interleaved in one process; see benchmarks/_common.py.

    python benchmarks/bench_sketch.py [--quick] [--no-record] [--rounds N]

The last line printed is ``ratio_vs_kll=<x>``: streamskew updates/s / KLL updates/s on the
realistic "mixture" row.

The ``joint`` rows: a pane of 8 correlated numeric features through the engine's ``fold``
(each feature's kernel, which also writes the bin slots, then the joint check's kernel: the
PCA reconstruction error of every record and its own numeric summary), against KLL updates
of the same 8 columns; once with the joint check on, once with it off (a baseline built
with ``[detect] joint = false``). Their difference is the joint check's cost per record and
feature, printed as ``joint_ns_per_record_feature=<x>``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from datasketches import kll_doubles_sketch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    append_results,
    interleaved,
    parse_args,
    print_header,
    rate,
    text_table,
)

from streamskew import Config
from streamskew.baseline import Baseline
from streamskew.detector.builder import fold
from streamskew.detector.window import Pane
from streamskew.records import NO_TIME, Columns

HEADLINE = "mixture"
KLL_K = 200
SAMPLE = 100_000  # training sample the baseline (bin edges, quantile layout) is built from


def _mixture(rng: np.random.Generator, n: int) -> np.ndarray:
    """A realistic transaction-amount-like feature: mostly lognormal amounts, negative
    refunds, exact zeros, a second mode, and 1% missing (NaN)."""
    parts = [
        rng.lognormal(3.0, 1.2, int(n * 0.75)),  # amounts
        -rng.lognormal(2.5, 1.0, int(n * 0.12)),  # refunds / adjustments
        np.zeros(int(n * 0.08)),  # free items
        rng.normal(500.0, 50.0, int(n * 0.04)),  # a fixed-price product
    ]
    used = sum(len(p) for p in parts)
    parts.append(np.full(n - used, np.nan))  # missing
    values = np.concatenate(parts)
    rng.shuffle(values)
    return values


# name -> (description, generator)
DISTRIBUTIONS: dict[str, tuple[str, Callable[[np.random.Generator, int], np.ndarray]]] = {
    "mixture": ("75% lognormal(3,1.2), 12% -lognormal(2.5,1), 8% 0.0, 4% N(500,50), 1% NaN",
                _mixture),
    "amounts": ("lognormal(mean=3, sigma=1.2)", lambda rng, n: rng.lognormal(3.0, 1.2, n)),
    "normal": ("normal(0, 1)", lambda rng, n: rng.normal(0.0, 1.0, n)),
    "counts": ("poisson(3) as float (ties, few distinct values)",
               lambda rng, n: rng.poisson(3.0, n).astype(np.float64)),
    "narrow: 1000 +- 0.001": ("normal(1000, 0.001): all bin edges in one quantile bucket",
               lambda rng, n: rng.normal(1000.0, 0.001, n)),
}


JOINT_FEATURES = 8


def _joint_table(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """8 features on 3 latent factors (so a PCA has structure to find), mixture-like
    marginals, 1% missing each."""
    latent = rng.normal(size=(n, 3))
    mixing = np.random.default_rng(99).normal(size=(3, JOINT_FEATURES))
    values = latent @ mixing + rng.normal(scale=0.5, size=(n, JOINT_FEATURES))
    columns = {}
    for j in range(JOINT_FEATURES):
        column = np.exp(values[:, j] / 2) * (10 if j % 2 else 1)  # skewed, like amounts
        column[rng.random(n) < 0.01] = np.nan
        columns[f"f{j}"] = column
    return columns


def _joint_rows(n_values: int, rounds: int) -> tuple[list[list[str]], float, float]:
    """Rows for the joint check on and off; returns them, the on-ratio and the ns per
    record and feature the joint check adds."""
    n = n_values // JOINT_FEATURES
    training = _joint_table(np.random.default_rng(2000), SAMPLE)
    lists = {k: [None if np.isnan(v) else float(v) for v in col] for k, col in training.items()}
    serving = _joint_table(np.random.default_rng(2001), n)
    columns = Columns(count=n, positions=np.arange(n), timestamps=np.full(n, NO_TIME),
                      models=None, numeric=serving, categorical={})
    rows, ratios, medians = [], {}, {}
    for label, joint in (("on", True), ("off", False)):
        baseline = Baseline.from_columns(lists, Config.from_dict({"detect": {"joint": joint}}))
        assert (baseline.joint is not None) == joint

        def ours(baseline=baseline) -> object:
            pane = Pane.empty(0, baseline)
            fold(pane, columns, baseline)
            return pane

        def reference() -> object:
            sketches = []
            for values in serving.values():
                sketch = kll_doubles_sketch(KLL_K)
                sketch.update(values)
                sketches.append(sketch)
            return sketches

        timing = interleaved(ours, reference, rounds)
        ratios[label], medians[label] = timing.ratio, timing.ours_median
        low, high = timing.ratio_range
        rows.append([f"joint {label}: {JOINT_FEATURES} features x {n:,} records",
                     f"{len(baseline.features['f0'].edges)}",
                     rate(n * JOINT_FEATURES, timing.ours_median),
                     rate(n * JOINT_FEATURES, timing.reference_median),
                     f"{timing.ratio:.2f}", f"{low:.2f}..{high:.2f}"])
        print(f"  joint {label}: ratio {timing.ratio:.2f}", flush=True)
    cost = (medians["on"] - medians["off"]) / (n * JOINT_FEATURES) * 1e9
    return rows, ratios["on"], cost


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    n = 1_000_000 if args.quick else 10_000_000
    params = {"values per run": f"{n:,}", "rounds": args.rounds, "warm-up calls": 1,
              "kll k": KLL_K, "baseline training sample": f"{SAMPLE:,}",
              "headline row": HEADLINE}
    print_header("bench_sketch: streamskew NumericSummary.update vs datasketches KLL", params)

    headers = ["distribution", "bin edges", "streamskew", "kll", "ratio", "ratio range"]
    rows: list[list[str]] = []
    ratios: dict[str, float] = {}
    for index, (name, (description, generate)) in enumerate(DISTRIBUTIONS.items()):
        training = generate(np.random.default_rng(1000 + index), SAMPLE)
        # .tolist(): Baseline.from_columns infers "numeric" only from Python floats/ints; a
        # numpy float64 array passed as is becomes a categorical feature.
        baseline = Baseline.from_columns({"x": training.tolist()})
        feature = baseline.features["x"]
        assert feature.kind == "numeric", feature.kind
        layout = feature.layout
        values = generate(np.random.default_rng(index), n)
        finite = int(np.count_nonzero(~np.isnan(values)))

        def ours(layout=layout, values=values) -> object:
            s = layout.empty()
            s.update(values)
            return s

        def reference(values=values) -> object:
            sketch = kll_doubles_sketch(KLL_K)
            sketch.update(values)
            return sketch

        # Both sides see every value; check they counted the same ones.
        assert ours().count == finite == reference().n, (name, finite)
        timing = interleaved(ours, reference, args.rounds)
        ratios[name] = timing.ratio
        low, high = timing.ratio_range
        label = f"{name} (headline)" if name == HEADLINE else name
        rows.append([label, str(len(layout.edges)), rate(n, timing.ours_median),
                     rate(n, timing.reference_median), f"{timing.ratio:.2f}",
                     f"{low:.2f}..{high:.2f}"])
        print(f"  {label}: {description}: ratio {timing.ratio:.2f}", flush=True)
        del values, training

    joint_rows, joint_ratio, joint_cost = _joint_rows(n, args.rounds)
    rows.extend(joint_rows)

    print()
    print(text_table(headers, rows))
    notes = [f"`{name}`: {description}" for name, (description, _) in DISTRIBUTIONS.items()]
    notes += [
        "Throughput = values per run / median seconds per run; ratio = streamskew updates/s "
        "/ KLL updates/s (target >= 1.0, aim 2).",
        "streamskew side per timed call: `s = layout.empty(); s.update(values)`; "
        f"reference: `kll_doubles_sketch(k={KLL_K}).update(values)`.",
        f"Headline (`ratio_vs_kll`) = the `{HEADLINE}` row.",
        "`narrow`: the whole training range sits inside one quantile bucket (1% relative "
        "width), so a bucket would leave all 101 edges as candidates of the per-value binary "
        "search; such a layout brackets the bin with a uniform grid over the edges instead "
        "(NumericLayout.use_grid), ~1-2 candidates like the other rows.",
        f"`joint`: {JOINT_FEATURES} correlated lognormal-like features (3 latent factors, 1% "
        "missing) folded as a pane by the engine (`fold`: each feature's kernel writes its "
        "bin slots, then the joint kernel computes every record's PCA reconstruction error "
        "and its summary is updated) vs KLL on the same columns; `off`: the same with a "
        "baseline built with `[detect] joint = false`. Joint check cost: "
        f"{joint_cost:.2f} ns per record and feature (median on - median off).",
    ]
    if not args.no_record:
        append_results("bench_sketch: NumericSummary.update vs datasketches KLL", params,
                       headers, rows, notes)
    print(f"joint_ratio_vs_kll={joint_ratio:.2f}")
    print(f"joint_ns_per_record_feature={joint_cost:.2f}")
    print(f"ratio_vs_kll={ratios[HEADLINE]:.2f}")


if __name__ == "__main__":
    main()
