"""TOML configuration -> frozen, validated settings.

Every mistake is reported as a :class:`ConfigError` that names the file, the key (and its
line when it can be found) and what is allowed, so the user knows the fix at once.

>>> cfg = Config.from_dict({"window": {"size": "10m", "pane": "1m"}})
>>> cfg.window.size_ms, cfg.window.pane_ms, cfg.window.panes
(600000, 60000, 10)
>>> Config.from_dict({"window": {"size": "ten minutes"}})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
streamskew.config.ConfigError: <dict>: [window] size = 'ten minutes': not a duration; use ...
"""

from __future__ import annotations

import copyreg
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .errors import StreamskewError

__all__ = [
    "CATEGORICAL_METRICS",
    "NUMERIC_METRICS",
    "Config",
    "ConfigError",
    "DetectConfig",
    "FeatureConfig",
    "KafkaConfig",
    "LabelsConfig",
    "MessageConfig",
    "ModelConfig",
    "ModelsConfig",
    "WindowConfig",
    "check_feature_overrides",
    "parse_duration",
]

# The read-only mappings inside a Config pickle as read-only copies, so a Config can be
# handed to worker processes (`run --workers`); mappingproxy has no pickle support itself.
def _read_only(items: dict[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(items)


copyreg.pickle(MappingProxyType, lambda mapping: (_read_only, (dict(mapping),)))

NUMERIC_METRICS = ("jsd", "psi", "ks", "wasserstein", "linf", "chi2")
CATEGORICAL_METRICS = ("linf", "jsd", "psi", "chi2")
KINDS = ("numeric", "categorical")

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|min|m|h|d)\s*$")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(StreamskewError, ValueError):
    """A configuration value is wrong; the message names where and how to fix it."""


def parse_duration(text: str | int | float) -> int:
    """Parse a duration such as ``"90s"``, ``"15m"``, ``"1h"`` into milliseconds.

    >>> parse_duration("90s"), parse_duration("1.5h"), parse_duration("250ms")
    (90000, 5400000, 250)
    """
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise ValueError(f"expected a duration string, got {type(text).__name__}")
    if isinstance(text, int | float):
        raise ValueError("a bare number is ambiguous; add a unit: 500ms, 90s, 15m, 1h, 1d")
    match = _DURATION.match(text)
    if not match:
        raise ValueError("not a duration")
    value = float(match.group(1)) * _UNITS_MS[match.group(2)]
    if value != int(value):
        raise ValueError("durations resolve to whole milliseconds")
    return int(value)


@dataclass(frozen=True)
class MessageConfig:
    """Where the values live in a prediction-request message (dot paths).

    ``features = ""`` means the features are the top-level keys of the message, minus the
    other configured paths and ``exclude``.
    """

    features: str = "features"
    timestamp: str | None = "timestamp"
    model: str | None = "model"
    model_version: str | None = None  # set: state, windows and events per (model, version)
    prediction: str | None = "prediction"
    exclude: tuple[str, ...] = ()
    max_bytes: int = 1_048_576


@dataclass(frozen=True)
class WindowConfig:
    """Event-time panes and the sliding window made of the last ``size / pane`` panes.

    Each source's *stream time* is the ``watermark_quorum``-th latest event time among its
    last ``watermark_memory`` records, so fewer than ``watermark_quorum`` records with a wrong
    clock in any ``watermark_memory`` cannot move it; the watermark is the stream time minus
    ``allowed_lateness``. A record more than ``max_ahead`` ahead of the stream time is held
    until the stream reaches it (the source really moved on) or ``watermark_memory`` more
    records have come (then it is dead-lettered as ``ahead_of_watermark``).
    """

    size: str = "15m"
    pane: str = "1m"
    allowed_lateness: str = "30s"
    max_ahead: str = "15m"
    watermark_quorum: int = 10
    watermark_memory: int = 100

    @property
    def size_ms(self) -> int:
        return parse_duration(self.size)

    @property
    def pane_ms(self) -> int:
        return parse_duration(self.pane)

    @property
    def allowed_lateness_ms(self) -> int:
        return parse_duration(self.allowed_lateness)

    @property
    def max_ahead_ms(self) -> int:
        return parse_duration(self.max_ahead)

    @property
    def panes(self) -> int:
        return self.size_ms // self.pane_ms


@dataclass(frozen=True)
class DetectConfig:
    """How a window is judged. Thresholds are floors: the sampling-noise floor may raise them.

    ``alpha`` is the false-alarm budget of one feature per judged window: all its checks at
    every scale (and its persistent check) together raise on a window drawn from the
    baseline with probability at most ``alpha``; each of those tests gets an equal share
    (see :mod:`streamskew.detector.checks`).

    >>> DetectConfig().scale_panes(15), DetectConfig(scales="none").scale_panes(15)
    ((1, 2, 4), ())
    >>> DetectConfig(scales="1, 3").scale_panes(6), DetectConfig(scales="1,8").scale_panes(6)
    ((1, 3), (1,))
    """

    min_count: int = 200
    numeric_metric: str = "jsd"
    numeric_threshold: float = 0.1
    categorical_metric: str = "linf"
    categorical_threshold: float = 0.1
    missing_rate_threshold: float = 0.05
    out_of_range_threshold: float = 0.02
    unseen_threshold: float = 0.02
    type_change_threshold: float = 0.01
    new_feature_threshold: float = 0.01
    alpha: float = 1e-5
    raise_after: int = 1
    resolve_after: int = 2
    resolve_ratio: float = 0.8
    # Finer scales: besides the whole window, the newest panes judged on their own.
    scales: str = "auto"
    # Categorical surges: a category's share up or down by surge_factor (and by at least
    # surge_min_change in absolute share), beyond sampling noise.
    surge: bool = True
    surge_factor: float = 3.0
    surge_min_change: float = 0.01
    # Multivariate: PCA reconstruction error of the numeric features, as one more feature.
    joint: bool = True
    joint_variance: float = 0.9
    # Persistent shifts: the last persistent_windows windows summed, against a threshold of
    # persistent_ratio * the feature's threshold (and its own noise floor); a warning.
    persistent: bool = True
    persistent_windows: int = 8
    persistent_ratio: float = 0.5

    def scale_panes(self, window_panes: int) -> tuple[int, ...]:
        """The finer scales (numbers of newest panes) for a window of ``window_panes``.

        ``"auto"``: 1, 2, 4, ... panes up to half the window; ``"none"``: the whole window
        only; else a comma-separated list of pane counts (those not below the window size
        are dropped: the whole window is always judged)."""
        text = self.scales.strip().lower()
        if text == "none":
            return ()
        if text == "auto":
            found, k = [], 1
            while 2 * k <= window_panes:
                found.append(k)
                k *= 2
            return tuple(found)
        panes = sorted({int(part) for part in text.split(",") if part.strip()})
        return tuple(k for k in panes if k < window_panes)


@dataclass(frozen=True)
class FeatureConfig:
    """Per-feature overrides."""

    kind: str | None = None
    metric: str | None = None
    threshold: float | None = None
    ignore: bool = False


@dataclass(frozen=True)
class BaselineBuildConfig:
    """How ``streamskew baseline build`` summarizes training data."""

    bins: int = 100
    max_categories: int = 200
    kll_k: int = 400
    chunk_rows: int = 200_000


PERFORMANCE_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "mae",
                       "rmse", "bias")
TASKS = ("classification", "regression")


@dataclass(frozen=True)
class LabelsConfig:
    """Delayed labels joined to the requests they belong to (performance skew).

    Requests carry an id at ``request_id``; label records carry it at ``label_request_id``,
    the label at ``label`` and the label's own event time at ``label_time``. A label joins
    its request when it comes within ``max_delay`` of the request's event time. ``sample``
    keeps that share of requests for the join, chosen by a hash of the request id, so
    requests and labels agree on which are kept. A window of fewer than ``min_labels``
    labels is not judged. A pane is final when the label watermark has passed its end plus
    ``max_delay``, or earlier once ``final_when_labelled`` (a share, 0 = off) of its sampled
    requests have their label.

    >>> LabelsConfig(max_delay="2h").max_delay_ms
    7200000
    """

    topic: str | None = None
    topic_pattern: str | None = None
    request_id: str = "request_id"
    prediction: str | None = None  # None: [message] prediction
    label_request_id: str = "request_id"
    label: str = "label"
    label_time: str | None = "timestamp"
    max_delay: str = "1h"
    sample: float = 1.0
    min_labels: int = 100
    final_when_labelled: float = 0.0
    max_pending: int = 1_000_000
    task: str | None = None  # inferred from the validation labels when not set
    positive: str | None = None
    threshold: float = 0.5
    metrics: tuple[str, ...] = ()  # () = every metric of the task
    max_drop: float = 0.02
    max_increase: float = 0.1
    size: str | None = None  # performance windows; None: [window] size and pane
    pane: str | None = None

    @property
    def max_delay_ms(self) -> int:
        return parse_duration(self.max_delay)


# kafka-python settings we pass straight through, with Kafka's own names.
_KAFKA_OWN_KEYS = ("bootstrap_servers", "topics", "topic_pattern", "group_id", "alerts_topic",
                   "dlq_topic", "state_topic", "panes_topic", "baselines_topic",
                   "panes_partitions")


@dataclass(frozen=True)
class KafkaConfig:
    """Kafka adapter settings; ``client`` holds kafka-python settings passed through as is.

    The topics streamskew writes are named after the deployment's ``group_id`` unless set:
    ``<group_id>.alerts``, ``.dlq``, ``.state``, ``.panes`` and ``.baselines`` (the baseline
    registry). Two deployments on one cluster (two group ids) therefore never share state;
    set ``baselines_topic`` to the same name in both to share a registry.

    >>> KafkaConfig(group_id="fraud-prod").panes_topic
    'fraud-prod.panes'
    """

    bootstrap_servers: str | tuple[str, ...] = "localhost:9092"
    topics: tuple[str, ...] = ()
    topic_pattern: str | None = None
    group_id: str = "streamskew"
    alerts_topic: str = ""  # "" = <group_id>.alerts
    dlq_topic: str = ""  # "" = <group_id>.dlq
    state_topic: str = ""  # "" = <group_id>.state
    panes_topic: str = ""  # "" = <group_id>.panes
    baselines_topic: str = ""  # "" = <group_id>.baselines
    # Partitions of the panes topic when streamskew creates it: models are spread over them,
    # one evaluator per partition (an existing topic keeps its count).
    panes_partitions: int = 1
    client: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        for name in ("alerts", "dlq", "state", "panes", "baselines"):
            if not getattr(self, f"{name}_topic"):
                object.__setattr__(self, f"{name}_topic", f"{self.group_id}.{name}")

    def __repr__(self) -> str:  # secrets must never reach a log line
        safe = {k: ("***" if _is_secret(k) else v) for k, v in self.client.items()}
        return (f"KafkaConfig(bootstrap_servers={self.bootstrap_servers!r}, "
                f"topics={self.topics!r}, group_id={self.group_id!r}, client={safe!r})")


def _is_secret(key: str) -> bool:
    return any(word in key for word in ("password", "secret", "token", "key"))


FALLBACKS = ("none", "latest")


@dataclass(frozen=True)
class ModelConfig:
    """One ``[models.<name>]`` section: the model's baseline(s) and its own settings.

    ``baseline`` judges every version of the model that has no baseline of its own in
    ``versions`` (version -> file). ``fallback`` (``"latest"`` or ``"none"``; None: the
    ``[models]`` one) says what a version with neither gets: the model's latest baseline
    (the last in ``versions``), or nothing (its records are dead-lettered
    ``unknown_version``). ``detect`` and ``features`` are the global ones with this
    model's overrides applied.
    """

    name: str
    baseline: str | None = None
    versions: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    fallback: str | None = None
    detect: DetectConfig = field(default_factory=DetectConfig)
    features: Mapping[str, FeatureConfig] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class ModelsConfig:
    """``[models]``: which models are judged, against what, and how many unknown names.

    Without ``[models.<name>]`` sections every model is judged against the one baseline
    (``baseline`` / ``--baseline``), but only the first ``max_models`` distinct names get
    state: later ones are dead-lettered ``unknown_model``. With sections, the named models
    are judged against their own baselines and other names are dead-lettered (or judged
    against ``--baseline``, up to ``max_models`` of them, when one is given). A model judged
    against one baseline for all its versions keeps state for at most ``max_versions``
    versions; later ones are dead-lettered ``unknown_version``.
    """

    fallback: str = "none"
    max_models: int = 100
    max_versions: int = 10
    version_shift: bool = True  # two versions of a model in one window: compare them
    entries: Mapping[str, ModelConfig] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Config:
    """All settings of one streamskew deployment (see ``configs/example.toml``)."""

    baseline: str | None = None
    message: MessageConfig = field(default_factory=MessageConfig)
    window: WindowConfig = field(default_factory=WindowConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    build: BaselineBuildConfig = field(default_factory=BaselineBuildConfig)
    features: Mapping[str, FeatureConfig] = field(default_factory=lambda: MappingProxyType({}))
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    source: str = "<defaults>"
    labels: LabelsConfig | None = None  # [labels]: performance skew (None: not configured)
    models: ModelsConfig = field(default_factory=ModelsConfig)

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> Config:
        """Read and validate a TOML file; relative paths inside are relative to the file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from None
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        config = _Reader(str(path), text).read(raw)
        if config.baseline and not Path(config.baseline).is_absolute():
            resolved = str((path.parent / config.baseline).resolve())
            config = _replace(config, baseline=resolved)
        if config.models.entries:
            config = _replace(config, models=_replace(config.models, entries=MappingProxyType(
                {name: _resolve_paths(entry, path.parent)
                 for name, entry in config.models.entries.items()})))
        return config

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], source: str = "<dict>") -> Config:
        """Validate settings given as a dict shaped like the TOML file."""
        return _Reader(source, None).read(dict(raw))

    def feature(self, name: str) -> FeatureConfig:
        """The overrides for ``name`` (defaults when none are configured)."""
        return self.features.get(name, _NO_OVERRIDES)

    def for_model(self, model: str) -> Config:
        """The settings that judge ``model``: its ``[models.<name>]`` detect and feature
        overrides applied (this config itself when it has none).

        >>> cfg = Config.from_dict({"models": {"fraud": {"baseline": "f.json",
        ...                         "detect": {"numeric_threshold": 0.2}}}})
        >>> [cfg.for_model(m).detect.numeric_threshold for m in ("fraud", "spam")]
        [0.2, 0.1]
        """
        entry = self.models.entries.get(model)
        if entry is None or (entry.detect == self.detect and entry.features == self.features):
            return self
        return _replace(self, detect=entry.detect, features=entry.features)


_NO_OVERRIDES = FeatureConfig()


def _resolve_paths(entry: ModelConfig, folder: Path) -> ModelConfig:
    """Baseline paths of a ``[models.<name>]`` section are relative to the config file."""
    def resolve(path: str | None) -> str | None:
        if path is None or Path(path).is_absolute():
            return path
        return str((folder / path).resolve())
    return _replace(entry, baseline=resolve(entry.baseline), versions=MappingProxyType(
        {version: resolve(file) for version, file in entry.versions.items()}))


def _replace(obj: Any, **changes: Any) -> Any:
    values = {f.name: getattr(obj, f.name) for f in fields(obj)}
    values.update(changes)
    return type(obj)(**values)


class _Reader:
    """Turns the raw TOML mapping into dataclasses, with errors that say where and how."""

    def __init__(self, source: str, text: str | None) -> None:
        self.source = source
        self.text = text

    def fail(self, section: str | None, key: str, message: str) -> ConfigError:
        where = f"[{section}] {key}" if section else key
        line = self._line_of(section, key)
        at = f":{line}" if line else ""
        return ConfigError(f"{self.source}{at}: {where}{message}")

    def _line_of(self, section: str | None, key: str) -> int | None:
        """Best-effort line number of ``key`` inside ``[section]`` for error messages."""
        if self.text is None:
            return None
        in_section = section is None
        key_pattern = re.compile(rf"^\s*\"?{re.escape(key)}\"?\s*=")
        for number, line in enumerate(self.text.splitlines(), start=1):
            stripped = line.strip()
            if stripped.startswith("["):
                name = stripped.strip("[]").strip().replace('"', "")
                in_section = name == section
                if in_section and section and key == section.split(".")[-1]:
                    return number
                continue
            if in_section and key_pattern.match(line):
                return number
        return None

    def read(self, raw: dict[str, Any]) -> Config:
        known = {"baseline", "message", "window", "detect", "build", "features", "kafka",
                 "labels", "models"}
        for key in raw:
            if key not in known:
                allowed = ", ".join(sorted(known))
                raise self.fail(None, key, f": unknown setting; allowed: {allowed}")
        baseline = raw.get("baseline")
        if baseline is not None and not isinstance(baseline, str):
            raise self.fail(None, "baseline", ": must be a string path to a baseline file")
        message = self._section(raw, "message", MessageConfig)
        window = self._section(raw, "window", WindowConfig)
        self._check_window(window)
        detect = self._section(raw, "detect", DetectConfig)
        self._check_detect(detect)
        build = self._section(raw, "build", BaselineBuildConfig)
        features = self._features(raw.get("features", {}))
        kafka = self._kafka(raw.get("kafka", {}))
        labels = None
        if "labels" in raw:
            labels = self._section(raw, "labels", LabelsConfig)
            self._check_labels(labels)
        models = self._models(raw.get("models", {}), raw.get("detect", {}),
                              raw.get("features", {}))
        return Config(baseline=baseline, message=message, window=window, detect=detect,
                      build=build, features=features, kafka=kafka, source=self.source,
                      labels=labels, models=models)

    def _models(self, table: Any, detect: Any, features: Any) -> ModelsConfig:
        """``[models]``: settings (scalars) and one ``[models.<name>]`` table per model."""
        if not isinstance(table, dict):
            raise self.fail(None, "models", ": must be a table, e.g. [models.fraud] with "
                            "baseline = \"fraud.json\"")
        settings = {k: v for k, v in table.items() if not isinstance(v, dict)}
        models = self._section({"models": settings}, "models", ModelsConfig)
        if models.fallback not in FALLBACKS:
            raise self.fail("models", "fallback", f" = {models.fallback!r}: allowed: "
                            "\"none\" (a version without a baseline is dead-lettered "
                            "unknown_version), \"latest\" (judged against the model's latest)")
        for key in ("max_models", "max_versions"):
            if getattr(models, key) < 1:
                raise self.fail("models", key, ": must be at least 1")
        entries = {name: self._model(name, spec, detect, features)
                   for name, spec in table.items() if isinstance(spec, dict)}
        return _replace(models, entries=MappingProxyType(entries))

    def _model(self, name: str, spec: dict[str, Any], detect: Any, features: Any
               ) -> ModelConfig:
        section = f"models.{name}"
        allowed = ("baseline", "versions", "fallback", "detect", "features")
        for key in spec:
            if key not in allowed:
                raise self.fail(section, key, f": unknown key; allowed: {', '.join(allowed)}")
        baseline = spec.get("baseline")
        if baseline is not None and not isinstance(baseline, str):
            raise self.fail(section, "baseline", f" = {baseline!r}: must be the path of a "
                            "baseline file (relative to the config file)")
        versions = spec.get("versions", {})
        if not isinstance(versions, dict) or not all(
                isinstance(v, str) for v in versions.values()):
            raise self.fail(section, "versions", ": must map versions to baseline files, "
                            "e.g. versions = { \"3\" = \"fraud-v3.json\" }")
        if baseline is None and not versions:
            raise self.fail(None, f"[{section}]", ": no baseline; add baseline = \"<file>\" or "
                            "versions = { \"<version>\" = \"<file>\" }")
        fallback = spec.get("fallback")
        if fallback is not None and fallback not in FALLBACKS:
            raise self.fail(section, "fallback", f" = {fallback!r}: allowed: \"none\", "
                            "\"latest\"")
        own_detect = spec.get("detect", {})
        if not isinstance(own_detect, dict) or not isinstance(detect, dict):
            raise self.fail(section, "detect", ": must be a table, e.g. "
                            f"[{section}.detect]")
        merged = self._section({f"{section}.detect": {**detect, **own_detect}},
                               f"{section}.detect", DetectConfig)
        self._check_detect(merged, f"{section}.detect")
        own_features = spec.get("features", {})
        if not isinstance(own_features, dict) or not isinstance(features, dict):
            raise self.fail(section, "features", ": must be tables like "
                            f"[{section}.features.amount]")
        combined = {n: dict(f) for n, f in features.items() if isinstance(f, dict)}
        for feature, override in own_features.items():
            if not isinstance(override, dict):
                raise self.fail(None, f"{section}.features.{feature}", ": must be a table")
            combined[feature] = {**combined.get(feature, {}), **override}
        return ModelConfig(name, baseline, MappingProxyType(
            {str(v): f for v, f in versions.items()}), fallback, merged,
            self._features(combined, prefix=f"{section}.") if combined else MappingProxyType({}))

    def _section(self, raw: dict[str, Any], name: str, cls: type, table: Any = None) -> Any:
        table = raw.get(name, {}) if table is None else table
        if not isinstance(table, dict):
            raise self.fail(None, name, ": must be a table, e.g. [" + name + "]")
        allowed = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in table.items():
            if key not in allowed:
                raise self.fail(name, key, f": unknown key; allowed: {', '.join(allowed)}")
            values[key] = self._typed(name, key, value, allowed[key].default)
        return cls(**values)

    def _typed(self, section: str, key: str, value: Any, default: Any) -> Any:
        """Check ``value`` against the type of the default; return it in the stored form."""
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise self.fail(section, key, f" = {value!r}: must be true or false")
            return value
        if isinstance(default, int) and not isinstance(default, bool):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise self.fail(section, key, f" = {value!r}: must be a whole number >= 0")
            return value
        if isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise self.fail(section, key, f" = {value!r}: must be a number >= 0")
            return float(value)
        if isinstance(default, tuple):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise self.fail(section, key, f" = {value!r}: must be a list of strings")
            return tuple(value)
        if section == "window" and isinstance(value, int | float):
            raise self.fail(section, key, f" = {value!r}: a bare number is ambiguous; add a "
                            "unit: 500ms, 90s, 15m, 1h, 1d")
        if key == "threshold":  # optional per-feature number
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise self.fail(section, key, f" = {value!r}: must be a number >= 0")
            return float(value)
        if default is None or isinstance(default, str):
            if value is not None and not isinstance(value, str):
                raise self.fail(section, key, f" = {value!r}: must be a string")
            return value if value != "" or key == "features" else None
        return value

    def _check_window(self, window: WindowConfig) -> None:
        allowed = "use a number with a unit: 500ms, 90s, 15m, 1h, 1d"
        for key in ("size", "pane", "allowed_lateness", "max_ahead"):
            try:
                parse_duration(getattr(window, key))
            except ValueError as exc:
                raise self.fail("window", key, f" = {getattr(window, key)!r}: {exc}; {allowed}") \
                    from None
        if window.pane_ms <= 0:
            raise self.fail("window", "pane", ": must be longer than 0")
        if window.size_ms % window.pane_ms or window.size_ms < window.pane_ms:
            raise self.fail("window", "size", f" = {window.size!r}: must be a whole multiple "
                            f"of pane ({window.pane!r})")
        if window.watermark_quorum < 1:
            raise self.fail("window", "watermark_quorum", ": must be at least 1 record")
        if window.watermark_memory < window.watermark_quorum:
            raise self.fail("window", "watermark_memory", f" = {window.watermark_memory}: "
                            f"must be at least watermark_quorum ({window.watermark_quorum})")
        if window.panes > 10_000:
            raise self.fail("window", "pane", f" = {window.pane!r}: gives {window.panes} panes "
                            "per window; use at most 10000 (a longer pane)")

    def _check_detect(self, detect: DetectConfig, section: str = "detect") -> None:
        if detect.numeric_metric not in NUMERIC_METRICS:
            raise self.fail(section, "numeric_metric", f" = {detect.numeric_metric!r}: "
                            f"allowed: {', '.join(NUMERIC_METRICS)}")
        if detect.categorical_metric not in CATEGORICAL_METRICS:
            raise self.fail(section, "categorical_metric", f" = {detect.categorical_metric!r}: "
                            f"allowed: {', '.join(CATEGORICAL_METRICS)}")
        if not 0 < detect.alpha < 0.5:
            raise self.fail(section, "alpha", f" = {detect.alpha!r}: must be in (0, 0.5), "
                            "e.g. 1e-5 (the false-alarm rate per window and feature)")
        scales = detect.scales.strip().lower()
        if scales not in ("auto", "none") and not re.fullmatch(r"\s*\d+(\s*,\s*\d+)*\s*",
                                                                scales):
            raise self.fail(section, "scales", f" = {detect.scales!r}: use \"auto\" (the "
                            "newest 1, 2, 4, ... panes up to half the window), \"none\", or "
                            "pane counts like \"1,3\"")
        if scales not in ("auto", "none") and any(
                int(part) < 1 for part in scales.split(",")):
            raise self.fail(section, "scales", f" = {detect.scales!r}: a scale is at least 1 "
                            "pane")
        if detect.surge_factor < 1:
            raise self.fail(section, "surge_factor", f" = {detect.surge_factor!r}: must be "
                            "at least 1 (3.0 flags a share that triples or falls to a third)")
        if not 0 <= detect.surge_min_change < 1:
            raise self.fail(section, "surge_min_change", f" = {detect.surge_min_change!r}: "
                            "must be a share in [0, 1), e.g. 0.01")
        if not 0 < detect.joint_variance < 1:
            raise self.fail(section, "joint_variance", f" = {detect.joint_variance!r}: must "
                            "be in (0, 1), e.g. 0.9 (the share of variance the principal "
                            "components keep)")
        if detect.persistent_windows < 2:
            raise self.fail(section, "persistent_windows", ": must be at least 2 windows")
        if detect.persistent_ratio > 1:
            raise self.fail(section, "persistent_ratio", f" = {detect.persistent_ratio!r}: "
                            "must be in [0, 1] (a share of the threshold)")
        if not 0 < detect.resolve_ratio <= 1:
            raise self.fail(section, "resolve_ratio", f" = {detect.resolve_ratio!r}: "
                            "must be in (0, 1]; 0.8 resolves below 80% of the threshold")
        for key in ("raise_after", "resolve_after"):
            if getattr(detect, key) < 1:
                raise self.fail(section, key, ": must be at least 1 window")

    def _check_labels(self, labels: LabelsConfig) -> None:
        allowed = "use a number with a unit: 500ms, 90s, 15m, 1h, 1d"
        for key in ("max_delay", "size", "pane"):
            value = getattr(labels, key)
            if value is None and key != "max_delay":
                continue
            try:
                if parse_duration(value) <= 0:
                    raise ValueError("must be longer than 0")
            except ValueError as exc:
                raise self.fail("labels", key, f" = {value!r}: {exc}; {allowed}") from None
        if (labels.size is None) != (labels.pane is None):
            raise self.fail("labels", "size" if labels.size is None else "pane",
                            ": set both size and pane, or neither (then [window]'s apply)")
        if labels.size is not None and labels.pane is not None:
            size, pane = parse_duration(labels.size), parse_duration(labels.pane)
            if size % pane:
                raise self.fail("labels", "size", f" = {labels.size!r}: must be a whole "
                                f"multiple of pane ({labels.pane!r})")
        if labels.topic and labels.topic_pattern:
            raise self.fail("labels", "topic_pattern", ": give topic or topic_pattern, "
                            "not both")
        if not 0 < labels.sample <= 1:
            raise self.fail("labels", "sample", f" = {labels.sample!r}: must be in (0, 1], "
                            "e.g. 0.01 keeps 1% of requests for the join")
        if not 0 <= labels.final_when_labelled <= 1:
            raise self.fail("labels", "final_when_labelled",
                            f" = {labels.final_when_labelled!r}: must be a share in [0, 1] "
                            "(0 = only when the label watermark has passed)")
        if not 0 < labels.threshold < 1:
            raise self.fail("labels", "threshold", f" = {labels.threshold!r}: must be in "
                            "(0, 1): scores at or above it predict the positive class")
        if labels.task is not None and labels.task not in TASKS:
            raise self.fail("labels", "task", f" = {labels.task!r}: allowed: "
                            f"{', '.join(TASKS)}")
        unknown = [m for m in labels.metrics if m not in PERFORMANCE_METRICS]
        if unknown:
            raise self.fail("labels", "metrics", f" = {unknown[0]!r}: allowed: "
                            f"{', '.join(PERFORMANCE_METRICS)}")
        if labels.max_pending < 1:
            raise self.fail("labels", "max_pending", ": must be at least 1")
        if not labels.request_id or not labels.label_request_id or not labels.label:
            key = next(k for k in ("request_id", "label_request_id", "label")
                       if not getattr(labels, k))
            raise self.fail("labels", key, ": must be a path (e.g. \"request_id\")")

    def _features(self, table: Any, prefix: str = "") -> Mapping[str, FeatureConfig]:
        if not isinstance(table, dict):
            raise self.fail(None, "features", ": must be tables like [features.amount]")
        result = {}
        for name, spec in table.items():
            section = f"{prefix}features.{name}"
            if not isinstance(spec, dict):
                raise self.fail(None, section, ": must be a table, e.g. [features.amount]")
            feature = self._section({section: spec}, section, FeatureConfig)
            if feature.kind is not None and feature.kind not in KINDS:
                raise self.fail(section, "kind", f" = {feature.kind!r}: allowed: numeric, "
                                "categorical")
            allowed_metrics = NUMERIC_METRICS if feature.kind != "categorical" \
                else CATEGORICAL_METRICS
            if feature.metric is not None and feature.metric not in allowed_metrics:
                raise self.fail(section, "metric", f" = {feature.metric!r}: allowed: "
                                f"{', '.join(allowed_metrics)}")
            result[name] = feature
        return MappingProxyType(result)

    def _kafka(self, table: Any) -> KafkaConfig:
        if not isinstance(table, dict):
            raise self.fail(None, "kafka", ": must be a table, e.g. [kafka]")
        own = {k: v for k, v in table.items() if k in _KAFKA_OWN_KEYS}
        client = {k: self._expand_env(k, v) for k, v in table.items() if k not in own}
        passthrough = _kafka_python_keys() if client else frozenset()
        for key in client:
            if passthrough and key not in passthrough:
                raise self.fail("kafka", key, ": not a streamskew or kafka-python setting; "
                                "streamskew: " + ", ".join(_KAFKA_OWN_KEYS) +
                                "; kafka-python names are passed through (e.g. security_protocol,"
                                " sasl_mechanism, ssl_cafile)")
        values: dict[str, Any] = {}
        for key, value in own.items():
            if key in ("topics",):
                if isinstance(value, str):
                    value = [value]
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise self.fail("kafka", key, f" = {value!r}: must be a list of topic names")
                values[key] = tuple(value)
            elif key == "bootstrap_servers" and isinstance(value, list):
                values[key] = tuple(str(v) for v in value)
            elif key == "panes_partitions":
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise self.fail("kafka", key, f" = {value!r}: must be a whole number of "
                                    "partitions, 1 or more (e.g. panes_partitions = 3)")
                values[key] = value
            elif not isinstance(value, str):
                raise self.fail("kafka", key, f" = {value!r}: must be a string")
            else:
                values[key] = value
        return KafkaConfig(**values, client=MappingProxyType(client))

    def _expand_env(self, key: str, value: Any) -> Any:
        """``"${SASL_PASSWORD}"`` reads the environment, so secrets stay out of files."""
        if not isinstance(value, str):
            return value

        def lookup(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                raise self.fail("kafka", key, f": environment variable {name} is not set")
            return os.environ[name]

        return _ENV_REF.sub(lookup, value)


def check_feature_overrides(config: Config, features: Iterable[str],
                            baseline_label: str = "the baseline") -> None:
    """``[features.<name>]`` for a name the baseline lacks does nothing: a ConfigError.

    Sections that only say ``ignore = true`` are fine (a build with the same config left the
    column out, so the baseline cannot have it).

    >>> config = Config.from_dict({"features": {"amout": {"threshold": 0.2}}})
    >>> check_feature_overrides(config, ["amount", "country"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    streamskew.config.ConfigError: <dict>: [features.amout]: no feature 'amout' in the ...
    """
    known = set(features)
    unknown = [name for name, spec in config.features.items()
               if name not in known and not spec.ignore]
    if not unknown:
        return
    line = _section_line(config.source, f"features.{unknown[0]}")
    sections = ", ".join(f"[features.{name}]" for name in unknown)
    names = ", ".join(repr(name) for name in unknown)
    listing = ", ".join(sorted(known)[:12]) + (", ..." if len(known) > 12 else "")
    raise ConfigError(f"{config.source}{f':{line}' if line else ''}: {sections}: no feature "
                      f"{names} in {baseline_label} (its features: {listing}); fix the name "
                      "or remove the section")


def _section_line(source: str, section: str) -> int | None:
    """The line of ``[section]`` in the config file, when it is one (for messages)."""
    try:
        text = Path(source).read_text(encoding="utf-8")
    except (OSError, ValueError):
        return None
    wanted = section.replace('"', "")
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("[") and stripped.strip("[]").strip().replace('"', "") == wanted:
            return number
    return None


def _kafka_python_keys() -> frozenset[str]:
    """Every setting name kafka-python's consumer, producer and admin client understand."""
    try:
        from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
    except ImportError:  # pragma: no cover - kafka-python is a core dependency
        return frozenset()
    keys: set[str] = set()
    for client in (KafkaConsumer, KafkaProducer, KafkaAdminClient):
        keys.update(getattr(client, "DEFAULT_CONFIG", {}))
    return frozenset(keys)
