"""The files of deploy/ as the tests read them: the Grafana dashboard, the Prometheus rules,
and the metric names their PromQL uses."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "streamskew.json"
RULES = DEPLOY / "prometheus" / "rules" / "streamskew.rules.yml"
RULE_TESTS = DEPLOY / "prometheus" / "tests" / "streamskew.rules.test.yml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
ALERTMANAGER_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"
COMPOSE = ROOT / "docker-compose.yml"

# Series Prometheus makes itself for every target: never on a service's page.
MADE_BY_PROMETHEUS = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})

_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "by", "without", "on",
                       "ignoring", "group_left", "group_right", "inf", "nan", "atan2"})
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_CLAUSE = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' collapsed children included."""
    found = []
    for panel in board["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def dashboard_queries(board: dict[str, Any]) -> list[str]:
    """The PromQL of every panel target and annotation (template variables still in)."""
    exprs = [t["expr"] for p in panels(board) for t in p.get("targets", [])]
    exprs += [a["expr"] for a in board["annotations"]["list"] if "expr" in a]
    return exprs


def variable_queries(board: dict[str, Any]) -> list[str]:
    """The series selectors of the query variables' ``label_values(selector, label)``."""
    selectors = []
    for variable in board["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]["query"] if isinstance(variable["query"], dict) \
            else variable["query"]
        match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query)
        assert match, f"variable {variable['name']}: not label_values(selector, label)"
        selectors.append(match.group(1))
    return selectors


def rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(RULES)["groups"] for rule in group["rules"]]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: what is left once strings, label
    matchers, ranges, grouping clauses, function names and keywords are taken out.

    >>> sorted(metric_names('sum by (topic) (rate(streamskew_records_total{job=~"$job"}[5m]))'
    ...                     ' / on (topic) up > 0.01 and time() - process_start_time_seconds'))
    ['process_start_time_seconds', 'streamskew_records_total', 'up']
    """
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = _CLAUSE.sub("", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        rest = text[match.end():].lstrip()
        if rest.startswith("(") or match.group() in _KEYWORDS:
            continue  # a function, or a keyword
        if re.fullmatch(r"\d+[smhdwy]", match.group()):
            continue
        names.add(match.group())
    return names


def as_promql(expr: str) -> str:
    """A dashboard query with its Grafana variables filled in, for promtool to parse."""
    expr = re.sub(r"\$\{?__(?:rate_)?interval\}?", "5m", expr)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)
