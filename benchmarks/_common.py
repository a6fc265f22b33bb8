"""Shared helpers of the benchmarks: interleaved timing, machine info, RESULTS.md.

The machine the benchmarks run on is small (2 cores) and shared, so absolute numbers move a
lot from one minute to the next. Every benchmark therefore times streamskew *and* a reference
implementation in the same process, interleaved (A, B, A, B, ... over several rounds), and
reports the median of each and the ratio of the medians: background load then hits both sides
alike and mostly cancels out of the ratio.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib import metadata
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"

RESULTS_HEADER = """\
# streamskew benchmark results

Each section below is one full run of a script in `benchmarks/` (appended automatically;
`--quick` runs are not recorded).

Method: the machine is small and shared, so absolute throughput is noisy. Each benchmark
therefore runs streamskew and a reference implementation on the *same* input in the same
process, interleaved (streamskew, reference, streamskew, reference, ... for several rounds,
after an untimed warm-up that also triggers numba JIT compilation / cache loading). Timing
uses `time.perf_counter`, with `gc.collect()` before each timed call. The tables report the
median time of each side, the throughput derived from it, and `ratio = streamskew throughput
/ reference throughput` (= reference median time / streamskew median time; > 1 means
streamskew is faster). The ratio range is the min..max of the per-round paired ratios.

- `bench_sketch.py`: streamskew's per-pane numeric update (bins + moments + quantile sketch in
  one numba pass) vs datasketches `kll_doubles_sketch(k=200).update(ndarray)`.
- `bench_decode.py`: raw JSON message bytes -> columnar feature arrays with
  `streamskew.records.Decoder.decode` vs `[orjson.loads(m) for m in batch]` alone.
"""


def parse_args(description: str, default_rounds: int = 7, quick_rounds: int = 3,
               extra: Callable[[argparse.ArgumentParser], None] | None = None
               ) -> argparse.Namespace:
    """Common command line: ``--quick`` (small smoke run, implies ``--no-record``),
    ``--no-record`` (do not append to RESULTS.md) and ``--rounds``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true",
                        help="small input and few rounds (a smoke test); implies --no-record")
    parser.add_argument("--no-record", action="store_true",
                        help=f"do not append the results to {RESULTS.name}")
    parser.add_argument("--rounds", type=int, default=None,
                        help=f"interleaved timing rounds per row (default: {default_rounds}, "
                        f"--quick: {quick_rounds})")
    if extra is not None:
        extra(parser)
    args = parser.parse_args()
    if args.quick:
        args.no_record = True
    if args.rounds is None:
        args.rounds = quick_rounds if args.quick else default_rounds
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


# -- timing ------------------------------------------------------------------------------------


@dataclass
class Timing:
    """Per-round seconds of the two sides of one comparison (same work on each side)."""

    ours: list[float]
    reference: list[float]

    @property
    def ours_median(self) -> float:
        return statistics.median(self.ours)

    @property
    def reference_median(self) -> float:
        return statistics.median(self.reference)

    @property
    def ratio(self) -> float:
        """streamskew throughput / reference throughput (ratio of the medians)."""
        return self.reference_median / self.ours_median

    @property
    def ratio_range(self) -> tuple[float, float]:
        """Min and max of the paired per-round ratios (how noisy the run was)."""
        pairs = [r / o for o, r in zip(self.ours, self.reference, strict=True)]
        return min(pairs), max(pairs)


def _timed(fn: Callable[[], object]) -> float:
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(ours: Callable[[], object], reference: Callable[[], object], rounds: int,
                warmup: int = 1) -> Timing:
    """Time ``ours`` and ``reference`` alternately (A, B, A, B, ...) after ``warmup`` untimed
    calls of each."""
    for _ in range(warmup):
        ours()
        reference()
    timing = Timing([], [])
    for _ in range(rounds):
        timing.ours.append(_timed(ours))
        timing.reference.append(_timed(reference))
    return timing


def interleaved_sides(sides: dict[str, Callable[[], object]], rounds: int
                      ) -> dict[str, list[float]]:
    """Seconds per round of each side, timed in turn (A, B, C, A, B, C, ...); no warm-up."""
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, side in sides.items():
            seconds[name].append(_timed(side))
    return seconds


# -- machine and versions ----------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024**2:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return "unknown"


@cache  # the first call (the header print) fixes the load average reported as 'at start'
def machine_info() -> dict[str, str]:
    info = {
        "cpu": _cpu_model(),
        "platform.processor()": platform.processor() or "(empty)",
        "cores (os.cpu_count)": str(os.cpu_count()),
        "memory": _memory(),
        "os": platform.platform(),
    }
    if hasattr(os, "getloadavg"):
        info["load average at start (1/5/15 min)"] = " / ".join(
            f"{x:.2f}" for x in os.getloadavg())
    return info


def versions() -> dict[str, str]:
    found = {"python": sys.version.split()[0]}
    for package in ("streamskew", "numpy", "numba", "orjson", "datasketches"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


THREAD_ENV_PREFIXES = ("OPENBLAS", "OMP_", "MKL_", "NUMBA_")


def thread_env() -> dict[str, str]:
    """Environment variables that change threading / JIT behaviour, if any are set."""
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith(THREAD_ENV_PREFIXES)}


# -- output ------------------------------------------------------------------------------------


def text_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A fixed-width table for the terminal."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(c).rjust(w) if i else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |",
           "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def append_results(title: str, parameters: dict[str, object], headers: Sequence[str],
                   rows: Sequence[Sequence[str]], notes: Sequence[str] = ()) -> None:
    """Append one markdown section (creating RESULTS.md with its header if missing)."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = [f"## {title} — {now}", ""]
    lines += ["**Machine**: " + "; ".join(f"{k}: {v}" for k, v in machine_info().items()), ""]
    lines += ["**Versions**: " + ", ".join(f"{k} {v}" for k, v in versions().items()), ""]
    lines += ["**Parameters**: " + "; ".join(f"{k}={v}" for k, v in parameters.items()), ""]
    env = thread_env()
    lines += ["**Threading env**: " + (", ".join(f"`{k}={v}`" for k, v in env.items())
                                      if env else "no OPENBLAS*/OMP_*/MKL_*/NUMBA_* variables set"),
              ""]
    lines += [markdown_table(headers, rows), ""]
    lines += [f"- {note}" for note in notes]
    if notes:
        lines.append("")
    text = "\n".join(lines) + "\n"
    if not RESULTS.exists():
        RESULTS.write_text(RESULTS_HEADER + "\n")
    with RESULTS.open("a") as out:
        out.write(text)
    print(f"\nappended results to {RESULTS}")


def print_header(title: str, parameters: dict[str, object]) -> None:
    print(title)
    print("machine : " + ", ".join(f"{k}={v}" for k, v in machine_info().items()))
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()))
    env = thread_env()
    if env:
        print("env     : " + ", ".join(f"{k}={v}" for k, v in env.items()))
    print("params  : " + ", ".join(f"{k}={v}" for k, v in parameters.items()))
    print()


def rate(count: int, seconds: float) -> str:
    """``count / seconds`` in millions per second (or thousands when small)."""
    per_second = count / seconds
    if per_second >= 1e6:
        return f"{per_second / 1e6:.2f} M/s"
    return f"{per_second / 1e3:.1f} k/s"
