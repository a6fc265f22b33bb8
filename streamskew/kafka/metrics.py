"""Prometheus metrics of ``streamskew run``: throughput, lag, watermarks, scores and events.

:class:`ServiceMetrics` keeps its own ``CollectorRegistry`` (never the global one), so several
instances, e.g. in tests, do not collide, and serves it over HTTP on ``/metrics``::

    metrics = ServiceMetrics(port=9464)  # host="127.0.0.1" unless told otherwise
    metrics.start()                      # port=0 picks a free port: see metrics.port
    metrics.use_baselines({"default": baseline})   # DetectorService does this itself
    metrics.records("prediction-requests", 500)
    metrics.window_judged("diamond-price", window_result.results)
    metrics.event(skew_event)
    metrics.stop()

Names follow the Prometheus conventions: base units (``_seconds``, ``_timestamp_seconds``),
a unit word where there is no base unit (``_records``), ``_total`` on counters and no
``_created`` series beside them (in this registry only; a process's global registry is left
as it is). Every name starts with ``streamskew_``, and the process and Python collectors
(``process_*``, ``python_info``, ``python_gc_*``) are served beside them:

=====================================================  =======  ===============================
metric                                                 type     what
=====================================================  =======  ===============================
``build_info{version}``                                gauge    1; the streamskew version
``baseline_info{model,baseline_id}``                   gauge    1 per baseline of the service
``records_total{topic}``                               counter  records consumed
``bad_records_total{topic,reason}``                    counter  records dead-lettered
``late_records_total{topic}``                          counter  records for closed panes
``model_records_total{model}``                         counter  records folded into panes
``consumer_lag_records{topic,partition}``              gauge    records behind the end offset
``watermark_timestamp_seconds{topic,partition}``       gauge    event-time watermark, unix s
``pane_closes_total{model}``                           counter  panes closed
``windows_judged_total{model}``                        counter  windows judged
``score{model,feature,check,metric}``                  gauge    last judged value
``threshold{model,feature,check,metric}``              gauge    effective threshold
``skew_active{model,feature,check,metric}``            gauge    raised skews (1 or 0)
``events_total{model,feature,check,type,severity}``    counter  skew events emitted
``kafka_errors_total{error}``                          counter  Kafka failures waited out
``label_join_total{outcome}``                          counter  labels/requests by join outcome
``label_join_pending_requests``                        gauge    sampled requests awaiting a label
``performance{model,metric,kind}``                     gauge    realized/estimated/reference
=====================================================  =======  ===============================

The last three exist with ``[labels]`` (performance skew), served by the process that runs
the label join (the evaluator). ``outcome`` is one of ``matched``, ``late``, ``duplicate``,
``without_request``, ``unlabelled`` (sampled requests whose label did not come within
``max_delay``), ``dropped`` (sampled requests not kept: the pending table was full),
``unsampled_labels`` and ``bad`` (unreadable label records); counted as committed.
``performance`` holds the last judged window's value of each metric: ``kind="realized"``
(from the labels), ``"estimated"`` (CBPE, before the labels), ``"reference"`` (validation).

Label values never come from message content without a bound (:class:`LabelBudget`): the
``model`` label is one of the deployment's baselines (the keys of the mapping the service
gets), or, when a ``default`` baseline judges any model, one of the first ``max_models``
other model names seen; every further model is ``model="other"``. The ``feature`` label is
a feature of a baseline or one of the first ``max_new_features`` unknown keys (the
``new_feature`` check), else ``feature="other"``. ``score`` and ``threshold`` are kept only
for series of their own; ``skew_active`` of an ``other`` series counts the raised checks
folded into it, and ``model_records_total{model="other"}`` counts their records.

``watermark_timestamp_seconds`` is the partition's event-time watermark, as the engine keeps
it: its stream time (the ``[window] watermark_quorum``-th latest event time among its last
``watermark_memory`` records, so a few bad clocks cannot move it) less ``allowed_lateness``.
Watermark delay, as the dashboard draws it, is ``time() - watermark_timestamp_seconds``: how
far that trails the wall clock, lateness allowance and producer delay included.

``prometheus-client`` is an extra (``pip install 'streamskew[metrics]'``); :class:`NullMetrics`
has the same methods and does nothing, for a service started without a metrics port.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import threading
from collections.abc import Iterable, Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import StreamskewError

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from ..baseline import Baseline
    from ..detector.events import SkewEvent

__all__ = ["DEFAULT_HOST", "OTHER", "LabelBudget", "Metrics", "MetricsEndpointError",
           "NullMetrics", "ServiceMetrics"]

log = logging.getLogger(__name__)

PREFIX = "streamskew"
DEFAULT_HOST = "127.0.0.1"  # loopback: opening the endpoint to the network is a choice
OTHER = "other"  # the label value of everything past a label's budget
DEFAULT_MODEL = "default"  # the baseline that judges any model (detector.builder)
MAX_MODELS = 20  # model names of their own beside the baselines' (with a default baseline)
MAX_NEW_FEATURES = 10  # unknown keys (new_feature) with series of their own
_CHECK_LABELS = ("model", "feature", "check", "metric")
_WITH_CREATED = ("counter", "histogram", "summary", "gaugehistogram")


class MetricsEndpointError(StreamskewError):
    """The metrics endpoint cannot listen on the address asked for."""


class JudgedResult(Protocol):
    """What :meth:`ServiceMetrics.window_judged` reads of a check result (``CheckResult``)."""

    @property
    def feature(self) -> str: ...
    @property
    def check(self) -> str: ...
    @property
    def metric(self) -> str: ...
    @property
    def value(self) -> float: ...
    @property
    def threshold(self) -> float: ...
    @property
    def judged(self) -> bool: ...


class Metrics(Protocol):
    """What the service reports as it runs; :class:`ServiceMetrics` serves it to Prometheus,
    :class:`NullMetrics` (the default) ignores it."""

    def use_baselines(self, baselines: Mapping[str, Baseline]) -> None: ...
    def records(self, topic: str, n: int) -> None: ...
    def bad_record(self, topic: str, reason: str) -> None: ...
    def late(self, topic: str, n: int) -> None: ...
    def model_records(self, model: str, n: int) -> None: ...
    def lag(self, topic: str, partition: int, value: int) -> None: ...
    def watermark(self, topic: str, partition: int, ms: int) -> None: ...
    def forget_partition(self, topic: str, partition: int) -> None: ...
    def pane_closed(self, model: str) -> None: ...
    def window_judged(self, model: str, results: Iterable[JudgedResult]) -> None: ...
    def event(self, event: SkewEvent) -> None: ...
    def evaluator_assigned(self, raised: Iterable[tuple[str, str, str, str]]) -> None: ...
    def evaluator_revoked(self) -> None: ...
    def kafka_error(self, error: str) -> None: ...
    def deleted_unread(self, topic: str, n: int) -> None: ...
    def label_join(self, outcomes: Mapping[str, int], pending: int) -> None: ...
    def performance_window(self, window: Any) -> None: ...


class LabelBudget:
    """A bounded set of label values: ``known`` ones pass, then the first ``extra`` others
    seen, and every further value is :data:`OTHER`.

    >>> models = LabelBudget({"fraud"}, extra=1)
    >>> [models("fraud"), models("churn"), models("spam"), models("churn")]
    ['fraud', 'churn', 'other', 'churn']
    """

    def __init__(self, known: Iterable[str] = (), extra: int = 0) -> None:
        self.known = frozenset(known)
        self.extra = extra
        self.admitted: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self.known or value in self.admitted:
            return value
        if value != OTHER and len(self.admitted) < self.extra:
            self.admitted.add(value)
            return value
        return OTHER

    def __len__(self) -> int:
        """How many values have (or may get) a series of their own: the bound."""
        return len(self.known) + self.extra


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise ImportError("the metrics endpoint needs prometheus-client: "
                          "pip install 'streamskew[metrics]'") from None
    return prometheus_client


class _WithoutCreated:
    """A registry's metrics without the ``_created`` samples prometheus-client adds to every
    counter. ``prometheus_client.disable_created_metrics()`` would do it for every registry
    of the process, including a user's global one; this drops them from ours only."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Any]:
        for metric in self.registry.collect():
            if metric.type in _WITH_CREATED:
                metric = copy.copy(metric)
                metric.samples = [s for s in metric.samples if not s.name.endswith("_created")]
            yield metric


class ServiceMetrics:
    """The service's Prometheus metrics in a private registry, served on ``host:port``.

    ``max_models`` and ``max_new_features`` bound the ``model`` and ``feature`` labels (see
    the module docs): whatever the messages carry, at most ``len(baselines) + max_models``
    model values and ``features + max_new_features`` feature values, plus ``other``.
    """

    def __init__(self, port: int | None = None, host: str = DEFAULT_HOST, *,
                 max_models: int = MAX_MODELS,
                 max_new_features: int = MAX_NEW_FEATURES) -> None:
        prom = _prometheus()
        self._prom = prom
        self.host = host
        self._requested_port = port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.max_models = max_models
        self.max_new_features = max_new_features
        # Until the service names its baselines, any model may have a series (up to the cap).
        self.models = LabelBudget(extra=max_models)
        self.features = LabelBudget(extra=max_new_features)
        self._raised: dict[tuple[str, ...], set[tuple[str, ...]]] = {}
        self._warned_other = False

        # What is served: our own metrics (without _created) and the process collectors.
        self.registry = prom.CollectorRegistry(auto_describe=True)
        own = prom.CollectorRegistry(auto_describe=True)

        def counter(name: str, doc: str, labels: tuple[str, ...]) -> Any:
            return prom.Counter(name, doc, labels, namespace=PREFIX, registry=own)

        def gauge(name: str, doc: str, labels: tuple[str, ...]) -> Any:
            return prom.Gauge(name, doc, labels, namespace=PREFIX, registry=own)

        from .. import __version__

        build = prom.Info("build", "The streamskew version serving these metrics.",
                          namespace=PREFIX, registry=own)
        build.info({"version": __version__})
        self._baseline_info = prom.Info("baseline", "The baselines this service judges "
                                        "against, by model (\"default\": any other model).",
                                        ("model",), namespace=PREFIX, registry=own)
        # prometheus_client appends "_total" to counter names itself.
        self._records = counter("records", "Prediction-request records consumed.", ("topic",))
        self._bad = counter("bad_records", "Records rejected or dead-lettered, by reason.",
                            ("topic", "reason"))
        self._late = counter("late_records", "Records whose pane had already closed (late).",
                             ("topic",))
        self._model_records = counter("model_records", "Records folded into the model's panes "
                                      "(counted as the pane is sealed); model=\"other\": "
                                      "models past the label budget.", ("model",))
        self._lag = gauge("consumer_lag_records", "Records between the consumer's position "
                          "and the partition's end offset.", ("topic", "partition"))
        self._watermark = gauge("watermark_timestamp_seconds", "Event-time watermark of the "
                                "partition (its stream time less the allowed lateness), "
                                "unix time in seconds.", ("topic", "partition"))
        self._panes = counter("pane_closes", "Panes closed (the window slid by one pane).",
                              ("model",))
        self._windows = counter("windows_judged", "Windows judged against the baseline.",
                                ("model",))
        self._score = gauge("score", "Value of the check on the last judged window.",
                            _CHECK_LABELS)
        self._threshold = gauge("threshold", "Effective threshold of the check: max(configured, "
                                "sampling-noise floor).", _CHECK_LABELS)
        self._active = gauge("skew_active", "Raised skews of the check (between skew_detected "
                             "and skew_resolved): 1 or 0; for an \"other\" series, how many "
                             "of the checks folded into it.", _CHECK_LABELS)
        self._events = counter("events", "Skew events emitted.",
                               ("model", "feature", "check", "type", "severity"))
        self._kafka_errors = counter("kafka_errors", "Transient Kafka failures waited out "
                                     "(the service resumed from its last checkpoint).",
                                     ("error",))
        self._deleted = counter("deleted_unread_records", "Records the broker deleted "
                                "(retention) before this service read them.", ("topic",))
        self._join = counter("label_join", "Label join outcomes ([labels]): matched, late, "
                             "duplicate, without_request, unlabelled, dropped, "
                             "unsampled_labels, bad.", ("outcome",))
        self._pending = gauge("label_join_pending_requests", "Sampled requests the label join "
                              "holds, waiting for their label.", ())
        self._performance = gauge("performance", "Performance of the last judged window: "
                                  "kind=realized (labels), estimated (CBPE) or reference "
                                  "(validation).", ("model", "metric", "kind"))
        # Registered once every metric exists: the served registry learns their names now
        # (a scrape may ask for some by name: /metrics?name[]=streamskew_score).
        self.registry.register(_WithoutCreated(own))
        prom.ProcessCollector(registry=self.registry)
        prom.PlatformCollector(registry=self.registry)
        prom.GCCollector(registry=self.registry)

    # -- the HTTP endpoint -------------------------------------------------------------------

    @property
    def port(self) -> int | None:
        """The bound port once started (the free port chosen for ``port=0``), else as given."""
        if self._server is not None:
            return int(self._server.server_address[1])
        return self._requested_port

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> int:
        """Serve ``/metrics`` on ``host:port`` from a daemon thread; returns the bound port.

        An address that cannot be had is a :class:`MetricsEndpointError` naming it."""
        with self._lock:
            if self._server is not None:
                raise RuntimeError(f"metrics endpoint already running on port {self.port}")
            if self._requested_port is None:
                raise ValueError("no metrics port configured")
            try:
                server, thread = self._prom.start_http_server(
                    self._requested_port, addr=self.host, registry=self.registry)
            except OSError as exc:
                raise MetricsEndpointError(
                    f"cannot serve metrics on {self.host}:{self._requested_port}: "
                    f"{exc.strerror or exc}; choose another --metrics-port or "
                    f"--metrics-host") from None
            self._server, self._thread = server, thread
            return int(server.server_address[1])

    def stop(self, timeout: float = 5.0) -> None:
        """Shut the endpoint down and free its port (no-op when not running)."""
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout)

    def __enter__(self) -> ServiceMetrics:
        if self._requested_port is not None:
            self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def render(self) -> bytes:
        """The exposition text of every metric (what a scrape returns)."""
        return bytes(self._prom.generate_latest(self.registry))

    # -- the deployment ----------------------------------------------------------------------

    def use_baselines(self, baselines: Mapping[str, Baseline]) -> None:
        """The service's baselines, by model: they bound the ``model`` and ``feature`` labels
        and fill ``baseline_info``. Without a ``default`` baseline only these models get
        series of their own; with one, also the first ``max_models`` other names seen."""
        extra = self.max_models if DEFAULT_MODEL in baselines else 0
        self.models = LabelBudget(baselines, extra)
        features = {name for baseline in baselines.values() for name in baseline.features}
        self.features = LabelBudget(features, self.max_new_features)
        self._baseline_info.clear()
        for model, baseline in baselines.items():
            self._baseline_info.labels(model).info({"baseline_id": baseline.id})

    def _model(self, model: str) -> str:
        label = self.models(model)
        if label == OTHER and model != OTHER and not self._warned_other:
            self._warned_other = True
            log.warning("metrics: model %r has no series of its own (%d model labels at most); "
                        "it and any further ones are counted as model=\"other\"",
                        model, len(self.models))
        return label

    def _check_labels(self, model: str, feature: str, check: str,
                      metric: str) -> tuple[tuple[str, ...], bool]:
        """The bounded labels of a check, and whether they are the check's own."""
        labels = (self._model(model), self.features(feature), check, metric)
        return labels, labels[:2] == (model, feature)

    # -- consuming ---------------------------------------------------------------------------

    def records(self, topic: str, n: int) -> None:
        """``n`` records consumed from ``topic`` (0 still creates the series, so that "no
        records for 10 minutes" can be told from "never scraped")."""
        self._records.labels(topic).inc(n)

    def bad_record(self, topic: str, reason: str) -> None:
        """One record of ``topic`` dead-lettered for ``reason`` (e.g. ``invalid_json``)."""
        self._bad.labels(topic, reason).inc()

    def late(self, topic: str, n: int) -> None:
        """``n`` records of ``topic`` arrived after their pane had closed."""
        if n:
            self._late.labels(topic).inc(n)

    def model_records(self, model: str, n: int) -> None:
        """``n`` records of ``model`` were folded into a pane now sealed."""
        self._model_records.labels(self._model(model)).inc(n)

    def lag(self, topic: str, partition: int, value: int) -> None:
        """The partition is ``value`` records behind its end offset."""
        self._lag.labels(topic, str(partition)).set(value)

    def watermark(self, topic: str, partition: int, ms: int) -> None:
        """The partition's event-time watermark, epoch milliseconds (served in seconds)."""
        self._watermark.labels(topic, str(partition)).set(ms / 1000)

    def forget_partition(self, topic: str, partition: int) -> None:
        """Drop the lag and watermark series of a partition this consumer no longer owns."""
        for gauge in (self._lag, self._watermark):
            with contextlib.suppress(KeyError):  # older prometheus-client raise on unknown
                gauge.remove(topic, str(partition))

    # -- judging -----------------------------------------------------------------------------

    def pane_closed(self, model: str) -> None:
        """A pane of ``model`` closed."""
        self._panes.labels(self._model(model)).inc()

    def window_judged(self, model: str, results: Iterable[JudgedResult]) -> None:
        """A window of ``model`` was judged: update each judged check's score and threshold.

        Results not judged (too few values) or without a finite value leave the last score in
        place. ``skew_active`` gets a 0 series for every judged check, so it can be queried
        before the first event. Checks folded into an ``other`` series keep no score.
        """
        self._windows.labels(self._model(model)).inc()
        for result in results:
            if not result.judged or not math.isfinite(result.value):
                continue
            labels, own = self._check_labels(model, result.feature, result.check,
                                             result.metric)
            if own:
                self._score.labels(*labels).set(result.value)
                self._threshold.labels(*labels).set(result.threshold)
            self._active.labels(*labels)  # creates the series at 0, keeps a raised one

    def event(self, event: SkewEvent) -> None:
        """A skew event was emitted: count it and raise/clear ``skew_active``."""
        labels, _ = self._check_labels(event.model, event.feature, event.check, event.metric)
        self._events.labels(*labels[:3], event.type, event.severity).inc()
        key = (event.model, event.feature, event.check, event.metric)
        if event.type == "skew_detected":
            self._raise(labels, key)
        elif event.type == "skew_resolved":
            raised = self._raised.get(labels, set())
            raised.discard(key)
            self._active.labels(*labels).set(len(raised))

    def _raise(self, labels: tuple[str, ...], key: tuple[str, ...]) -> None:
        raised = self._raised.setdefault(labels, set())
        raised.add(key)
        self._active.labels(*labels).set(len(raised))

    def evaluator_assigned(self, raised: Iterable[tuple[str, str, str, str]]) -> None:
        """This process now judges the windows, continuing from a checkpoint whose raised
        checks are ``raised`` (model, feature, check, metric): start the window series over
        from them, so a skew raised before a rebalance or a restart still shows."""
        self.evaluator_revoked()
        for model, feature, check, metric in raised:
            labels, _ = self._check_labels(model, feature, check, metric)
            self._raise(labels, (model, feature, check, metric))

    def evaluator_revoked(self) -> None:
        """Another process judges the windows now: drop this one's scores, thresholds and
        raised skews, which it would otherwise serve, stale, for ever."""
        for gauge in (self._score, self._threshold, self._active, self._performance):
            gauge.clear()
        self._raised.clear()

    def kafka_error(self, error: str) -> None:
        """A transient Kafka failure (its exception name) was waited out."""
        self._kafka_errors.labels(error).inc()

    def deleted_unread(self, topic: str, n: int) -> None:
        """``n`` records of ``topic`` were deleted by retention before they were read."""
        self._deleted.labels(topic).inc(n)

    # -- performance skew --------------------------------------------------------------------

    def label_join(self, outcomes: Mapping[str, int], pending: int) -> None:
        """The label join's outcomes since the last call, and its pending requests."""
        for outcome, n in outcomes.items():
            self._join.labels(outcome).inc(max(n, 0))
        self._pending.set(pending)

    def performance_window(self, window: Any) -> None:
        """A performance window was judged (a ``PerformanceWindow``)."""
        model = self._model(window.model)
        realized = window.check == "performance"
        for result in window.results:
            if math.isfinite(result.value):
                self._performance.labels(model, result.metric,
                                         "realized" if realized else "estimated"
                                         ).set(result.value)
            if realized and math.isfinite(result.reference):
                self._performance.labels(model, result.metric, "reference"
                                         ).set(result.reference)


class NullMetrics:
    """The interface of :class:`ServiceMetrics`, doing nothing (no metrics port configured)."""

    port: int | None = None
    running = False

    def start(self) -> int:
        raise ValueError("no metrics port configured")

    def stop(self, timeout: float = 5.0) -> None:
        """Nothing to stop."""

    def __enter__(self) -> NullMetrics:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Nothing to stop."""

    def render(self) -> bytes:
        return b""

    def use_baselines(self, baselines: Mapping[str, Baseline]) -> None:
        """Ignored."""

    def records(self, topic: str, n: int) -> None:
        """Ignored."""

    def bad_record(self, topic: str, reason: str) -> None:
        """Ignored."""

    def late(self, topic: str, n: int) -> None:
        """Ignored."""

    def model_records(self, model: str, n: int) -> None:
        """Ignored."""

    def lag(self, topic: str, partition: int, value: int) -> None:
        """Ignored."""

    def watermark(self, topic: str, partition: int, ms: int) -> None:
        """Ignored."""

    def forget_partition(self, topic: str, partition: int) -> None:
        """Ignored."""

    def pane_closed(self, model: str) -> None:
        """Ignored."""

    def window_judged(self, model: str, results: Iterable[JudgedResult]) -> None:
        """Ignored."""

    def event(self, event: SkewEvent) -> None:
        """Ignored."""

    def evaluator_assigned(self, raised: Iterable[tuple[str, str, str, str]]) -> None:
        """Ignored."""

    def evaluator_revoked(self) -> None:
        """Ignored."""

    def kafka_error(self, error: str) -> None:
        """Ignored."""

    def deleted_unread(self, topic: str, n: int) -> None:
        """Ignored."""

    def label_join(self, outcomes: Mapping[str, int], pending: int) -> None:
        """Ignored."""

    def performance_window(self, window: Any) -> None:
        """Ignored."""
