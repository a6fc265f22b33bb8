"""kafka-python clients built from ``[kafka]`` settings, with Kafka's own setting names.

Everything in ``[kafka]`` that is not a streamskew key is passed through unchanged (security,
SASL, SSL, timeouts...), so what users know about kafka-python applies as is. We never pin
``api_version``: the client negotiates it with the broker.
"""

from __future__ import annotations

from typing import Any

from ..config import KafkaConfig

__all__ = ["admin_settings", "consumer_settings", "producer_settings"]


def _base(kafka: KafkaConfig, bootstrap_servers: str | None) -> dict[str, Any]:
    servers = bootstrap_servers or kafka.bootstrap_servers
    return {"bootstrap_servers": list(servers) if isinstance(servers, tuple) else servers}


def _only(settings: dict[str, Any], client: type) -> dict[str, Any]:
    known = getattr(client, "DEFAULT_CONFIG", None)
    return {k: v for k, v in settings.items() if known is None or k in known}


def consumer_settings(kafka: KafkaConfig, bootstrap_servers: str | None = None,
                      **overrides: Any) -> dict[str, Any]:
    """Settings for a ``KafkaConsumer``: raw bytes, manual commits, committed reads."""
    from kafka import KafkaConsumer

    # A 10 s session (Kafka's default is 45 s) moves a dead replica's partitions sooner.
    settings = {**_base(kafka, bootstrap_servers), "enable_auto_commit": False,
                "isolation_level": "read_committed", "auto_offset_reset": "earliest",
                "session_timeout_ms": 10_000, "heartbeat_interval_ms": 3_000,
                **_only(dict(kafka.client), KafkaConsumer)}
    settings.update(overrides)
    return settings


def producer_settings(kafka: KafkaConfig, bootstrap_servers: str | None = None,
                      **overrides: Any) -> dict[str, Any]:
    """Settings for a ``KafkaProducer``: acknowledged by all in-sync replicas."""
    from kafka import KafkaProducer

    settings = {**_base(kafka, bootstrap_servers), "acks": "all",
                **_only(dict(kafka.client), KafkaProducer)}
    settings.update(overrides)
    return settings


def admin_settings(kafka: KafkaConfig, bootstrap_servers: str | None = None) -> dict[str, Any]:
    from kafka import KafkaAdminClient

    return {**_base(kafka, bootstrap_servers), **_only(dict(kafka.client), KafkaAdminClient)}
