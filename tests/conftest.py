"""Shared pytest fixtures of the streamskew test suite."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# --------------------------------------------------------------------------------------------
# Kafka broker fixture (owner: streamskew.kafka.local).
#
# `kafka_bootstrap` is a session-wide "host:port" of a real Kafka broker:
#   * STREAMSKEW_BOOTSTRAP set      -> that broker is used as is (nothing is started/stopped);
#   * otherwise                     -> a LocalKafka(port=0) in a temporary directory is started
#                                      once per session (first run resolves the jars with Maven)
#                                      and stopped at the end.
# If no broker can be had (no Java 17 / Maven, resolution or startup failure), tests that use
# the fixture are skipped with the reason -- or fail when STREAMSKEW_REQUIRE_KAFKA=1 (for CI).
# --------------------------------------------------------------------------------------------


def _kafka_unavailable(reason: str) -> None:
    """Skip (default) or fail (STREAMSKEW_REQUIRE_KAFKA=1) because there is no broker."""
    if os.environ.get("STREAMSKEW_REQUIRE_KAFKA") == "1":
        pytest.fail(f"Kafka broker required (STREAMSKEW_REQUIRE_KAFKA=1) but: {reason}")
    pytest.skip(f"no Kafka broker: {reason}")


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address ("127.0.0.1:PORT") of a real Kafka broker for the whole session."""
    external = os.environ.get("STREAMSKEW_BOOTSTRAP")
    if external:
        yield external
        return

    from streamskew.kafka.local import LocalKafka, LocalKafkaError

    broker = LocalKafka(port=0, directory=tmp_path_factory.mktemp("local-kafka"))
    try:
        bootstrap = broker.start(timeout=180)
    except LocalKafkaError as exc:
        _kafka_unavailable(str(exc))
        return  # not reached: skip/fail raise
    try:
        yield bootstrap
    finally:
        broker.stop(timeout=60)


# --------------------------------------------------------------------------------------------
# What the Kafka service tests share, per module: the training baseline, a skewed stream with
# a bad record every 997, and a 6-partition topic holding it (see tests/kafka_helpers.py).
# A module's own fixture of the same name wins (test_detection.py has its own `baseline`).
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def baseline():
    from .kafka_helpers import training_baseline

    return training_baseline()


@pytest.fixture(scope="module")
def stream():
    from .kafka_helpers import skewed_stream

    return skewed_stream(bad_every=997)


@pytest.fixture(scope="module")
def topic(kafka_bootstrap, stream):
    from .kafka_helpers import create_topic, produce, unique

    name = unique("requests")
    create_topic(kafka_bootstrap, name)
    produce(kafka_bootstrap, name, stream)
    return name


# --------------------------------------------------------------------------------------------
# The demo's output (baseline, requests, events, report.html), made once per session for the
# report tests (tests/test_report.py, tests/test_report_browser.py).
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def demo_output(tmp_path_factory: pytest.TempPathFactory):
    """The directory ``streamskew demo`` wrote, and the events it returned."""
    pytest.importorskip("jinja2")
    from streamskew.demo import run_demo

    directory = tmp_path_factory.mktemp("demo")
    events = run_demo(directory, report=True)
    return directory, events
