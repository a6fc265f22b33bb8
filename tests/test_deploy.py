"""deploy/: the Prometheus rules (promtool), the Alertmanager routes (amtool), the Grafana
dashboard, and docker-compose.yml wiring them to the detector.

promtool and amtool come from Debian's ``prometheus`` and ``prometheus-alertmanager``
packages (``.ci/run`` installs them); without them those tests skip, or fail when
``CI=true``. There is no Docker engine here, so the compose file is checked as YAML: every
mounted file exists and every address one service uses for another matches that service.
That the dashboard's and the rules' metrics exist on a real service's page is
tests/test_metrics_kafka.py.
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .deploy_files import (
    ALERTMANAGER_CONFIG,
    COMPOSE,
    DASHBOARD,
    DEPLOY,
    PROMETHEUS_CONFIG,
    ROOT,
    RULE_TESTS,
    RULES,
    as_promql,
    dashboard,
    dashboard_queries,
    load_yaml,
    metric_names,
    panels,
    rules,
    variable_queries,
)

ALERTS = {"StreamskewSkewActive", "StreamskewNoRecords", "StreamskewWatermarkStalled",
          "StreamskewLagGrowing", "StreamskewBadRecordRate", "StreamskewDown"}


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        reason = (f"{name} is not installed (Debian: apt-get install prometheus "
                  "prometheus-alertmanager)")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{name} is required in CI (CI=true) but: {reason}")
        pytest.skip(reason)
    return path


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120,
                          check=False)


# -- Prometheus ----------------------------------------------------------------------------


def test_promtool_checks_the_rules() -> None:
    done = run(tool("promtool"), "check", "rules", RULES)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in done.stdout


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    """Each alert fires on made-up series where it must and stays quiet where it must not
    (deploy/prometheus/tests/streamskew.rules.test.yml)."""
    done = run(tool("promtool"), "test", "rules", RULE_TESTS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
    tested = {case["alertname"] for test in load_yaml(RULE_TESTS)["tests"]
              for case in test["alert_rule_test"]}
    assert tested == ALERTS  # every alert has a test, both firing and quiet
    for alert in ALERTS:
        outcomes = {bool(case["exp_alerts"]) for test in load_yaml(RULE_TESTS)["tests"]
                    for case in test["alert_rule_test"] if case["alertname"] == alert}
        assert outcomes == {True, False}, alert


def test_promtool_checks_the_prometheus_config_with_its_rules() -> None:
    done = run(tool("promtool"), "check", "config", PROMETHEUS_CONFIG)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 1 rule files found" in done.stdout
    assert f"SUCCESS: {len(ALERTS)} rules found" in done.stdout


def test_the_rules_are_the_alerts_the_on_call_needs() -> None:
    found = {rule["alert"]: rule for rule in rules()}
    assert set(found) == ALERTS
    for name, rule in found.items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
    assert "streamskew_skew_active" in found["StreamskewSkewActive"]["expr"]
    assert "streamskew_watermark_timestamp_seconds" in found["StreamskewWatermarkStalled"]["expr"]
    assert "streamskew_consumer_lag_records" in found["StreamskewLagGrowing"]["expr"]


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses PromQL only in rule files: each dashboard query, its variables filled
    in, becomes a recording rule of a throwaway file."""
    board = dashboard()
    exprs = [as_promql(e) for e in dashboard_queries(board) + variable_queries(board)]
    assert len(exprs) > 20
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for i, expr in enumerate(exprs):
        lines += [f"      - record: dashboard_query_{i}", f"        expr: {expr!r}"]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text("\n".join(lines) + "\n")
    done = run(tool("promtool"), "check", "rules", path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in done.stdout


# -- Alertmanager --------------------------------------------------------------------------


def test_amtool_checks_the_alertmanager_config() -> None:
    done = run(tool("amtool"), "check-config", ALERTMANAGER_CONFIG)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@pytest.mark.parametrize(("severity", "receiver"), [("critical", "streamskew-page"),
                                                    ("warning", "streamskew-tickets")])
def test_every_alert_is_routed_by_its_severity(severity: str, receiver: str) -> None:
    amtool = tool("amtool")
    for rule in rules():
        if rule["labels"]["severity"] != severity:
            continue
        done = run(amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}",
                   f"alertname={rule['alert']}", f"severity={severity}")
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.split() == [receiver], rule["alert"]


def test_prometheus_sends_alerts_to_the_compose_alertmanager() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    compose = load_yaml(COMPOSE)["services"]
    targets = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert targets == ["alertmanager:9093"]
    assert "alertmanager" in compose
    assert "127.0.0.1:9093:9093" in compose["alertmanager"]["ports"]


# -- Grafana -------------------------------------------------------------------------------


def test_dashboard_layout_is_sound() -> None:
    board = dashboard()
    assert board["uid"] == "streamskew" and board["schemaVersion"] >= 36
    every = panels(board)
    ids = [p["id"] for p in every]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in every:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in every:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
    builtin = {"__rate_interval", "__interval", "__range"}
    used = set()
    for text in dashboard_queries(board) + [p["title"] for p in every]:
        used |= set(re.findall(r"\$\{?(\w+)\}?", text))
    assert used - builtin <= set(variables), used - builtin - set(variables)


def test_dashboard_shows_what_the_on_call_needs() -> None:
    board = dashboard()
    by_metric: dict[str, list[dict]] = {}
    for panel in panels(board):
        for target in panel.get("targets", []):
            for name in metric_names(target["expr"]):
                by_metric.setdefault(name, []).append(panel)
    per_feature = [p for p in by_metric["streamskew_score"] if p.get("repeat") == "feature"]
    assert per_feature and per_feature[0] in by_metric["streamskew_threshold"]
    assert by_metric["streamskew_skew_active"]
    assert any("by (check" in t["expr"] for p in by_metric["streamskew_events_total"]
               for t in p["targets"])
    for name in ("streamskew_records_total", "streamskew_bad_records_total"):
        assert any("by (topic" in t["expr"] for p in by_metric[name] for t in p["targets"])
    assert by_metric["streamskew_consumer_lag_records"]
    assert any(t["expr"].startswith("time() - ")
               for p in by_metric["streamskew_watermark_timestamp_seconds"]
               for t in p["targets"])


# -- docker-compose.yml and the image ------------------------------------------------------


def mounts(service: dict) -> dict[str, str]:
    """Container path -> repository path of a service's bind mounts (named volumes left out)."""
    found = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            found[target] = source
    return found


def test_compose_runs_prometheus_alertmanager_and_grafana_on_the_deploy_files() -> None:
    compose = load_yaml(COMPOSE)
    services = compose["services"]
    assert {"kafka", "init", "detector", "prometheus", "alertmanager", "grafana"} <= set(services)
    for name, service in services.items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin {image}"
        for target, source in mounts(service).items():
            assert (ROOT / source).exists(), f"{name} mounts {source}, which is missing"
            assert target.startswith("/")
        for volume in service.get("volumes", []):
            name_or_path = volume.split(":")[0]
            if not name_or_path.startswith(("./", "/")):
                assert name_or_path in compose["volumes"], f"{name}: volume {name_or_path}"

    # Prometheus: its config and the rules beside it, where rule_files looks for them.
    prometheus = services["prometheus"]
    prom_mounts = mounts(prometheus)
    config_path = next(a.split("=", 1)[1] for a in prometheus["command"]
                       if a.startswith("--config.file="))
    assert prom_mounts[config_path] == "./deploy/prometheus/prometheus.yml"
    config = load_yaml(PROMETHEUS_CONFIG)
    for pattern in config["rule_files"]:
        in_container = posixpath.join(posixpath.dirname(config_path), pattern)
        rules_dir = posixpath.dirname(in_container)
        assert prom_mounts[rules_dir] == "./deploy/prometheus/rules"
        assert list((PROMETHEUS_CONFIG.parent).glob(pattern)) == [RULES]

    # Prometheus scrapes the detector where the detector listens, on every interface.
    detector = services["detector"]
    command = detector["command"]
    port = command[command.index("--metrics-port") + 1]
    assert command[command.index("--metrics-host") + 1] == "0.0.0.0"
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["streamskew"]["static_configs"][0]["targets"] == [f"detector:{port}"]
    assert "up{job=\"streamskew\"}" in next(r["expr"] for r in rules()
                                            if r["alert"] == "StreamskewDown")

    # Alertmanager: its config.
    alertmanager = services["alertmanager"]
    am_config = next(a.split("=", 1)[1] for a in alertmanager["command"]
                     if a.startswith("--config.file="))
    assert mounts(alertmanager)[am_config] == "./deploy/alertmanager/alertmanager.yml"

    # Grafana: provisioning (datasource -> the prometheus service) and the dashboard.
    grafana = services["grafana"]
    graf_mounts = mounts(grafana)
    assert graf_mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    sources = load_yaml(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")
    assert [s["url"] for s in sources["datasources"]] == ["http://prometheus:9090"]
    assert "127.0.0.1:9090:9090" in prometheus["ports"]
    providers = load_yaml(DEPLOY / "grafana/provisioning/dashboards/streamskew.yml")
    dashboards_dir = providers["providers"][0]["options"]["path"]
    assert graf_mounts[dashboards_dir] == "./deploy/grafana/dashboards"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == posixpath.join(dashboards_dir, DASHBOARD.name)


def test_the_image_serves_metrics_on_every_interface() -> None:
    """The CLI listens on loopback unless told; in a container that is unreachable."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^\s*STREAMSKEW_METRICS_HOST=0\.0\.0\.0\s*$", dockerfile, re.M)
