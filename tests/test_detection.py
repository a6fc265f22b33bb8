"""Statistical behaviour of the checks: no false alarms on the baseline's own distribution,
and detection of small real shifts.

Windows are summarized with the same kernels the engine uses (``summary.update``) and judged
by the same :class:`~streamskew.detector.checks.Judge`; an end-to-end test through
``Detector.process`` covers the message path.
"""

from __future__ import annotations

import numpy as np
import pytest

from streamskew import Baseline, Config, Detector
from streamskew.detector.checks import Judge
from streamskew.detector.window import Pane

CATEGORIES = np.array([f"c{i:02d}" for i in range(20)], dtype=object)
WEIGHTS = 1.0 / np.arange(1, 21) ** 1.1
WEIGHTS /= WEIGHTS.sum()
MISSING_RATE = 0.02
TRAINING_SIZE = 200_000


def draw(rng: np.random.Generator, n: int, shift: float = 0.0) -> dict[str, np.ndarray]:
    """``n`` records of the generating distribution (``shift`` in standard deviations)."""
    normal = rng.normal(10.0 + shift * 2.0, 2.0, n)
    normal[rng.random(n) < MISSING_RATE] = np.nan
    amount = rng.lognormal(3.0, 1.0, n)
    category = CATEGORIES[rng.choice(20, size=n, p=WEIGHTS)]
    return {"normal": normal, "amount": amount, "category": category}


@pytest.fixture(scope="module")
def baseline() -> Baseline:
    rng = np.random.default_rng(1)
    columns = draw(rng, TRAINING_SIZE)
    return Baseline.from_columns({
        "normal": [None if np.isnan(v) else float(v) for v in columns["normal"]],
        "amount": columns["amount"].tolist(),
        "category": columns["category"].tolist(),
    })


def window_of(baseline: Baseline, columns: dict[str, np.ndarray]) -> Pane:
    pane = Pane.empty(0, baseline)
    pane.records = len(columns["normal"])
    for name, values in columns.items():
        pane.summaries[name].update(values)
    return pane


def alarms(judge: Judge, pane: Pane) -> list[tuple[str, str, str, float, float]]:
    return [(r.feature, r.check, r.metric, r.value, r.threshold) for r in judge.judge(pane)
            if r.judged and r.value > r.threshold]


@pytest.mark.slow
@pytest.mark.parametrize("size", [100, 1_000, 10_000, 100_000, 1_000_000])
def test_no_false_alarm_on_200_windows_from_the_baseline_distribution(baseline, size):
    """Default settings (alpha = 1e-5 per window and check): across 200 independent windows
    of the training distribution, no check of any feature crosses its threshold. With about
    7 judged checks per window that is 1,400 chances; at alpha = 1e-5 the chance of even one
    alarm is ~1.4%, and the noise floor's fit is conservative, so a failure means a real
    calibration bug rather than bad luck."""
    config = Config.from_dict({"detect": {"min_count": 100}})
    judge = Judge(config, baseline)
    rng = np.random.default_rng(1000 + size)
    found = []
    for _ in range(200):
        found.extend(alarms(judge, window_of(baseline, draw(rng, size))))
    assert found == []


def shifted_alarm(baseline: Baseline, config: Config, n: int, shift: float, seed: int):
    judge = Judge(config, baseline)
    pane = window_of(baseline, draw(np.random.default_rng(seed), n, shift=shift))
    return alarms(judge, pane)


def test_default_settings_detect_half_sigma_mean_shift_at_10k(baseline):
    config = Config.from_dict({})
    for seed in range(5):
        found = shifted_alarm(baseline, config, 10_000, 0.5, seed)
        assert [(f, c) for f, c, *_ in found] == [("normal", "distribution")]
        metric, value, threshold = found[0][2:]
        assert metric == "jsd" and value > threshold == pytest.approx(0.1)


def test_threshold_005_detects_fifth_sigma_shift_at_100k(baseline):
    config = Config.from_dict({"detect": {"numeric_threshold": 0.05}})
    for seed in range(3):
        found = shifted_alarm(baseline, config, 100_000, 0.2, seed)
        assert [(f, c) for f, c, *_ in found] == [("normal", "distribution")]


def test_tiny_shift_is_not_flagged_at_default_threshold(baseline):
    """0.05 sigma is below what the default 0.1 JS distance calls skew: no alarm."""
    config = Config.from_dict({})
    assert shifted_alarm(baseline, config, 100_000, 0.05, 9) == []


def test_small_window_raises_the_threshold_to_the_noise_floor(baseline):
    judge = Judge(Config.from_dict({"detect": {"min_count": 50}}), baseline)
    small = {r.key: r for r in judge.judge(window_of(baseline, draw(np.random.default_rng(3),
                                                                    100)))}
    large = {r.key: r for r in judge.judge(window_of(baseline, draw(np.random.default_rng(3),
                                                                    100_000)))}
    key = ("normal", "distribution", "jsd")
    assert small[key].threshold > 0.3  # 100 values in ~100 bins: noise alone is large
    assert large[key].threshold == pytest.approx(0.1)


def test_end_to_end_through_messages_detects_shift_and_resolves(baseline):
    """Messages -> panes -> windows -> events, with a shift in the middle of the stream."""
    config = Config.from_dict({"window": {"size": "5m", "pane": "1m",
                                          "allowed_lateness": "0s"},
                               "detect": {"min_count": 500, "resolve_after": 1}})
    detector = Detector(config, baseline)
    rng = np.random.default_rng(5)
    start = 1_764_324_000_000
    events = []
    for minute in range(20):
        shift = 1.0 if 5 <= minute < 10 else 0.0
        columns = draw(rng, 2000, shift=shift)
        messages = []
        for i in range(2000):
            value = columns["normal"][i]
            messages.append({"timestamp": start + minute * 60_000 + i * 30,
                             "features": {"normal": None if np.isnan(value) else value,
                                          "amount": columns["amount"][i],
                                          "category": columns["category"][i]}})
        events.extend(detector.process(messages))
    events.extend(detector.flush())
    summary = [(e.type, e.feature, e.check, (e.window_end - start) // 60_000) for e in events]
    assert summary == [("skew_detected", "normal", "distribution", 6),
                       ("skew_resolved", "normal", "distribution", 15)]
    detected = events[0]
    assert detected.window_count > 1_000
    assert detected.evidence["serving"]["p50"] > detected.evidence["baseline"]["p50"]
