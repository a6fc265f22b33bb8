"""Updates/s of streamskew's per-pane numeric update vs a datasketches KLL sketch.

streamskew side: the layout of a baseline built from a training sample of the same
distribution; each timed call does ``s = layout.empty(); s.update(values)`` (one numba pass:
bin counts + moments + the relative-error quantile sketch). Reference:
``kll_doubles_sketch(k=200).update(values)`` on the same float64 array (datasketches skips NaN
too). Both sides are timed interleaved in one process; see benchmarks/_common.py.

    python benchmarks/bench_sketch.py [--quick] [--no-record] [--rounds N]

The last line printed is ``ratio_vs_kll=<x>``: streamskew updates/s / KLL updates/s on the
realistic "mixture" row.
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

from streamskew.baseline import Baseline

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
    ]
    if not args.no_record:
        append_results("bench_sketch: NumericSummary.update vs datasketches KLL", params,
                       headers, rows, notes)
    print(f"ratio_vs_kll={ratios[HEADLINE]:.2f}")


if __name__ == "__main__":
    main()
