"""Skew events as lines for people: ``streamskew detect --format table`` and the demo.

>>> from streamskew.detector.events import SkewEvent
>>> event = SkewEvent("skew_detected", "m", "carat", "numeric", "distribution", "jsd", 0.208,
...                   0.1, "critical", 1764324360000, 1764324960000, 3000, "d988", 37758)
>>> event_line(event, when_label(event))
'  2025-11-28T10:16:00Z  skew_detected  carat       distribution       jsd               value=0.208    threshold=0.1 (critical)'
"""  # noqa: E501

from __future__ import annotations

import click

from .detector import SkewEvent
from .timeparse import format_time

__all__ = ["event_line", "when_label"]


def when_label(event: SkewEvent) -> str:
    """The window's end in UTC, or ``whole input`` for a run without event times."""
    return "whole input" if event.window_end is None else format_time(event.window_end)


def event_line(event: SkewEvent, when: str, color: bool = False) -> str:
    """One aligned line: when, type, feature, check, metric, value vs threshold (severity)."""
    label = f"{event.type:<14}"
    if color:
        label = click.style(label, fg="red" if event.type == "skew_detected" else "green",
                            bold=True)
    return (f"  {when}  {label} {event.feature:<11} {event.check:<18} "
            f"{event.metric:<17} value={event.value:<8.3g} threshold={event.threshold:.3g} "
            f"({event.severity})")
