"""`replay` and `run --until-end` on a real broker say when they judged nothing (exit 3)."""

from __future__ import annotations

from click.testing import CliRunner
from kafka import KafkaProducer

from streamskew.cli import main
from streamskew.timeparse import format_time
from streamskew.verdict import EXIT_BLIND

from .kafka_helpers import (
    START,
    create_topic,
    produce,
    service_config,
    skewed_stream,
    training_baseline,
    unique,
    write_config,
)

MINUTE = 60_000


def error_lines(result):
    return [line for line in result.stderr.splitlines() if line.startswith("Error: ")]


def _produce_with_broker_time(bootstrap, topic, messages):
    """As many producers do: record timestamps are the send time, not the event time."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    for i, message in enumerate(messages):
        producer.send(topic, value=message, partition=i % 2)
    producer.flush()
    producer.close()


def _config_file(tmp_path, bootstrap, topic):
    config = service_config(bootstrap, topic, unique("verdict"))
    return write_config(tmp_path, bootstrap, topic, config, training_baseline())


def test_replay_of_a_range_without_records_exits_3(kafka_bootstrap, tmp_path):
    topic = unique("verdict-empty-range")
    create_topic(kafka_bootstrap, topic, partitions=2)
    produce(kafka_bootstrap, topic, skewed_stream(minutes=4), partitions=2)
    toml = _config_file(tmp_path, kafka_bootstrap, topic)
    later = START + 24 * 60 * MINUTE
    result = CliRunner().invoke(main, ["replay", "--config", str(toml), "--from", str(later)])
    assert result.exit_code == EXIT_BLIND, result.output
    assert error_lines(result) == [
        f"Error: judged nothing: no record in {format_time(later)}..the end on the source "
        f"topics: check --from/--to and [kafka] topics"]


def test_replay_of_records_stamped_at_send_time_says_why(kafka_bootstrap, tmp_path):
    topic = unique("verdict-send-time")
    create_topic(kafka_bootstrap, topic, partitions=2)
    messages = skewed_stream(minutes=16)
    _produce_with_broker_time(kafka_bootstrap, topic, messages)
    toml = _config_file(tmp_path, kafka_bootstrap, topic)
    since = START + 10 * MINUTE  # 10 of the 16 minutes of event time lie before it
    result = CliRunner().invoke(main, ["replay", "--config", str(toml), "--from", str(since)])
    assert result.exit_code == EXIT_BLIND, result.output
    [line] = error_lines(result)
    outside = sum(1 for m in messages if b'"timestamp":' in m) * 10 // 16
    inside = len(messages) - outside
    assert line.startswith(f"Error: judged little: {inside:,} of {len(messages):,} records "
                           f"read fall in {format_time(since)}..the end by their event time; "
                           f"their event times span {format_time(START)}..")
    assert ("the records' Kafka timestamps (used to find the range) are not their event "
            "times") in line
    assert "Traceback" not in result.output


def test_run_until_end_over_garbage_exits_3(kafka_bootstrap, tmp_path):
    topic = unique("verdict-garbage")
    create_topic(kafka_bootstrap, topic, partitions=2)
    produce(kafka_bootstrap, topic, [b"amount,country", *(b"12.5,DE" for _ in range(400))],
            partitions=2)
    toml = _config_file(tmp_path, kafka_bootstrap, topic)
    result = CliRunner().invoke(main, ["run", "--config", str(toml), "--until-end",
                                       "--checkpoint-interval", "200ms"])
    assert result.exit_code == EXIT_BLIND, result.output
    assert error_lines(result) == [
        "Error: judged nothing: 401 of 401 records were rejected (invalid_json=401): the lines "
        "are not JSON: is the input JSON lines of prediction-request messages? (CSV or "
        "Parquet is training data, not messages)"]
