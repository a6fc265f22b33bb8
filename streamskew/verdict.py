"""Never silently blind: did a run judge anything, and does the baseline fit the input?

A run that accepted no record, judged no window, or dropped most of its records as late,
out of range or rejected has not looked at the data, whatever its event count says.
:func:`blind_run` turns a run's counters into one plain sentence that says so, with the
likely cause and the fix, and the commands exit with :data:`EXIT_BLIND`.

A baseline built from other data (another model, another version of the features) makes
every window report schema events and nothing else. :class:`WindowWatch` looks at the first
window of each model (``Detector(on_window=watch.on_window)``) and :func:`coverage_problem`
says "this baseline does not look like it belongs to this input" with the numbers; the
commands then exit with :data:`EXIT_MISMATCH`.

>>> counts = RunCounts(records=21_000, accepted=0, outside_range=21_000,
...                    time_range=(1764324000000, 1764328200000))
>>> print(blind_run(counts, what="replay"))  # doctest: +NORMALIZE_WHITESPACE
judged nothing: 0 of 21,000 records read fall in 2025-11-28T10:00:00Z..2025-11-28T11:10:00Z by
their event time; the records' Kafka timestamps (used to find the range) are not their event
times, or the range is wrong: check --from/--to against the messages' [message] timestamp
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .timeparse import format_time

__all__ = ["EXIT_BLIND", "EXIT_ERROR", "EXIT_MISMATCH", "EXIT_OK", "EXIT_PIPE_CLOSED",
           "EXIT_USAGE", "Coverage",
           "RunCounts", "WindowWatch", "blind_run", "coverage_problem"]

log = logging.getLogger(__name__)

EXIT_OK = 0  #: judged the input (with or without skew events)
EXIT_ERROR = 1  #: a failure the message explains (``Error: ...``)
EXIT_USAGE = 2  #: the command line is wrong (click's usage errors)
EXIT_BLIND = 3  #: judged nothing, or most records were not used
EXIT_MISMATCH = 4  #: the baseline does not look like it belongs to this input
EXIT_PIPE_CLOSED = 141  #: the output's reader left early (``| head``), as a shell reports it

MOST = 0.5  # "most records": more than this share
COVERAGE_MIN_RECORDS = 100  # a window this large shows which features the input carries

# Why records were rejected -> the likely cause and the fix, for people.
_REASON_HINTS = {
    "invalid_utf8": "the lines are not UTF-8 text: is the input JSON lines? (gzip is "
                    "recognised by itself; CSV or Parquet is training data, not messages)",
    "invalid_json": "the lines are not JSON: is the input JSON lines of prediction-request "
                    "messages? (CSV or Parquet is training data, not messages)",
    "not_an_object": "each line must be one JSON object (a message), not an array or a value",
    "features_not_an_object": "the messages have no features object at [message] features: "
                              "for flat records (features at the top level) set "
                              "[message] features = \"\"",
    "missing_timestamp": "the messages have no time at [message] timestamp: point it at their "
                         "time field, or set it to \"\" to judge the whole input as one window",
    "bad_timestamp": "the times at [message] timestamp are not epoch milliseconds or ISO-8601 "
                     "with a time zone (or lie more than a day in the future)",
    "too_large": "the messages are larger than [message] max_bytes: raise it",
    "unknown_model": "no baseline for the messages' models: add [models.<name>] sections "
                     "with their baselines, pass --baseline to judge every model against "
                     "one, or check [message] model",
    "unknown_version": "no baseline for the messages' model versions: add them to "
                       "[models.<name>] versions, or set [models] fallback = \"latest\"",
}


@dataclass
class RunCounts:
    """What a run did, whatever ran it (detect, replay, run --until-end)."""

    records: int = 0
    accepted: int = 0
    rejected: Mapping[str, int] = field(default_factory=dict)  # by reason
    late: int = 0
    outside_range: int = 0
    windows: int = 0  # windows evaluated
    judged_windows: int | None = None  # windows with at least one judged check (None: unknown)
    largest_window: int = 0  # records in the largest window seen
    time_range: tuple[int, int | None] | None = None  # replay's [from, to)
    event_times: tuple[int, int] | None = None  # min and max event time read, when known

    @classmethod
    def of(cls, stats: Any, windows: int | None = None, watch: WindowWatch | None = None,
           **extra: Any) -> RunCounts:
        """From a ``DetectorStats`` / ``BuilderStats`` (and the windows of the evaluator)."""
        counts = cls(records=stats.records, accepted=stats.accepted, rejected=dict(stats.bad),
                     late=stats.late, outside_range=getattr(stats, "outside_range", 0),
                     windows=getattr(stats, "windows", 0) if windows is None else windows,
                     **extra)
        first, last = (getattr(stats, "min_event_time", None),
                       getattr(stats, "max_event_time", None))
        if counts.event_times is None and first is not None and last is not None:
            counts.event_times = (first, last)  # once BuilderStats keeps them
        if watch is not None:
            counts.judged_windows = watch.judged
            counts.largest_window = watch.largest
        return counts

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


def blind_run(counts: RunCounts, what: str = "detect", min_count: int | None = None,
              allowed_lateness: str | None = None, source: str = "the input") -> str | None:
    """One sentence when the run judged nothing or used little of its input; else None."""
    n = counts.records
    if n == 0:
        if what == "replay":
            return (f"judged nothing: no record in {_range(counts.time_range)} on the source "
                    "topics: check --from/--to and [kafka] topics")
        return (f"judged nothing: read no record from {source}: the input is empty "
                "(blank lines are not records)")
    if counts.rejected_total > MOST * n:
        return _rejected(counts, "judged nothing" if counts.accepted == 0 else
                         "used only part of the input")
    if counts.outside_range > MOST * n:
        inside = n - counts.outside_range
        head = "judged nothing" if counts.accepted == 0 else "judged little"
        span = ""
        if counts.event_times is not None:
            span = (f"; their event times span {format_time(counts.event_times[0])}.."
                    f"{format_time(counts.event_times[1])}")
        return (f"{head}: {inside:,} of {n:,} records read fall in {_range(counts.time_range)} "
                f"by their event time{span}; the records' Kafka timestamps (used to find the "
                "range) are not their event times, or the range is wrong: check --from/--to "
                "against the messages' [message] timestamp")
    if counts.late > MOST * n:
        lateness = f" = {allowed_lateness}" if allowed_lateness else ""
        return (f"judged little: {counts.late:,} of {n:,} records came late (their event time "
                f"was behind the watermark by more than [window] allowed_lateness{lateness}): "
                "the input is not in time order: give several files in time order (or one "
                "run each), or raise allowed_lateness")
    if counts.accepted == 0:
        return f"judged nothing: none of the {n:,} records was accepted"
    if counts.judged_windows == 0 or (counts.judged_windows is None and counts.windows == 0):
        need = f" = {min_count:,}" if min_count is not None else ""
        largest = (f" (the largest had {counts.largest_window:,})"
                   if counts.largest_window else "")
        return (f"judged nothing: no window reached [detect] min_count{need} records"
                f"{largest}; {counts.accepted:,} records were accepted: lower min_count or "
                "make [window] size longer")
    return None


def _rejected(counts: RunCounts, head: str) -> str:
    reasons = sorted(counts.rejected.items(), key=lambda kv: -kv[1])
    listing = ", ".join(f"{reason}={count:,}" for reason, count in reasons)
    hint = _REASON_HINTS.get(reasons[0][0], "see the dead letters for each record's reason")
    return (f"{head}: {counts.rejected_total:,} of {counts.records:,} records were rejected "
            f"({listing}): {hint}")


def _range(time_range: tuple[int, int | None] | None) -> str:
    if time_range is None:
        return "the range"
    start, end = time_range
    return f"{format_time(start)}..{format_time(end) if end is not None else 'the end'}"


# -- does the baseline fit the input? ----------------------------------------------------------


@dataclass(frozen=True)
class Coverage:
    """Which baseline features an input carries, and which of its keys the baseline lacks."""

    features: tuple[str, ...]  # the baseline's
    present: tuple[str, ...]  # baseline features with a value in the input
    unknown: tuple[str, ...]  # input keys the baseline does not know

    @property
    def fits(self) -> bool:
        """At least half the baseline's features are there, and most input keys are known."""
        if not self.features:
            return True
        return (len(self.present) >= MOST * len(self.features)
                and len(self.unknown) <= len(self.present))


def coverage_problem(coverage: Coverage, baseline_label: str = "the baseline") -> str | None:
    """The sentence for a baseline that does not fit; None when it does."""
    if coverage.fits:
        return None
    present, features, unknown = coverage.present, coverage.features, coverage.unknown
    keys = len(present) + len(unknown)
    which = f" ({_list(present)})" if present else ""
    return (f"this baseline does not look like it belongs to this input: only "
            f"{len(present)} of the {len(features)} features of {baseline_label} are in the "
            f"records{which}, and {len(unknown)} of the records' {keys} feature keys are "
            f"unknown to it ({_list(unknown)}); check --baseline and [message] features")


def _list(names: Iterable[str], limit: int = 6) -> str:
    names = list(names)
    if not names:
        return "none"
    shown = ", ".join(names[:limit])
    return shown + (f", ... {len(names) - limit} more" if len(names) > limit else "")


def window_coverage(window: Any, baseline: Any) -> Coverage:
    """Coverage of one window (a ``Pane`` aggregate) against its baseline."""
    present = tuple(name for name, summary in window.summaries.items()
                    if name in baseline.features and _with_value(summary))  # not "(joint)"
    unknown = tuple(sorted(name for name, count in window.new_features.items() if count > 0))
    return Coverage(tuple(baseline.features), present, unknown)


def _with_value(summary: Any) -> bool:
    """The feature was in some record of the window (a value, even of the wrong type)."""
    counts = getattr(summary, "counts", None)
    if hasattr(summary, "missing"):  # categorical: counts are per category
        return bool(summary.count + summary.invalid)
    return bool(counts[0] + counts[2])  # numeric: values, missing, invalid


class WindowWatch:
    """An ``on_window`` hook: counts judged windows and checks the baseline fits, once per
    model, at the first window of at least ``COVERAGE_MIN_RECORDS`` records (or, failing
    that, at :meth:`finish`, on the largest window seen).

    ``then`` is another ``on_window`` callback to pass each window on to (a report);
    ``announce`` logs a warning as soon as a baseline does not fit (a long-running service),
    else the caller reads :attr:`problems` at the end.
    """

    def __init__(self, then: Any = None, baseline_label: str = "the baseline",
                 announce: bool = True) -> None:
        self.then = then
        self.announce = announce
        self.baseline_label = baseline_label
        self.judged = 0
        self.largest = 0
        self.problems: dict[str, str] = {}  # model -> sentence
        self._checked: set[str] = set()
        self._fallback: dict[str, tuple[int, Coverage]] = {}  # the largest small window

    def on_window(self, result: Any) -> None:
        if any(check.judged for check in result.results):
            self.judged += 1
        self.largest = max(self.largest, result.records)
        if result.model not in self._checked and result.records:
            coverage = window_coverage(result.window, result.baseline)
            if result.records >= COVERAGE_MIN_RECORDS:
                self._check(result.model, coverage)
            elif result.records > self._fallback.get(result.model, (0, coverage))[0]:
                self._fallback[result.model] = (result.records, coverage)
        if self.then is not None:
            self.then(result)

    def finish(self) -> None:
        """End of input: check the models whose windows all stayed small."""
        for model, (_, coverage) in self._fallback.items():
            if model not in self._checked:
                self._check(model, coverage)

    def _check(self, model: str, coverage: Coverage) -> None:
        self._checked.add(model)
        problem = coverage_problem(coverage, self.baseline_label)
        if problem is not None:
            self.problems[model] = problem
            if not self.announce:
                return
            prefix = "" if model == "default" else f"model {model}: "
            log.warning("%s%s", prefix, problem)
