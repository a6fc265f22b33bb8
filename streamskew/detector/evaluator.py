"""Stage 2 of the engine: sealed panes from every source -> windows -> skew events.

The :class:`Evaluator` merges the partial panes that sources (files, Kafka partitions, other
processes) sealed for the same model and pane, and closes pane ``i`` once every source's
watermark has passed its end: then no source can add to it any more, so its content is
final and the same whichever process evaluates it. Each close slides the model's window by
one pane and judges it (the whole window and its finer scales, see
:mod:`streamskew.detector.checks`); hysteresis turns the judgements into ``skew_detected`` /
``skew_resolved`` events.

Persistent shifts: every ``size / pane`` panes (pane index ``i`` with ``(i + 1) % panes ==
0``) the window then is a *block*, disjoint from the previous one; the per-feature counts of
the last ``persistent_windows`` blocks are summed and judged by the ``persistent`` check (a
``warning``). A feature's persistent check waits until its blocks no longer hold a window in
which one of that feature's other checks was raised, so an incident that has been raised
and resolved is not reported again as a persistent shift.
"""

from __future__ import annotations

import math
import zlib
from base64 import b64decode, b64encode
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import orjson

from ..baseline import Baseline
from ..config import Config
from ..records import NO_TIME, split_identity
from ..sketch.numeric import NumericSummary
from .builder import WHOLE_INPUT, baseline_for
from .checks import (
    JOINT_CHECK,
    PERSISTENT_CHECK,
    SURGE_CHECK,
    VERSION_SHIFT_CHECK,
    CheckResult,
    Judge,
    version_shift,
)
from .events import SkewEvent
from .hysteresis import Hysteresis
from .models import ModelBaselines
from .pane import EncodedPanes
from .window import Pane, SlidingWindow

__all__ = ["Evaluator", "WindowResult"]


@dataclass(frozen=True)
class WindowResult:
    """One judged window of one model: the check results (for reports and metrics).

    ``model`` is the model's name; ``version`` its version (None without
    ``[message] model_version``); ``key`` the engine's key of both."""

    model: str
    start: int | None
    end: int | None
    records: int
    results: tuple[CheckResult, ...]
    content: Pane | SlidingWindow  # see ``window``
    baseline: Baseline
    scales: Mapping[int, Pane] = field(default_factory=dict)  # finer scales' aggregates
    version: str | None = None
    key: str = ""

    @property
    def window(self) -> Pane:
        """The window's aggregate, live: read it now, copy what you keep. (Its moments are
        re-derived when first read, so results nobody looks into cost nothing.)"""
        content = self.content
        return content.aggregate if isinstance(content, SlidingWindow) else content


class _ModelState:
    """Partial panes, window, judge and hysteresis of one model."""

    def __init__(self, model: str, baseline: Baseline, config: Config,
                 versioned: bool = False) -> None:
        self.model = model  # the engine's key: the name, or name and version
        self.name, self.version = split_identity(model) if versioned else (model, None)
        self.versioned = versioned
        self.config = config.for_model(self.name)
        self.rebase(baseline)
        self.pending: dict[int, Pane] = {}
        self.hysteresis: dict[tuple[str, str, str], Hysteresis] = {}
        # Persistent check: the counts of the last blocks (block index, feature -> counts),
        # the first block seen, and per feature the last block its main check was active in.
        self.blocks: deque[tuple[int, dict[str, np.ndarray]]] = deque()
        self.first_block: int | None = None
        self.quiet_through: dict[str, int] = {}
        # Joint check: the last pane index at which each joint input had a check raised.
        self.input_alarm: dict[str, int] = {}

    def rebase(self, baseline: Baseline) -> None:
        """Judge against ``baseline`` from now on (a new baseline for this model): a fresh
        window over its bins; hysteresis stays, so a raised check resolves against it."""
        self.baseline = baseline
        self.judge = Judge(self.config, baseline)
        self.window = SlidingWindow(self.config.window.panes, baseline, self.judge.scales)
        self.blocks = deque()
        self.first_block = None

    def state(self, key: tuple[str, str, str]) -> Hysteresis:
        state = self.hysteresis.get(key)
        if state is None:
            d = self.config.detect
            # A persistent shift is reported once, at its first judgement over the line.
            raise_after = 1 if key[1] == PERSISTENT_CHECK else d.raise_after
            state = self.hysteresis[key] = Hysteresis(raise_after, d.resolve_after,
                                                      d.resolve_ratio)
        return state


class Evaluator:
    """Merges sealed panes, closes them in order, judges windows, emits events."""

    def __init__(self, config: Config, baselines: Mapping[str, Baseline],
                 on_window: Callable[[WindowResult], None] | None = None) -> None:
        self.config = config
        self.baselines = ModelBaselines.of(baselines, config)
        self.on_window = on_window
        self.pane_ms = config.window.pane_ms
        self.models: dict[str, _ModelState] = {}
        self._encoders: dict[str, tuple[EncodedPanes, EncodedPanes]] = {}  # see _encoded
        self.closed_through: int | None = None  # highest pane index closed
        self.windows = 0
        self.events = 0
        self.late_panes = 0  # partial panes that came after their pane had closed
        self.late_records = 0  # ... and the records in them
        # version_shift hysteresis per (model, version, version), versions sorted.
        self.shift_states: dict[tuple[str, str, str], dict[tuple[str, str, str],
                                                           Hysteresis]] = {}
        self.unknown_panes = 0  # partial panes of models without a baseline (other processes)
        self.unknown_records = 0  # ... and the records in them

    def _model(self, model: str, index: int) -> _ModelState:
        state = self.models.get(model)
        if state is None:
            state = self.models[model] = _ModelState(
                model, baseline_for(self.baselines, model, index), self.config,
                self.baselines.versioned)
        return state

    def add_pane(self, model: str, index: int, pane: Pane) -> None:
        """Merge one source's sealed pane (counted as late if that pane already closed)."""
        if index != WHOLE_INPUT and self.closed_through is not None \
                and index <= self.closed_through:
            self.late_panes += 1
            self.late_records += pane.records
            return
        if model not in self.models and self.baselines.admit(model, pane.records)[0] is None:
            # Built elsewhere for a model this process has no baseline for (or past the
            # bounds): counted, never given state.
            self.unknown_panes += 1
            self.unknown_records += pane.records
            return
        state = self._model(model, index)
        pending = state.pending.get(index)
        if pending is None:
            state.pending[index] = pane
        else:
            pending.merge(pane)

    def advance(self, watermark: int) -> list[SkewEvent]:
        """Close every pane whose end is at or before ``watermark`` (the smallest watermark
        of all sources); returns the events."""
        if watermark == NO_TIME:
            return []
        target = watermark // self.pane_ms - 1  # last pane whose end <= watermark
        if self.closed_through is None:
            first = min((i for s in self.models.values() for i in s.pending if i >= 0),
                        default=None)
            if first is None or first > target:
                return []
            self.closed_through = first - 1
        events: list[SkewEvent] = []
        while self.closed_through < target:
            index = self._next_pane(target)
            for state in self.models.values():
                events.extend(self._close(state, index))
            if self.baselines.versioned and self.config.models.version_shift:
                events.extend(self._version_shifts(index))
            self.closed_through = index
        return events

    # -- version A/B -------------------------------------------------------------------------

    def _version_shifts(self, index: int | None) -> list[SkewEvent]:
        """Versions of one model that served in this window, compared with each other:
        each with the version that served the most records (the stable one), when both
        were summarized against the same baseline (their bins then mean the same)."""
        groups: dict[str, list[_ModelState]] = {}
        for state in self.models.values():
            window = state.window
            if state.version is None or not window.has_records or not window.panes:
                continue
            if index is not None and window.panes[-1].index != index:
                continue
            groups.setdefault(state.name, []).append(state)
        events: list[SkewEvent] = []
        for states in groups.values():
            if len(states) < 2:
                continue
            states.sort(key=lambda s: (-s.window.records, s.version or ""))
            reference = states[0]
            for other in states[1:]:
                if other.baseline.id == reference.baseline.id:
                    events.extend(self._compare_versions(reference, other, index))
        self.events += len(events)
        return events

    def _compare_versions(self, reference: _ModelState, other: _ModelState,
                          index: int | None) -> list[SkewEvent]:
        pair = (reference.name, *sorted((reference.version or "", other.version or "")))
        states = self.shift_states.setdefault(pair, {})  # type: ignore[arg-type]
        start = end = None
        if index is not None:
            start = (index - reference.window.size + 1) * self.pane_ms
            end = (index + 1) * self.pane_ms
        events = []
        for result in version_shift(reference.judge, reference.window.aggregate,
                                    other.window.aggregate):
            if not result.judged:
                continue
            key = result.key
            hysteresis = states.get(key)
            if hysteresis is None:
                d = reference.config.detect
                hysteresis = states[key] = Hysteresis(d.raise_after, d.resolve_after,
                                                      d.resolve_ratio)
            change = hysteresis.observe(result.value, result.threshold)
            if change is None:
                continue
            events.append(self._shift_event(reference, other, result, change, start, end))
        return events

    def _shift_event(self, reference: _ModelState, other: _ModelState, result: CheckResult,
                     change: str, start: int | None, end: int | None) -> SkewEvent:
        name = result.feature
        judge = reference.judge
        sides = {}
        for state in (other, reference):
            summary = state.window.aggregate.summaries[name]
            sides[state.version] = {"count": summary.count,
                                    **judge.evidence(name, summary)["serving"]}
        evidence = {"versions": sides, "compared": [other.version, reference.version],
                    **dict(result.detail or {})}
        if change == "skew_resolved":
            severity = "info"
        else:
            severity = "critical" if result.value >= 2 * result.threshold else "warning"
        baseline = reference.baseline
        return SkewEvent(type=change, model=reference.name, feature=name, kind=result.kind,
                         check=VERSION_SHIFT_CHECK, metric=result.metric, value=result.value,
                         threshold=result.threshold, severity=severity, window_start=start,
                         window_end=end, window_count=result.count, baseline_id=baseline.id,
                         baseline_count=baseline.count, evidence=evidence,
                         model_version=other.version, compared_version=reference.version,
                         versioned=True)

    def _next_pane(self, target: int) -> int:
        """The next pane, skipping stretches where every window is empty anyway."""
        assert self.closed_through is not None
        index = self.closed_through + 1
        if any(s.window.has_records for s in self.models.values()):
            return index
        upcoming = [i for s in self.models.values() for i in s.pending if i >= index]
        return min(min(upcoming), target) if upcoming else target

    def _close(self, state: _ModelState, index: int) -> list[SkewEvent]:
        expected = baseline_for(self.baselines, state.model, index)
        if expected.id != state.baseline.id:  # a new baseline, from this pane on
            state.rebase(expected)
        window = state.window
        if window.panes and index - window.panes[-1].index > window.size:
            window.reset(index)  # a long gap: everything in the window expired
        pane = state.pending.pop(index, None) or Pane.sparse(index, state.baseline)
        window.push(pane)
        if not window.has_records:
            return []
        start = (index - window.size + 1) * self.pane_ms
        return self._judge(state, start, (index + 1) * self.pane_ms, index)

    def flush(self) -> list[SkewEvent]:
        """End of input: close every pending pane (or judge the whole input as one window)."""
        events: list[SkewEvent] = []
        whole = False
        for state in self.models.values():
            pane = state.pending.pop(WHOLE_INPUT, None)
            if pane is not None:
                whole = True
                state.window.push(pane)
                events.extend(self._judge(state, None, None))
        if whole and self.baselines.versioned and self.config.models.version_shift:
            events.extend(self._version_shifts(None))
        last = max((i for s in self.models.values() for i in s.pending), default=None)
        if last is not None:
            events.extend(self.advance((last + 1) * self.pane_ms))
        return events

    # -- judging -----------------------------------------------------------------------------

    def _judge(self, state: _ModelState, start: int | None, end: int | None,
               index: int | None = None) -> list[SkewEvent]:
        self.windows += 1
        window = state.window
        # Under min_count no check can be judged (finer scales hold fewer records still):
        # skip the checks' work. Many small models (or a quiet hour) make this common.
        # (Reading window.aggregate re-derives its moments: only when it is judged.)
        if window.records < state.judge.detect.min_count:
            finer: list[tuple[int, Pane]] = []
            results: list[CheckResult] = []
        else:
            finer = window.covered(state.judge.detect.min_count)
            results = list(state.judge.judge(window.aggregate, finer))
        joint = [r for r in results if r.check == JOINT_CHECK]
        events: list[SkewEvent] = []
        for result in [r for r in results if r.check != JOINT_CHECK]:
            events.extend(self._observe(state, result, start, end))
        if joint:  # after the inputs' own checks: they may explain it
            joint = self._explain_joint(state, joint, results, index)
            results = [r for r in results if r.check != JOINT_CHECK] + joint
            for result in joint:
                events.extend(self._observe(state, result, start, end))
        if index is not None:
            self._note_active(state, index)
            if state.config.detect.persistent:  # after the checks it must not repeat
                persistent = self._persistent(state, index)
                for result in persistent:
                    events.extend(self._observe(state, result, start, end))
                results.extend(persistent)
        if self.on_window is not None:
            self.on_window(WindowResult(state.name, start, end, window.records,
                                        tuple(results), window, state.baseline,
                                        dict(finer), state.version, state.model))
        self.events += len(events)
        return events

    def _observe(self, state: _ModelState, result: CheckResult, start: int | None,
                 end: int | None) -> list[SkewEvent]:
        if not result.judged or math.isnan(result.value):
            return []
        change = state.state(result.key).observe(result.value, result.threshold)
        return [] if change is None else [self._event(state, result, change, start, end)]

    def _explain_joint(self, state: _ModelState, joint: list[CheckResult],
                       results: list[CheckResult], index: int | None) -> list[CheckResult]:
        """The joint check speaks only for what the inputs' own checks do not: while an
        input has a check over its threshold or raised, or raised within the window, the
        joint check is not judged (a unit change of one input moves the reconstruction
        error too, and its own check names the cause)."""
        baseline_joint = state.baseline.joint
        assert baseline_joint is not None
        inputs = set(baseline_joint.inputs)
        explaining = {r.feature for r in results if r.feature in inputs and r.judged
                      and r.value > r.threshold}
        for (feature, _, _), h in state.hysteresis.items():
            if h.active and feature in inputs:
                explaining.add(feature)
                if index is not None:
                    state.input_alarm[feature] = index
        if index is not None:
            size = state.window.size
            explaining.update(f for f, last in state.input_alarm.items()
                              if index - last < size)
            if explaining:  # its blocks hold what the inputs explain: not persistent either
                state.quiet_through[baseline_joint.name] = index // size
        if not explaining:
            return joint
        detail = {"explained_by": sorted(explaining)}
        return [replace(r, judged=False, detail=detail) for r in joint]

    # -- persistent shifts -------------------------------------------------------------------

    def _persistent(self, state: _ModelState, index: int) -> list[CheckResult]:
        """At the end of each block: store its counts, judge the last blocks' sum."""
        size = state.window.size
        if (index + 1) % size:
            return []
        block = index // size
        counts = {name: (s.bins if isinstance(s, NumericSummary) else s.counts).copy()
                  for name, s in state.window.aggregate.summaries.items()}
        state.blocks.append((block, counts))
        horizon = state.config.detect.persistent_windows
        while state.blocks and state.blocks[0][0] <= block - horizon:
            state.blocks.popleft()
        if state.first_block is None:
            state.first_block = block
        oldest = block - horizon + 1
        if oldest < state.first_block:
            return []  # not yet persistent_windows blocks of the stream
        summed = {}
        for name in counts:
            if state.quiet_through.get(name, -1) >= oldest:
                continue  # its blocks still hold an incident its own check raised
            summed[name] = sum(c[name] for _, c in state.blocks)
        return list(state.judge.judge_persistent(summed, horizon * size))

    def _note_active(self, state: _ModelState, index: int) -> None:
        """Remember the block in which a feature has a check (other than persistent) raised:
        its persistent check would only repeat that incident."""
        block = index // state.window.size
        for (feature, check, _), hysteresis in state.hysteresis.items():
            if hysteresis.active and check != PERSISTENT_CHECK:
                state.quiet_through[feature] = block

    # -- events ------------------------------------------------------------------------------

    def _event(self, state: _ModelState, result: CheckResult, change: str,
               start: int | None, end: int | None) -> SkewEvent:
        baseline = state.baseline
        window = state.window
        persistent = result.check == PERSISTENT_CHECK
        part = window.aggregate if result.scale == 0 or persistent \
            else window.scale(result.scale)
        summary = part.summaries.get(result.feature)
        if summary is not None:
            evidence = state.judge.evidence(result.feature, summary)
            if result.check in ("distribution", JOINT_CHECK):
                evidence["noise_floor_applied"] = \
                    result.threshold > state.judge.metric_of(result.feature)[1]
        else:
            evidence = {"records_with_feature": round(result.value * result.count)}
        if result.check in (SURGE_CHECK, PERSISTENT_CHECK) and result.detail:
            evidence[result.check] = dict(result.detail)
        evidence["scale"] = self._scale(result, window.size, end)
        if change == "skew_resolved":
            severity = "info"
        elif persistent:
            severity = "warning"  # under the check's own threshold, by construction
        else:
            severity = "critical" if result.value >= 2 * result.threshold else "warning"
        count = result.window_count if result.window_count is not None else result.count
        return SkewEvent(type=change, model=state.name, feature=result.feature,
                         kind=result.kind, check=result.check, metric=result.metric,
                         value=result.value, threshold=result.threshold, severity=severity,
                         window_start=start, window_end=end, window_count=count,
                         baseline_id=baseline.id, baseline_count=baseline.count,
                         evidence=evidence, model_version=state.version,
                         versioned=state.versioned)

    def _scale(self, result: CheckResult, window_panes: int, end: int | None
               ) -> dict[str, Any]:
        """Which scale decided: the whole window, the newest panes, or the last windows."""
        if result.check == PERSISTENT_CHECK:
            panes, name = result.scale, f"last {result.scale // window_panes} windows"
        elif result.scale == 0:
            panes, name = window_panes, "window"
        else:
            panes = result.scale
            name = "newest pane" if panes == 1 else f"newest {panes} panes"
        start = end - panes * self.pane_ms if end is not None else None
        return {"name": name, "panes": panes, "window_panes": window_panes, "start": start,
                "end": end, "count": result.count}

    # -- checkpoints -------------------------------------------------------------------------

    def _encoded(self, state: _ModelState) -> tuple[list[str], dict[str, str]]:
        """The window's panes and the pending ones as checkpoint text. A pane in a window
        never changes again and most pending ones did not change since the last
        checkpoint: each is encoded once while it stays the same (EncodedPanes)."""
        window, pending = self._encoders.setdefault(state.model,
                                                    (EncodedPanes(), EncodedPanes()))
        indexes = list(state.pending)
        texts = pending.texts(state.pending[i] for i in indexes)
        return window.texts(state.window.panes), {str(i): t for i, t in zip(indexes, texts,
                                                                              strict=True)}

    def state_bytes(self) -> bytes:
        """Everything needed to continue elsewhere: windows, pending panes, hysteresis."""
        for gone in set(self._encoders) - set(self.models):
            del self._encoders[gone]
        encoded = {model: self._encoded(s) for model, s in self.models.items()}
        return orjson.dumps({
            "closed_through": self.closed_through,
            "version_shift": [[*pair, *key, h.active, h.streak]
                              for pair, states in self.shift_states.items()
                              for key, h in states.items()],
            "models": {
                model: {
                    "window": encoded[model][0],
                    "pending": encoded[model][1],
                    "hysteresis": [[*key, h.active, h.streak]
                                   for key, h in s.hysteresis.items()],
                    "blocks": [_block_json(block, counts) for block, counts in s.blocks],
                    "first_block": s.first_block,
                    "quiet_through": s.quiet_through,
                    "input_alarm": s.input_alarm,
                } for model, s in self.models.items()},
        })

    def restore(self, data: bytes) -> None:
        """Continue from :meth:`state_bytes`. Raises BaselineMismatch, and changes nothing,
        when the saved panes were summarized against another baseline."""
        raw = orjson.loads(data)
        models: dict[str, _ModelState] = {}
        for model, saved in raw["models"].items():
            at = raw["closed_through"] if raw["closed_through"] is not None else -1
            state = _ModelState(model, baseline_for(self.baselines, model, at), self.config,
                                self.baselines.versioned)
            for encoded in saved["window"]:
                state.window.push(Pane.from_bytes(b64decode(encoded), state.baseline))
            state.pending = {int(i): Pane.from_bytes(b64decode(p), state.baseline)
                             for i, p in saved["pending"].items()}
            for feature, check, metric, active, streak in saved["hysteresis"]:
                h = state.state((feature, check, metric))
                h.active, h.streak = active, streak
            # Checkpoints from before the persistent check have none of these: start afresh.
            for saved_block in saved.get("blocks", []):
                state.blocks.append(_block_of(saved_block))
            state.first_block = saved.get("first_block")
            state.quiet_through = dict(saved.get("quiet_through", {}))
            state.input_alarm = dict(saved.get("input_alarm", {}))
            models[model] = state
        self.models = models
        self.closed_through = raw["closed_through"]
        self.shift_states = {}
        for name, v1, v2, feature, check, metric, active, streak in raw.get("version_shift",
                                                                             []):
            d = self.config.for_model(name).detect
            h = Hysteresis(d.raise_after, d.resolve_after, d.resolve_ratio)
            h.active, h.streak = active, streak
            self.shift_states.setdefault((name, v1, v2), {})[(feature, check, metric)] = h


def _block_json(block: int, counts: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """One persistent block for a checkpoint: its counts, zlib-compressed like panes."""
    names = list(counts)
    data = b"".join(counts[name].astype("<i8").tobytes() for name in names)
    return {"block": block, "names": names, "sizes": [len(counts[n]) for n in names],
            "data": b64encode(zlib.compress(data, 1)).decode()}


def _block_of(raw: Mapping[str, Any]) -> tuple[int, dict[str, np.ndarray]]:
    values = np.frombuffer(zlib.decompress(b64decode(raw["data"])), "<i8").astype(np.int64)
    bounds = np.cumsum([0, *raw["sizes"]])
    return raw["block"], {name: values[bounds[i]:bounds[i + 1]].copy()
                          for i, name in enumerate(raw["names"])}
