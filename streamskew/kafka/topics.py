"""The topics streamskew writes, created when missing with configs that fit their use."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from kafka import KafkaAdminClient
from kafka.errors import TopicAlreadyExistsError

from ..config import KafkaConfig, LabelsConfig

__all__ = ["RetentionWatch", "TopicSpec", "ensure_topics", "internal_topics", "label_topics",
           "retention_ms", "source_topics", "topic_regex", "wanted_label_topics"]

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
        # Every model's partial panes meet in the evaluator of its panes partition, so N
        # replicas give one verdict; more partitions spread the models over evaluators.
        TopicSpec(kafka.panes_topic, kafka.panes_partitions, {"retention.ms": str(DAY_MS)}),
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


def label_topics(kafka: KafkaConfig, labels: LabelsConfig | None,
                 available: Iterable[str]) -> list[str]:
    """The ``[labels] topic`` / ``topic_pattern`` topics that exist (never one of this
    service's own topics)."""
    if labels is None:
        return []
    names = set(available)
    if labels.topic_pattern:
        pattern = re.compile(topic_regex(replace(kafka, topic_pattern=labels.topic_pattern)))
        return sorted(t for t in names if pattern.match(t))
    return [labels.topic] if labels.topic in names else []


def wanted_label_topics(kafka: KafkaConfig, labels: LabelsConfig | None,
                        available: Iterable[str], command: str) -> list[str]:
    """The labels topic(s) ``command`` (``run``, ``replay``) reads beside the requests: []
    without ``[labels]``; a KafkaProblem (one line) when ``[labels]`` names none that exists."""
    from .failures import KafkaProblem

    if labels is None:
        return []
    found = label_topics(kafka, labels, available)
    if not found:
        wanted = labels.topic_pattern or labels.topic
        if not wanted:
            raise KafkaProblem(f"{command}: [labels] names no labels topic: set [labels] "
                               "topic (or topic_pattern)")
        raise KafkaProblem(f"{command}: no labels topic to read: [labels] topic/topic_pattern "
                           f"= {wanted}; create the topic or fix the config")
    return found


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
    own = sorted({kafka.alerts_topic, kafka.dlq_topic, kafka.panes_topic, kafka.state_topic,
                  kafka.baselines_topic})
    excluded = "|".join(map(re.escape, own))
    return rf"(?!__)(?!(?:{excluded})\Z)(?:{kafka.topic_pattern})\Z"


DEFAULT_RETENTION_MS = 7 * DAY_MS  # Kafka's log.retention.hours default (168)


def retention_ms(admin: KafkaAdminClient, topics: Iterable[str]) -> dict[str, int | None]:
    """Each topic's time-based retention (None: kept for ever). A topic without a
    ``retention.ms`` of its own is taken to have Kafka's default, 7 days (kafka-python does
    not report a broker's defaults)."""
    from kafka.admin import ConfigResource, ConfigResourceType

    names = list(topics)
    if not names:
        return {}
    try:
        found = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)
                                        for name in names]).get("topic", {})
    except Exception:  # not allowed to describe configs: assume the default
        found = {}
    result: dict[str, int | None] = {}
    for name in names:
        value = (found.get(name) or {}).get("retention.ms", {}).get("value")
        ms = int(value) if value is not None else DEFAULT_RETENTION_MS
        result[name] = None if ms < 0 else ms
    return result


class RetentionWatch:
    """Says, once per topic, when records are older than the topic keeps records: the broker
    deletes such records at its next retention check (every 5 minutes by default), possibly
    before they are read, and a backfill then silently judges nothing."""

    def __init__(self, retention: dict[str, int | None], clock: Any = None) -> None:
        import time

        self.retention = retention
        self.clock = clock or time.time
        self.warned: dict[str, str] = {}  # topic -> the sentence

    def check(self, topic: str, oldest_timestamp_ms: int) -> str | None:
        keep = self.retention.get(topic)
        if keep is None or topic in self.warned:
            return None
        now_ms = int(self.clock() * 1000)
        if oldest_timestamp_ms >= now_ms - keep:
            return None
        age_days = (now_ms - oldest_timestamp_ms) / DAY_MS
        sentence = (f"topic {topic} holds records stamped {age_days:.0f} days ago, older than "
                    f"its retention.ms ({keep / DAY_MS:g} days): the broker deletes them at "
                    "its next retention check, possibly before they are read; for a backfill "
                    "create the topic with retention.ms=-1 (see the README, 'Replaying "
                    "history')")
        self.warned[topic] = sentence
        return sentence
