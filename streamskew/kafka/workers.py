"""``streamskew run --workers N``: N detector processes of one consumer group, one machine.

One Python process does one core's worth of work: polling, JSON decoding and folding hold
the interpreter lock. A topic with several partitions is therefore read faster by several
processes, and Kafka already knows how to share partitions among the members of a consumer
group. ``run_workers`` starts ``N`` full :class:`~streamskew.kafka.service.DetectorService`
processes (spawned, not forked: kafka-python's threads and sockets do not survive a fork)
that join the same group; each owns some source partitions, and exactly one of them
evaluates (the panes topic has one partition). The result is the same as one process, or N
machines: same events, same event ids (DESIGN.md, "Kafka").

The parent only supervises: it relays each worker's alerts to ``on_event`` as they are
published, stops every worker when it is told to stop or when one of them fails, and sums
their statistics. Each worker has its own transactional id (``worker`` number in it), so a
restarted worker fences exactly its own predecessor. With a metrics port, worker ``i``
serves its own metrics on ``host:port + i``; scrape them all (Prometheus sums over targets).

More workers than CPU cores, or than source partitions, only adds rebalancing: a member
without partitions has nothing to do.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue as queue_module
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..baseline import Baseline
from ..config import Config
from ..detector.events import SkewEvent
from ..errors import StreamskewError
from .metrics import DEFAULT_HOST
from .service import DetectorService, ServiceStats

__all__ = ["WorkerError", "run_workers"]

log = logging.getLogger(__name__)

POLL_S = 0.2  # how often the parent looks at its stop flag and at dead workers


class WorkerError(StreamskewError, RuntimeError):
    """A worker process failed; the others were stopped."""


@dataclass(frozen=True)
class _Job:
    """What every worker needs; pickled to the spawned processes."""

    config: Config
    baselines: Baseline | Mapping[str, Baseline]
    bootstrap_servers: str | None
    until_end: bool
    checkpoint_interval_s: float
    max_poll_records: int
    metrics_port: int | None
    metrics_host: str
    log_settings: dict[str, Any]  # the parent's logging, repeated in each worker


def run_workers(config: Config, baselines: Baseline | Mapping[str, Baseline], workers: int,
                stop: threading.Event | None = None, *, bootstrap_servers: str | None = None,
                until_end: bool = False, checkpoint_interval_s: float = 1.0,
                max_poll_records: int = 5000, metrics_port: int | None = None,
                metrics_host: str = DEFAULT_HOST,
                on_event: Callable[[SkewEvent], None] | None = None,
                on_metrics: Callable[[int, int], None] | None = None) -> ServiceStats:
    """Run ``workers`` detector processes until ``stop`` is set, or, with ``until_end``, until
    all of them have finished; returns their summed statistics.

    ``on_event(event)`` is called in this process for every published alert, and
    ``on_metrics(worker, port)`` once per worker that serves metrics.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    from .. import logs

    job = _Job(config, baselines, bootstrap_servers, until_end, checkpoint_interval_s,
               max_poll_records, metrics_port, metrics_host, logs.settings())
    context = multiprocessing.get_context("spawn")
    halt = context.Event()
    messages: Any = context.Queue()
    processes = [context.Process(target=_worker_main, args=(i, job, halt, messages),
                                 name=f"streamskew-worker-{i}", daemon=True)
                 for i in range(workers)]
    for process in processes:
        process.start()
    stats = ServiceStats()
    finished: set[int] = set()
    errors: dict[int, str] = {}
    try:
        while len(finished) < workers:
            if stop is not None and stop.is_set():
                halt.set()
            try:
                kind, index, payload = messages.get(timeout=POLL_S)
            except queue_module.Empty:
                _notice_deaths(processes, finished, errors, halt)
                continue
            if kind == "event":
                stats.events.append(payload)
                if on_event is not None:
                    on_event(payload)
            elif kind == "metrics" and on_metrics is not None:
                on_metrics(index, payload)
            elif kind == "done":
                _add(stats, payload)
                finished.add(index)
            elif kind == "error":  # its own words beat "exited with code 1"
                errors[index] = f"worker {index}: {payload}"
                finished.add(index)
                halt.set()  # one failed: stop the others rather than run short-handed
    finally:
        halt.set()
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():
                process.terminate()
    if errors:
        raise WorkerError("; ".join(errors[i] for i in sorted(errors)))
    return stats


def _notice_deaths(processes: list[Any], finished: set[int], errors: dict[int, str],
                   halt: Any) -> None:
    """A worker that died without a word (killed, out of memory) fails the run. One that
    exited cleanly has its "done" still in the queue."""
    for index, process in enumerate(processes):
        if index not in finished and process.exitcode not in (None, 0):
            errors[index] = f"worker {index}: exited with code {process.exitcode}"
            finished.add(index)
            halt.set()


def _add(total: ServiceStats, part: ServiceStats) -> None:
    total.builders.merge(part.builders)
    total.windows += part.windows
    total.dead_letters += part.dead_letters
    total.transactions += part.transactions
    for mine, theirs in ((total.kafka_errors, part.kafka_errors),
                         (total.deleted_unread, part.deleted_unread)):
        for key, count in theirs.items():
            mine[key] = mine.get(key, 0) + count
    total.warnings.extend(w for w in part.warnings if w not in total.warnings)
    if part.labels is not None:  # the one worker that ran the label join at the end
        total.labels = part.labels


def _worker_main(index: int, job: _Job, halt: Any, messages: Any) -> None:
    """One worker process: a DetectorService that reports to the parent through a queue."""
    # Ctrl-C reaches every process of the terminal's group: finish cleanly, as one would.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: halt.set())
    threading.Thread(target=_stop_when_orphaned, args=(os.getppid(), halt), daemon=True,
                     name="streamskew-orphan-watch").start()
    from .. import logs
    from ..verdict import WindowWatch

    if job.log_settings:
        logs.configure(**job.log_settings)
    metrics = None
    try:
        if job.metrics_port is not None:
            from .metrics import ServiceMetrics

            metrics = ServiceMetrics(job.metrics_port + index if job.metrics_port else 0,
                                     job.metrics_host)
            messages.put(("metrics", index, metrics.start()))
        service = DetectorService(
            job.config, job.baselines, bootstrap_servers=job.bootstrap_servers,
            until_end=job.until_end, checkpoint_interval_s=job.checkpoint_interval_s,
            on_event=lambda event: messages.put(("event", index, event)), metrics=metrics,
            max_poll_records=job.max_poll_records, worker=index,
            on_window=WindowWatch(announce=True).on_window)
        stats = service.run(halt)
    except BaseException as exc:  # reported, then this worker exits non-zero
        said = str(exc) if isinstance(exc, StreamskewError) else f"{type(exc).__name__}: {exc}"
        messages.put(("error", index, said))
        raise SystemExit(1) from None
    finally:
        if metrics is not None:
            metrics.stop()
    stats.events = []  # already relayed one by one
    messages.put(("done", index, stats))


def _stop_when_orphaned(parent: int, halt: Any) -> None:
    """A parent killed outright cannot stop its workers: they notice and finish cleanly."""
    # Polls instead of halt.wait(): a process that exits while one of its threads waits on a
    # multiprocessing Event leaves the Event's waiter count behind, and the next set() in
    # another process then blocks for ever.
    while not halt.is_set():
        if os.getppid() != parent:
            halt.set()
        time.sleep(1.0)
