"""The HTML report of a long run: size, and render time in a real browser.

A day of 1-minute panes (window 10m) for 50 features (40 numeric, 10 categorical), 120
requests a minute, through the engine with a ReportCollector; shifts on 10 features, 2 hours
at a time, plus an hour of a type change and an unseen category. Then the report is rendered
and opened in headless Chromium (Debian's /usr/bin/chromium, driven by selenium): the time
from navigation start to the end of the load event, with a full layout. Reference, timed
interleaved: a page of the same byte size that is only text (what the browser costs on this
machine for that many bytes).

    python benchmarks/bench_report.py [--quick] [--no-record] [--rounds N]

The last line printed is ``render_seconds=<x>`` (the median load time of the report).
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import append_results, parse_args, print_header, text_table

from streamskew import Baseline, Config, Detector
from streamskew.report import render_report
from streamskew.report.collect import ReportCollector

T0 = 1_764_288_000_000  # 2025-11-28 00:00 UTC
PER_MINUTE = 120
N_NUMERIC, N_CATEGORICAL = 40, 10
CATEGORIES = ["a", "b", "c", "d", "e", "f"]
WEIGHTS = [0.3, 0.25, 0.2, 0.1, 0.1, 0.05]
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--window-size=1400,1000")


def run_engine(minutes: int) -> tuple[str, int, int]:
    """The report's HTML for ``minutes`` of 1-minute panes; plus events and windows."""
    rng = np.random.default_rng(3)
    train: dict[str, list[object]] = {
        f"num_{i:02d}": rng.normal(i, 1 + i % 5, 20_000).tolist() for i in range(N_NUMERIC)}
    for i in range(N_CATEGORICAL):
        train[f"cat_{i:02d}"] = rng.choice(CATEGORIES, 20_000, p=WEIGHTS).tolist()
    baseline = Baseline.from_columns(train)
    config = Config.from_dict({"window": {"size": "10m", "pane": "1m",
                                          "allowed_lateness": "0s"},
                               "detect": {"min_count": 100}})
    collector = ReportCollector(baseline)
    detector = Detector(config, baseline, on_window=collector.on_window,
                        on_bad_record=collector.on_bad_record)
    events = []
    for minute in range(minutes):
        times = T0 + minute * 60_000 + np.arange(PER_MINUTE) * (60_000 // PER_MINUTE)
        numbers = {f"num_{i:02d}": rng.normal(i, 1 + i % 5, PER_MINUTE)
                   for i in range(N_NUMERIC)}
        for i in range(10):
            if (minute // 120) % 6 == i % 6:
                numbers[f"num_{i:02d}"] = numbers[f"num_{i:02d}"] * 1.5 + 2
        grades = {f"cat_{i:02d}": rng.choice(CATEGORIES, PER_MINUTE, p=WEIGHTS)
                  for i in range(N_CATEGORICAL)}
        batch = []
        for j in range(PER_MINUTE):
            features: dict[str, object] = {k: float(v[j]) for k, v in numbers.items()}
            features.update({k: str(v[j]) for k, v in grades.items()})
            if 600 <= minute < 660 and j % 3 == 0:
                features["cat_00"] = "zz"
                features["num_20"] = "oops"
            batch.append({"timestamp": int(times[j]), "features": features})
        events += detector.process(batch)
    events += detector.flush()
    data = collector.data(detector.stats, events, "bench_report", None)
    return render_report(data), len(events), detector.stats.windows


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], default_rounds=5)
    minutes = 120 if args.quick else 1440
    params = {"panes": f"{minutes:,} x 1 minute (window 10m)",
              "features": f"{N_NUMERIC} numeric + {N_CATEGORICAL} categorical",
              "requests": f"{PER_MINUTE} per minute", "rounds": args.rounds,
              "browser": "headless Chromium (/usr/bin/chromium), 1400x1000"}
    print_header("bench_report: report size and browser render time", params)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    started = time.perf_counter()
    html, n_events, windows = run_engine(minutes)
    engine_seconds = time.perf_counter() - started
    size = len(html.encode("utf-8"))
    folder = Path(tempfile.mkdtemp(prefix="bench-report-"))
    page = folder / "report.html"
    page.write_text(html, encoding="utf-8")
    plain = folder / "plain.html"
    filler = "x" * 99 + "\n"
    plain.write_text("<!DOCTYPE html><html><body><pre>" + filler * (size // 100) +
                     "</pre></body></html>", encoding="utf-8")

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={folder / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)

    def load(path: Path) -> float:
        driver.get("about:blank")
        driver.get(path.as_uri())
        return driver.execute_script(
            "document.body.getBoundingClientRect();"  # force a full layout
            "const n = performance.getEntriesByType('navigation')[0];"
            "return (n.loadEventEnd - n.startTime) / 1000;")

    try:
        load(page)  # warm-up
        ours, reference = [], []
        for _ in range(args.rounds):
            ours.append(load(page))
            reference.append(load(plain))
        load(page)
        elements = driver.execute_script("return document.getElementsByTagName('*').length")
    finally:
        driver.quit()
    render = float(np.median(ours))
    plain_time = float(np.median(reference))
    headers = ["page", "size", "load + layout (median)", "range"]
    rows = [["report (headline)", f"{size / 1e6:.2f} MB", f"{render:.2f} s",
             f"{min(ours):.2f}..{max(ours):.2f} s"],
            ["plain text, same size", f"{size / 1e6:.2f} MB", f"{plain_time:.2f} s",
             f"{min(reference):.2f}..{max(reference):.2f} s"]]
    print()
    print(text_table(headers, rows))
    incidents = len(re.findall(r'<div class="incident" ', html))
    notes = [
        f"{windows:,} windows judged, {n_events} events; engine + collector "
        f"{engine_seconds:.0f} s (not part of the render time); {elements:,} DOM elements, "
        f"{html.count('<svg ')} SVG charts, {incidents} incident views.",
        "Load + layout = navigation start to the end of the load event (parse, style, layout "
        "of the whole page; the page's script runs before it), from `file://`.",
        "Reference: a page of the same byte size that is only text in a <pre>.",
    ]
    if not args.no_record:
        append_results("bench_report: report size and browser render time", params, headers,
                       rows, notes)
    print(f"render_seconds={render:.2f}")


if __name__ == "__main__":
    main()
