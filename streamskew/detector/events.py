"""Skew events: the records people and systems subscribe to (``streamskew.event/v1``)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = ["EVENT_SCHEMA", "SkewEvent", "event_id"]

EVENT_SCHEMA = "streamskew.event/v1"


def event_id(model: str, feature: str, check: str, metric: str, window_end: int | None,
             type_: str, versions: tuple[str | None, ...] | None = None) -> str:
    """A pure function of the event's identity: a replay or a retry gives the same id.

    ``versions`` (with ``[message] model_version``: the event's version, and for
    ``version_shift`` the version it was compared with) is part of the identity only when
    given, so ids without versions are the ones they always were.

    >>> event_id("fraud", "amount", "distribution", "jsd", 1764324000000, "skew_detected")[:12]
    'a2d1ae326cd4'
    >>> event_id("fraud", "amount", "distribution", "jsd", 1764324000000, "skew_detected",
    ...          ("3",))[:12] != 'a2d1ae326cd4'
    True
    """
    text = f"{model}\x1f{feature}\x1f{check}\x1f{metric}\x1f{window_end}\x1f{type_}"
    if versions is not None:
        text += "".join(f"\x1fv={'' if v is None else v}" for v in versions)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class SkewEvent:
    """One ``skew_detected`` or ``skew_resolved`` transition of one check of one feature."""

    type: str
    model: str
    feature: str
    kind: str
    check: str
    metric: str
    value: float
    threshold: float
    severity: str
    window_start: int | None
    window_end: int | None
    window_count: int
    baseline_id: str
    baseline_count: int
    evidence: Mapping[str, Any] = field(default_factory=dict)
    # With [message] model_version: the (model, version) judged, and for version_shift the
    # version it was compared with. versioned=False: the event has no version fields.
    model_version: str | None = None
    compared_version: str | None = None
    versioned: bool = False

    @property
    def event_id(self) -> str:
        versions = None
        if self.versioned:
            versions = (self.model_version,) if self.compared_version is None \
                else (self.model_version, self.compared_version)
        return event_id(self.model, self.feature, self.check, self.metric, self.window_end,
                        self.type, versions)

    @property
    def key(self) -> str:
        """The Kafka record key: ``model/feature``."""
        return f"{self.model}/{self.feature}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": EVENT_SCHEMA, "event_id": self.event_id, "type": self.type,
            "model": self.model,
            **({"model_version": self.model_version} if self.versioned else {}),
            **({"compared_version": self.compared_version}
               if self.compared_version is not None else {}),
            "feature": self.feature, "kind": self.kind, "check": self.check,
            "metric": self.metric, "value": _round(self.value),
            "threshold": _round(self.threshold), "severity": self.severity,
            "window": {"start": self.window_start, "end": self.window_end,
                       "count": self.window_count},
            "baseline": {"id": self.baseline_id, "count": self.baseline_count},
            "evidence": self.evidence,
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_SERIALIZE_NUMPY)


def _round(value: float) -> float:
    """Values are computed from exact counts; 12 significant digits hide float-sum noise."""
    return float(f"{value:.12g}")
