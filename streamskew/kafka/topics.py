"""The topics streamskew writes, created when missing with configs that fit their use."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from kafka import KafkaAdminClient
from kafka.errors import TopicAlreadyExistsError

from ..config import KafkaConfig

__all__ = ["TopicSpec", "ensure_topics", "internal_topics", "source_topics", "topic_regex"]

ALERTS_BYTES = 1024**3  # per partition
DAY_MS = 86_400_000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)


def internal_topics(kafka: KafkaConfig) -> list[TopicSpec]:
    """Alerts and dead letters are for people; panes are a short-lived hand-over between
    the two stages; state is compacted (latest checkpoint per key).

    Alerts carry their window's end as record timestamp (``alerts --since`` reads event
    time), and time-based retention judges records by that timestamp: alerts that
    ``replay --publish`` made for last month's data would be deleted at the broker's next
    retention check. So alerts are kept by size instead (1 GiB per partition, years of
    alerts); dead letters, stamped when written, are kept 7 days."""
    return [
        TopicSpec(kafka.alerts_topic, 3, {"retention.ms": "-1",
                                          "retention.bytes": str(ALERTS_BYTES)}),
        TopicSpec(kafka.dlq_topic, 3, {"retention.ms": str(7 * DAY_MS)}),
        # One partition: every model's partial panes meet in one evaluator, so N replicas
        # give one verdict. (More partitions spread models over evaluators.)
        TopicSpec(kafka.panes_topic, 1, {"retention.ms": str(DAY_MS)}),
        TopicSpec(kafka.state_topic, 1, {"cleanup.policy": "compact",
                                         "min.compaction.lag.ms": "60000"}),
    ]


def ensure_topics(admin: KafkaAdminClient, specs: Iterable[TopicSpec]) -> list[str]:
    """Create the topics that do not exist yet; returns the names created."""
    existing = set(admin.list_topics())
    missing = [s for s in specs if s.name not in existing]
    if not missing:
        return []
    created = []
    for spec in missing:
        try:
            admin.create_topics({spec.name: {"num_partitions": spec.partitions,
                                             "configs": spec.configs}},
                                wait_for_metadata=True)
            created.append(spec.name)
        except TopicAlreadyExistsError:  # another replica created it first
            pass
    return created


def source_topics(kafka: KafkaConfig, available: Iterable[str]) -> list[str]:
    """The configured source topics that exist (names, or those matching the pattern)."""
    names = set(available)
    if kafka.topic_pattern:
        pattern = re.compile(topic_regex(kafka))
        return sorted(t for t in names if pattern.match(t))
    return [t for t in kafka.topics if t in names]


def topic_regex(kafka: KafkaConfig) -> str:
    """``[kafka] topic_pattern`` as the regex a source topic's name matches (``re.match``):
    the whole name must match, and never one of this service's own topics or a
    broker-internal ``__`` topic, so that a broad pattern cannot make the service read its
    own alerts.

    >>> from streamskew.config import KafkaConfig
    >>> pattern = re.compile(topic_regex(KafkaConfig(topic_pattern="req.*")))
    >>> [bool(pattern.match(t)) for t in ("requests", "requests.alerts", "xrequests")]
    [True, True, False]
    >>> own = KafkaConfig(topic_pattern=".*", alerts_topic="a")
    >>> [bool(re.match(topic_regex(own), t)) for t in ("a", "ab", "__x")]
    [False, True, False]
    """
    own = sorted({kafka.alerts_topic, kafka.dlq_topic, kafka.panes_topic, kafka.state_topic})
    excluded = "|".join(map(re.escape, own))
    return rf"(?!__)(?!(?:{excluded})\Z)(?:{kafka.topic_pattern})\Z"
