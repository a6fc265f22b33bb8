"""Event time owned by the engine: per-record lateness, a watermark that a few bad clocks cannot
move, idle and finished sources, snapshots, and verdicts that never read the wall clock.

Every batched result is compared with :class:`OneAtATime`, a plain reference written here
from the rules in the README (no numba, no vectorization, no code of the engine's clock):
records arrive one by one, each is judged against the stream time before it, folded, held,
released, or turned away, and the evaluator is advanced after every single record.
"""

from __future__ import annotations

import random
import time
from collections import deque

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamskew import Baseline, Config, Detector
from streamskew.detector import Evaluator, SourceCoordinator
from streamskew.detector.builder import fold
from streamskew.detector.window import Pane
from streamskew.records import NO_TIME, Decoder, Reason

PANE_MS = 1000
START = 1_700_000_000_000


def make_config(**window: object) -> Config:
    return Config.from_dict({
        "window": {"size": "4s", "pane": "1s", "allowed_lateness": "500ms",
                   "max_ahead": "3s", "watermark_quorum": 3, "watermark_memory": 8,
                   **window},
        "detect": {"min_count": 20},
    })


@pytest.fixture(scope="module")
def baseline() -> Baseline:
    rng = np.random.default_rng(5)
    return Baseline.from_columns({"x": rng.normal(0, 1, 5000).round(4).tolist(),
                                  "c": rng.choice(["a", "b", "c"], 5000).tolist()})


class OneAtATime:
    """The rules of one source's event time, applied to one record at a time."""

    def __init__(self, config: Config, baseline: Baseline) -> None:
        w = config.window
        self.lateness, self.ahead_ms = w.allowed_lateness_ms, w.max_ahead_ms
        self.quorum, self.memory = w.watermark_quorum, w.watermark_memory
        self.baseline = baseline
        self.decoder = Decoder(config.message, baseline.schema)
        self.evaluator = Evaluator(config, {"default": baseline})
        self.recent: deque[int] = deque(maxlen=self.memory)
        self.stream: int | None = None
        self.held: list[tuple[int, int, object]] = []  # arrival step, time, columns
        self.open: dict[int, Pane] = {}
        self.sealed = -(2**62)  # last sealed pane index
        self.step = 0
        self.late = self.ahead = 0
        self.events: list = []

    def _fold(self, t: int, columns) -> None:
        index = t // PANE_MS
        pane = self.open.get(index) or self.open.setdefault(index, Pane.empty(index,
                                                                              self.baseline))
        fold(pane, columns, self.baseline)

    def feed(self, message: bytes) -> None:
        columns, _ = self.decoder.decode([message])
        t = int(columns.timestamps[0])
        i, self.step = self.step, self.step + 1
        sealed_before = self.sealed
        own = None
        if self.stream is not None and t // PANE_MS <= sealed_before:
            self.late += 1
        elif self.stream is None or t > self.stream + self.ahead_ms:
            self.held.append((i, t, columns))
        else:
            own = (t, columns)
        self.recent.append(t)
        if len(self.recent) >= self.quorum:
            latest = sorted(self.recent)[-self.quorum]
            self.stream = latest if self.stream is None else max(self.stream, latest)
        still = []
        for arrival, held_t, held_columns in self.held:  # in arrival order
            if self.stream is not None and held_t <= self.stream + self.ahead_ms:
                if held_t // PANE_MS <= sealed_before:
                    self.late += 1
                else:
                    self._fold(held_t, held_columns)
            elif arrival + self.memory <= i + 1:
                self.ahead += 1
            else:
                still.append((arrival, held_t, held_columns))
        self.held = still
        if own is not None:
            self._fold(*own)
        if self.stream is not None:
            self.sealed = max(self.sealed, (self.stream - self.lateness) // PANE_MS - 1)
            for index in sorted(k for k in self.open if k <= self.sealed):
                self.evaluator.add_pane("default", index, self.open.pop(index))
            self.events += self.evaluator.advance(self.stream - self.lateness)

    def end(self) -> None:
        for _, held_t, held_columns in self.held:
            if self.stream is None:
                self._fold(held_t, held_columns)
            else:
                self.ahead += 1
        for index in sorted(self.open):
            self.evaluator.add_pane("default", index, self.open.pop(index))
        self.events += self.evaluator.flush()


def reference(config: Config, baseline: Baseline, messages: list[bytes]) -> OneAtATime:
    one = OneAtATime(config, baseline)
    for message in messages:
        one.feed(message)
    one.end()
    return one


def batched(config: Config, baseline: Baseline, messages: list[bytes], cuts: list[int],
            bad: list | None = None) -> tuple[Detector, list]:
    detector = Detector(config, baseline, on_bad_record=None if bad is None else bad.append)
    events, start = [], 0
    for end in [*sorted(set(cuts)), len(messages)]:
        if end > start:
            events += detector.process(messages[start:end])
            start = end
    return detector, events + detector.flush()


def outcome(events) -> list[tuple]:
    return [(e.event_id, e.type, e.value, e.threshold, e.window_start, e.window_end,
             e.window_count) for e in events]


def message(t: int, x: float, c: str = "a") -> bytes:
    return orjson.dumps({"timestamp": t, "features": {"x": x, "c": c}})


def stream(rng: random.Random, n: int, *, late_share: float = 0.0, late_ms: int = 2500,
           outliers: int = 0, shift_at: int | None = None, jump_at: int | None = None
           ) -> list[bytes]:
    """Records 20 ms apart; some delivered ``late_ms`` late, ``outliers`` far ahead or behind,
    the values shifted by 3 sigma from ``shift_at``, the whole clock a day ahead from
    ``jump_at``."""
    out = []
    for i in range(n):
        t = START + i * 20
        if jump_at is not None and i >= jump_at:
            t += 86_400_000
        if rng.random() < late_share:
            t -= late_ms
        x = rng.gauss(3.0 if shift_at is not None and i >= shift_at else 0.0, 1.0)
        out.append(message(t, round(x, 4), rng.choice("abc")))
    for _ in range(outliers):
        where = rng.randrange(n)
        far = rng.choice([365 * 86_400_000, -365 * 86_400_000, 3_600_000])
        out.insert(where, message(START + where * 20 + far, 0.0))
    return out


# -- against the reference ---------------------------------------------------------------------


def test_out_of_order_within_and_beyond_the_allowance(baseline):
    """5% of records 2.5 s late (allowance 0.5 s): late counts, windows and events are the
    reference's, for batches of 1, 7, 100 and everything at once."""
    config = make_config()
    messages = stream(random.Random(1), 1500, late_share=0.05, shift_at=900)
    want = reference(config, baseline, messages)
    assert want.late > 20 and want.events  # the case is not trivial
    for size in (1, 7, 100, len(messages)):
        detector, events = batched(config, baseline, messages,
                                   list(range(size, len(messages), size)))
        stats = detector.stats
        assert (stats.late, stats.windows) == (want.late, want.evaluator.windows), size
        assert outcome(events) == outcome(want.events), size


def test_records_within_lateness_are_never_late_whatever_the_batches(baseline):
    config = make_config(allowed_lateness="3s")
    messages = stream(random.Random(2), 800, late_share=0.2, late_ms=2000)
    for size in (1, 50, 800):
        detector, _ = batched(config, baseline, messages, list(range(size, 800, size)))
        assert detector.stats.late == 0
        assert detector.stats.accepted == 800


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n=st.integers(30, 400),
       late_share=st.sampled_from([0.0, 0.05, 0.3]), outliers=st.integers(0, 4),
       jump=st.booleans(), data=st.data())
def test_property_any_batching_equals_one_record_at_a_time(baseline, seed, n, late_share,
                                                           outliers, jump, data):
    config = make_config()
    rng = random.Random(seed)
    messages = stream(rng, n, late_share=late_share, outliers=outliers,
                      shift_at=n // 2, jump_at=(2 * n) // 3 if jump else None)
    cuts = data.draw(st.lists(st.integers(1, len(messages)), max_size=30))
    want = reference(config, baseline, messages)
    detector, events = batched(config, baseline, messages, cuts)
    stats = detector.stats
    assert stats.late == want.late
    assert stats.bad.get(Reason.AHEAD_OF_WATERMARK, 0) == want.ahead
    assert stats.windows == want.evaluator.windows
    assert outcome(events) == outcome(want.events)


# -- a watermark that a few bad clocks cannot move ---------------------------------------------


def skew_config() -> Config:
    return Config.from_dict({"window": {"size": "20s", "pane": "5s",
                                        "allowed_lateness": "1s"},
                             "detect": {"min_count": 100}})


def test_far_future_and_far_past_records_do_not_blind_the_detector(baseline):
    """A handful of records stamped a year ahead (today's clock in last year's stream) and a
    year behind, early in a stream with a real shift: the shift is raised at the same window
    as without them, and those records are dead-lettered with their reason and watermark."""
    rng = random.Random(3)
    clean = stream(rng, 6000, shift_at=3000)
    dirty = list(clean)
    for where, offset in ((3, 365), (40, 365), (41, -365), (200, 200), (700, -30)):
        dirty.insert(where, message(START + where * 20 + offset * 86_400_000, 99.0, "zz"))
    config = skew_config()
    _, want = batched(config, baseline, clean, list(range(500, 6000, 500)))
    bad: list = []
    detector, got = batched(config, baseline, dirty, list(range(500, 6005, 500)), bad)
    first = next(e for e in want if e.type == "skew_detected")
    assert (first.feature, first.check) == ("x", "distribution")
    raised = [e for e in got if e.type == "skew_detected" and e.key == first.key
              and e.check == first.check]
    assert raised and raised[0].window_end == first.window_end
    assert detector.stats.late == 2  # the two far-past ones
    reasons = sorted(b.reason for b in bad)
    assert reasons == [Reason.AHEAD_OF_WATERMARK] * 3 + [Reason.LATE] * 2
    assert all("watermark" in b.detail and b.event_time is not None for b in bad)
    assert all(orjson.loads(b.raw)["features"]["x"] == 99.0 for b in bad)


def test_one_wrong_clock_record_first_of_all_is_not_the_streams_time(baseline):
    """Even the very first record of a source cannot set its clock: the first records wait
    until ``watermark_quorum`` of them agree."""
    rng = random.Random(4)
    messages = [message(START + 365 * 86_400_000, 0.0), *stream(rng, 3000, shift_at=1500)]
    bad: list = []
    detector, events = batched(skew_config(), baseline, messages, [1, 2, 500], bad)
    assert [b.reason for b in bad] == [Reason.AHEAD_OF_WATERMARK]
    assert detector.stats.late == 0 and detector.stats.accepted == 3000
    assert any(e.type == "skew_detected" for e in events)


def test_a_source_that_really_jumps_ahead_is_followed(baseline):
    """The whole clock moves a day ahead mid-stream: after ``watermark_quorum`` records the
    stream time follows, the held records are folded, nothing after the jump is late, and
    windows are judged on the new day."""
    config = skew_config()
    messages = stream(random.Random(5), 4000, jump_at=2000)
    bad: list = []
    detector, _ = batched(config, baseline, messages, list(range(333, 4000, 333)), bad)
    stats = detector.stats
    assert bad == [] and stats.late == 0 and stats.accepted == 4000
    assert detector.sources.builders["input"].stream_time > START + 86_400_000
    assert detector.evaluator.closed_through is not None
    assert detector.evaluator.closed_through * 5000 > START + 86_400_000


# -- several sources ---------------------------------------------------------------------------


def test_idle_and_finished_sources(baseline):
    config = make_config()
    sources = SourceCoordinator(config, {"default": baseline})
    sources.expect(["a", "b", "c"])
    records = [message(START + i * 20, 0.1) for i in range(600)]
    sources.add("a", records)
    sources.add("b", records[:300])
    assert sources.evaluator.closed_through is None  # c has not reported
    sources.heartbeat("c", -1, idle=True)  # c is idle: it no longer holds the clock
    assert sources.watermark == sources.builders["b"].watermark
    closed = sources.evaluator.closed_through
    assert closed is not None and (closed + 1) * PANE_MS <= sources.watermark
    sources.finish("b")  # b ended: only a holds the clock now
    assert sources.watermark == sources.builders["a"].watermark
    assert not sources.done
    sources.heartbeat("c", START, final=True)
    sources.finish("a")
    assert sources.done  # every source finished: everything judged
    assert not any(s.pending for s in sources.evaluator.models.values())


def test_when_every_source_is_idle_the_clock_is_the_furthest_of_them(baseline):
    """b never gives the clock a time (say, only records of an unknown model) and holds it
    back; a and b then go idle together. The clock becomes a's watermark, so a's complete
    panes are judged instead of waiting for traffic. When b speaks again it holds the
    clock from its own time, and the panes judged stay judged."""
    sources = SourceCoordinator(make_config(), {"default": baseline})
    sources.expect(["a", "b"])
    sources.add("a", [message(START + i * 20, 0.1) for i in range(600)])
    ahead = sources.builders["a"].watermark
    sources.heartbeat("a", ahead, idle=True)
    assert sources.evaluator.closed_through is None  # b has not reported: it holds the clock
    sources.heartbeat("b", NO_TIME, idle=True)
    assert sources.watermark == ahead
    closed = sources.evaluator.closed_through
    assert closed is not None and closed == ahead // PANE_MS - 1
    sources.add("b", [message(START + 100, 0.1)])
    assert sources.watermark == sources.builders["b"].watermark < ahead
    assert sources.evaluator.closed_through == closed


def test_restore_from_a_snapshot_mid_window_continues_identically(baseline):
    """A builder and a coordinator snapshotted mid-window (records held and panes open) and
    restored elsewhere give what an uninterrupted run gives."""
    config = make_config()
    messages = stream(random.Random(6), 1200, late_share=0.05, outliers=3, shift_at=600)
    want = reference(config, baseline, messages)
    for cut in (2, 5, 417, 901):
        first = Detector(config, baseline)
        events = first.process(messages[:cut])
        builder = first.sources.builders["input"]
        second = Detector(config, baseline)
        second.sources.restore(first.sources.snapshot())
        second.sources.builder("input").restore(builder.state_bytes())
        events += second.process(messages[cut:]) + second.flush()
        assert outcome(events) == outcome(want.events), cut
        late = builder.stats.late + second.stats.late
        assert late == want.late, cut


def test_state_from_another_baseline_is_refused(baseline):
    from streamskew.detector import BaselineMismatch

    config = make_config()
    detector = Detector(config, baseline)
    detector.process(stream(random.Random(7), 300))
    other = Baseline.from_columns({"x": [float(i) for i in range(1000)],
                                   "c": ["a", "b"] * 500})
    elsewhere = Detector(config, other)
    with pytest.raises(BaselineMismatch):
        elsewhere.sources.builder("input").restore(
            detector.sources.builders["input"].state_bytes())
    with pytest.raises(BaselineMismatch):
        elsewhere.sources.restore(detector.sources.snapshot())


# -- no wall clock ------------------------------------------------------------------------------


def test_the_same_records_give_the_same_events_in_another_year(baseline, monkeypatch):
    """Verdicts are a pure function of the input and the config: with the system clock set
    ten years ahead or back, a file of last year's records gives the same events (the old
    engine rejected records 'more than a day in the future' of time.time())."""
    config = skew_config()
    messages = stream(random.Random(8), 4000, shift_at=2000)
    messages += [message(int(time.time() * 1000) + 3 * 86_400_000 + i, 0.0) for i in range(3)]
    results = []
    real = time.time
    for years in (0, 10, -10):
        monkeypatch.setattr(time, "time", lambda years=years: real() + years * 365 * 86400)
        detector, events = batched(config, baseline, messages, [1000, 3000])
        results.append((outcome(events), detector.stats.summary()))
        monkeypatch.undo()
    assert results[0] == results[1] == results[2]
    assert any(e[1] == "skew_detected" for e in results[0][0])
