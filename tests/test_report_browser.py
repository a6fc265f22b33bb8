"""The demo's HTML report in a real browser: headless Chromium driven by selenium.

Needs Debian's ``chromium`` and ``chromium-driver`` (``/usr/bin/chromium``,
``/usr/bin/chromedriver``; ``.ci/run`` installs them) and selenium (the ``dev`` extra). Without
them these tests skip -- or fail when ``CI=true`` (as in ``.ci/run``), like the Kafka tests with
``STREAMSKEW_REQUIRE_KAFKA=1``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamskew.demo import MODEL

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run")
# The demo's four injected incidents: their overview rows (model/feature/check/metric).
DEMO_INCIDENT_ROWS = (f"{MODEL}/carat/distribution/jsd",
                      f"{MODEL}/cut/unseen_categories/unseen_rate",
                      f"{MODEL}/depth/missing_rate/missing_rate",
                      f"{MODEL}/table/schema/type_change")


def _browser_unavailable(reason: str) -> None:
    """Skip (default) or fail (CI=true) because there is no browser to drive."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"a browser is required in CI (CI=true) but: {reason}")
    pytest.skip(f"no headless browser: {reason}")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A headless Chromium (fresh profile, no network services) driven by selenium."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            _browser_unavailable(f"{path} is missing (apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _browser_unavailable("selenium is not installed (pip install -e '.[dev]')")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tmp_path_factory.mktemp("chromium-profile")
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1400,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: selenium then downloads nothing.
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def report_page(browser, demo_output) -> Any:
    directory, _ = demo_output
    browser.get((directory / "report.html").as_uri())
    return browser


def _severe(driver: Any) -> list[dict[str, Any]]:
    return [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]


def test_demo_report_in_a_browser(report_page, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = report_page
    assert _severe(driver) == []  # no script errors, nothing failed to load
    # the overview rows of all four incidents, marked resolved
    rows = {r.get_attribute("data-key"): r
            for r in driver.find_elements(By.CSS_SELECTOR, "#overview-table tr.ov-row")}
    for key in DEMO_INCIDENT_ROWS:
        assert key in rows, key
        assert rows[key].is_displayed()
        assert rows[key].get_attribute("data-state") == "resolved"
    # click the carat unit change's skew_detected event: its incident view comes into view
    carat = next(e for e in driver.find_elements(By.CSS_SELECTOR, "table.events tr.event")
                 if "carat" in e.text and "skew_detected" in e.text
                 and "distribution" in e.text)
    target = carat.get_attribute("data-href")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", carat)
    carat.find_element(By.CSS_SELECTOR, "td.evidence").click()  # the row, not a link
    WebDriverWait(driver, 10).until(lambda d: d.execute_script(
        "return window.location.hash") == target)
    incident = driver.find_element(By.ID, target[1:])
    assert incident.get_attribute("data-feature") == "carat"
    assert incident.get_attribute("data-check") == "distribution"
    WebDriverWait(driver, 10).until(lambda d: d.execute_script(
        "const r = arguments[0].getBoundingClientRect();"
        "return r.top >= 0 && r.top < window.innerHeight;", incident))
    assert driver.execute_script("return document.querySelector(':target') === arguments[0]",
                                 incident)
    overlay = incident.find_element(By.CSS_SELECTOR, ".overlay svg")
    assert overlay.is_displayed() and overlay.size["width"] > 300
    assert overlay.find_elements(By.CSS_SELECTOR, "path.serving")  # the worst window's bars
    assert "Worst window vs baseline" in incident.text
    shot = tmp_path / "report-incident.png"
    assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    assert _severe(driver) == []


def test_events_evidence_never_overflows(report_page):
    driver = report_page
    overflow = driver.execute_script("""
        const wrap = document.querySelector('#events .table-wrap');
        const cells = Array.from(document.querySelectorAll('table.events td'));
        return {table: wrap.scrollWidth - wrap.clientWidth,
                cells: cells.filter(c => c.scrollWidth > c.clientWidth + 1).length,
                width: window.innerWidth};
    """)
    assert overflow["width"] >= 1350  # the 1,400 px window the issue was seen at
    assert overflow == {"table": 0, "cells": 0, "width": overflow["width"]}


def test_overview_filters_and_sorts(report_page):
    from selenium.webdriver.common.by import By

    driver = report_page
    driver.execute_script("window.scrollTo(0, 0)")
    box = driver.find_element(By.ID, "ov-filter")
    assert box.is_displayed()  # the script showed the controls
    box.clear()
    box.send_keys("depth")
    visible = [r for r in driver.find_elements(By.CSS_SELECTOR, "#overview-table tr.ov-row")
               if r.is_displayed()]
    assert visible and all("/depth/" in r.get_attribute("data-key") for r in visible)
    assert len(visible) == 4  # depth's four checks
    box.clear()
    box.send_keys(" ")  # fire input with an almost empty filter ...
    box.clear()
    driver.execute_script("document.getElementById('ov-filter').dispatchEvent("
                          "new Event('input'))")
    header = next(th for th in driver.find_elements(By.CSS_SELECTOR, "#overview-table th")
                  if th.text.startswith("WINDOWS OVER"))
    header.click()  # descending first
    counts = [int(r.find_elements(By.TAG_NAME, "td")[5].get_attribute("data-v").split(".")[0])
              for r in driver.find_elements(By.CSS_SELECTOR, "#overview-table tr.ov-row")]
    assert counts == sorted(counts, reverse=True) and counts[0] > 0
    header.click()
    counts = [int(r.find_elements(By.TAG_NAME, "td")[5].get_attribute("data-v").split(".")[0])
              for r in driver.find_elements(By.CSS_SELECTOR, "#overview-table tr.ov-row")]
    assert counts == sorted(counts)
    assert _severe(driver) == []
