"""Prometheus metrics of ``streamskew run``: throughput, lag, watermarks, scores and events.

:class:`ServiceMetrics` keeps its own ``CollectorRegistry`` (never the global one), so several
instances, e.g. in tests, do not collide, and serves it over HTTP on ``/metrics``::

    metrics = ServiceMetrics(port=9464)
    metrics.start()                      # port=0 picks a free port: see metrics.port
    metrics.records("prediction-requests", 500)
    metrics.window_judged("diamond-price", window_result.results)
    metrics.event(skew_event)
    metrics.stop()

Every metric name starts with ``streamskew_``:

=========================================================  =======  ===========================
metric                                                     type     what
=========================================================  =======  ===========================
``records_total{topic}``                                   counter  records consumed
``bad_records_total{topic,reason}``                        counter  records dead-lettered
``late_records_total{topic}``                              counter  records for closed panes
``consumer_lag{topic,partition}``                          gauge    records behind the end
``watermark_ms{topic,partition}``                          gauge    event-time watermark
``pane_closes_total{model}``                               counter  panes closed
``windows_judged_total{model}``                            counter  windows judged
``score{model,feature,check,metric}``                      gauge    last judged value
``threshold{model,feature,check,metric}``                  gauge    effective threshold
``skew_active{model,feature,check,metric}``                gauge    1 while skew is raised
``events_total{model,feature,check,type,severity}``        counter  skew events emitted
``kafka_errors_total{error}``                              counter  Kafka failures waited out
=========================================================  =======  ===========================

``prometheus-client`` is an extra (``pip install 'streamskew[metrics]'``); :class:`NullMetrics`
has the same methods and does nothing, for a service started without a metrics port.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from ..detector.events import SkewEvent

__all__ = ["Metrics", "NullMetrics", "ServiceMetrics"]

PREFIX = "streamskew"
_CHECK_LABELS = ("model", "feature", "check", "metric")


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

    def records(self, topic: str, n: int) -> None: ...
    def bad_record(self, topic: str, reason: str) -> None: ...
    def late(self, topic: str, n: int) -> None: ...
    def lag(self, topic: str, partition: int, value: int) -> None: ...
    def watermark(self, topic: str, partition: int, ms: int) -> None: ...
    def forget_partition(self, topic: str, partition: int) -> None: ...
    def pane_closed(self, model: str) -> None: ...
    def window_judged(self, model: str, results: Iterable[JudgedResult]) -> None: ...
    def event(self, event: SkewEvent) -> None: ...
    def kafka_error(self, error: str) -> None: ...


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise ImportError("the metrics endpoint needs prometheus-client: "
                          "pip install 'streamskew[metrics]'") from None
    return prometheus_client


class ServiceMetrics:
    """The service's Prometheus metrics in a private registry, served on ``host:port``."""

    def __init__(self, port: int | None = None, host: str = "0.0.0.0") -> None:
        prom = _prometheus()
        self._prom = prom
        self.host = host
        self._requested_port = port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.registry = prom.CollectorRegistry(auto_describe=True)

        def counter(name: str, doc: str, labels: tuple[str, ...]) -> Any:
            return prom.Counter(name, doc, labels, namespace=PREFIX, registry=self.registry)

        def gauge(name: str, doc: str, labels: tuple[str, ...]) -> Any:
            return prom.Gauge(name, doc, labels, namespace=PREFIX, registry=self.registry)

        # prometheus_client appends "_total" to counter names itself.
        self._records = counter("records", "Prediction-request records consumed.", ("topic",))
        self._bad = counter("bad_records", "Records rejected or dead-lettered, by reason.",
                            ("topic", "reason"))
        self._late = counter("late_records", "Records whose pane had already closed (late).",
                             ("topic",))
        self._lag = gauge("consumer_lag", "Records behind the partition's end offset.",
                          ("topic", "partition"))
        self._watermark = gauge("watermark_ms", "Event-time watermark of the partition "
                                "(epoch milliseconds).", ("topic", "partition"))
        self._panes = counter("pane_closes", "Panes closed (the window slid by one pane).",
                              ("model",))
        self._windows = counter("windows_judged", "Windows judged against the baseline.",
                                ("model",))
        self._score = gauge("score", "Value of the check on the last judged window.",
                            _CHECK_LABELS)
        self._threshold = gauge("threshold", "Effective threshold of the check: max(configured, "
                                "sampling-noise floor).", _CHECK_LABELS)
        self._active = gauge("skew_active", "1 while the check is in skew (between "
                             "skew_detected and skew_resolved), else 0.", _CHECK_LABELS)
        self._events = counter("events", "Skew events emitted.",
                               ("model", "feature", "check", "type", "severity"))
        self._kafka_errors = counter("kafka_errors", "Transient Kafka failures waited out "
                                     "(the service resumed from its last checkpoint).",
                                     ("error",))

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
        """Serve ``/metrics`` on ``host:port`` from a daemon thread; returns the bound port."""
        with self._lock:
            if self._server is not None:
                raise RuntimeError(f"metrics endpoint already running on port {self.port}")
            if self._requested_port is None:
                raise ValueError("no metrics port configured")
            try:
                server, thread = self._prom.start_http_server(
                    self._requested_port, addr=self.host, registry=self.registry)
            except OSError as exc:
                raise OSError(exc.errno, f"cannot serve metrics on {self.host}:"
                              f"{self._requested_port}: {exc.strerror}") from None
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

    # -- consuming ---------------------------------------------------------------------------

    def records(self, topic: str, n: int) -> None:
        """``n`` records consumed from ``topic``."""
        if n:
            self._records.labels(topic).inc(n)

    def bad_record(self, topic: str, reason: str) -> None:
        """One record of ``topic`` dead-lettered for ``reason`` (e.g. ``invalid_json``)."""
        self._bad.labels(topic, reason).inc()

    def late(self, topic: str, n: int) -> None:
        """``n`` records of ``topic`` arrived after their pane had closed."""
        if n:
            self._late.labels(topic).inc(n)

    def lag(self, topic: str, partition: int, value: int) -> None:
        """The partition is ``value`` records behind its end offset."""
        self._lag.labels(topic, str(partition)).set(value)

    def watermark(self, topic: str, partition: int, ms: int) -> None:
        """The partition's event-time watermark, epoch milliseconds."""
        self._watermark.labels(topic, str(partition)).set(ms)

    def forget_partition(self, topic: str, partition: int) -> None:
        """Drop the lag and watermark series of a partition this consumer no longer owns."""
        for gauge in (self._lag, self._watermark):
            with contextlib.suppress(KeyError):  # older prometheus-client raise on unknown
                gauge.remove(topic, str(partition))

    # -- judging -----------------------------------------------------------------------------

    def pane_closed(self, model: str) -> None:
        """A pane of ``model`` closed."""
        self._panes.labels(model).inc()

    def window_judged(self, model: str, results: Iterable[JudgedResult]) -> None:
        """A window of ``model`` was judged: update each judged check's score and threshold.

        Results not judged (too few values) or without a finite value leave the last score in
        place. ``skew_active`` gets a 0 series for every judged check, so it can be queried
        before the first event.
        """
        self._windows.labels(model).inc()
        for result in results:
            if not result.judged or not math.isfinite(result.value):
                continue
            labels = (model, result.feature, result.check, result.metric)
            self._score.labels(*labels).set(result.value)
            self._threshold.labels(*labels).set(result.threshold)
            self._active.labels(*labels)  # creates the series at 0, keeps a raised 1

    def event(self, event: SkewEvent) -> None:
        """A skew event was emitted: count it and raise/clear ``skew_active``."""
        self._events.labels(event.model, event.feature, event.check, event.type,
                            event.severity).inc()
        labels = (event.model, event.feature, event.check, event.metric)
        if event.type == "skew_detected":
            self._active.labels(*labels).set(1)
        elif event.type == "skew_resolved":
            self._active.labels(*labels).set(0)

    def kafka_error(self, error: str) -> None:
        """A transient Kafka failure (its exception name) was waited out."""
        self._kafka_errors.labels(error).inc()


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

    def records(self, topic: str, n: int) -> None:
        """Ignored."""

    def bad_record(self, topic: str, reason: str) -> None:
        """Ignored."""

    def late(self, topic: str, n: int) -> None:
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

    def kafka_error(self, error: str) -> None:
        """Ignored."""
