"""Config: the example files load, and every mistake names the file, line, key and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamskew.config import Config, ConfigError, parse_duration
from streamskew.demo import DEMO_CONFIG

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "streamskew.toml"
    path.write_text(text)
    return path


def test_example_config_loads_with_its_documented_values():
    config = Config.from_toml(ROOT / "configs" / "example.toml")
    assert config.window.size_ms == 15 * 60_000 and config.window.panes == 15
    assert config.detect.numeric_metric == "jsd" and config.detect.categorical_metric == "linf"
    assert config.features["amount"].metric == "psi"
    assert config.features["zip_code"].kind == "categorical"
    assert config.features["debug_flag"].ignore
    assert config.kafka.topics == ("prediction-requests",)
    assert config.baseline == str((ROOT / "configs" / "baseline.json").resolve())


def test_example_labels_section_loads_when_uncommented(tmp_path):
    text = (ROOT / "configs" / "example.toml").read_text()
    start = text.index("# [labels]")
    block = text[start:text.index("[kafka]", start)]
    keys = [line[2:] for line in block.splitlines() if line.startswith("# ") and
            not line.startswith("#  ") and ("=" in line or line.startswith("# [labels]"))]
    config = Config.from_toml(write(tmp_path, "\n".join(keys) + "\n"))
    labels = config.labels
    assert labels is not None and labels.topic == "prediction-labels"
    assert labels.max_delay_ms == 3_600_000 and labels.sample == 1.0
    assert labels.size == "1h" and labels.pane == "10m" and labels.metrics == ()


def test_demo_config_file_matches_what_the_demo_runs():
    config = Config.from_toml(ROOT / "configs" / "demo.toml")
    demo = Config.from_dict(DEMO_CONFIG)
    assert config.window == demo.window
    assert config.detect == demo.detect


@pytest.mark.parametrize("text", ["1h", "90s", "15m", "500ms", "1d", "1.5h"])
def test_durations(text):
    value = parse_duration(text)
    assert value > 0 and isinstance(value, int)


@pytest.mark.parametrize(("text", "fragment"), [
    ('[window]\nsize = "ten minutes"\n', "streamskew.toml:2: [window] size = 'ten minutes'"),
    ('[window]\nsize = "10m"\npane = "3m"\n', "[window] size = '10m': must be a whole multiple"),
    ('[window]\nsize = 10\n', "a bare number is ambiguous; add a unit"),
    ('[detect]\nnumeric_metric = "kl"\n', "allowed: jsd, psi, ks, wasserstein, linf, chi2"),
    ('[detect]\nmin_cont = 10\n', "streamskew.toml:2: [detect] min_cont: unknown key"),
    ('[detect]\nmin_count = "ten"\n', "must be a whole number"),
    ('[detect]\nalpha = 0.9\n', "must be in (0, 0.5)"),
    ('[features.amount]\nkind = "float"\n', "[features.amount] kind = 'float': allowed"),
    ('[features.country]\nkind = "categorical"\nmetric = "ks"\n', "allowed: linf, jsd"),
    ('[kafka]\nbootstrap_server = "x:9092"\n', "not a streamskew or kafka-python setting"),
    ('[message]\nexclude = "request_id"\n', "must be a list of strings"),
    ('colour = "blue"\n', "colour: unknown setting"),
    ('[window\nsize = "1m"\n', "not valid TOML"),
])
def test_mistakes_name_file_key_and_fix(tmp_path, text, fragment):
    with pytest.raises(ConfigError) as error:
        Config.from_toml(write(tmp_path, text))
    message = str(error.value)
    assert str(tmp_path / "streamskew.toml") in message
    assert fragment in message


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the config file"):
        Config.from_toml(tmp_path / "nope.toml")


def test_kafka_settings_pass_through_and_secrets_come_from_the_environment(tmp_path,
                                                                          monkeypatch):
    monkeypatch.setenv("KAFKA_PASSWORD", "s3cret")
    config = Config.from_toml(write(tmp_path, (
        '[kafka]\ntopics = ["requests"]\nsecurity_protocol = "SASL_SSL"\n'
        'sasl_mechanism = "PLAIN"\nsasl_plain_password = "${KAFKA_PASSWORD}"\n')))
    assert config.kafka.client["security_protocol"] == "SASL_SSL"
    assert config.kafka.client["sasl_plain_password"] == "s3cret"
    assert "s3cret" not in repr(config.kafka) and "s3cret" not in repr(config)


def test_unset_environment_variable_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    with pytest.raises(ConfigError, match="NOT_SET_ANYWHERE is not set"):
        Config.from_toml(write(tmp_path, '[kafka]\nsasl_plain_password = "${NOT_SET_ANYWHERE}"\n'))


def test_config_is_frozen():
    config = Config()
    with pytest.raises(AttributeError):
        config.window = None  # type: ignore[misc]


def test_docker_config_matches_the_demo_and_points_at_the_compose_broker():
    config = Config.from_toml(ROOT / "configs" / "docker.toml")
    demo = Config.from_dict(DEMO_CONFIG)
    assert config.window == demo.window and config.detect == demo.detect
    assert config.kafka.bootstrap_servers == "kafka:9092"
    assert config.kafka.topics == ("prediction-requests",)
    assert config.baseline == "/data/baseline.json"
