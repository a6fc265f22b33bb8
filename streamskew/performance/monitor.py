"""Performance skew in one process: one label join and its windows, batch in, events out.

:class:`PerformanceMonitor` is what :class:`~streamskew.detector.engine.Detector` (and so
``streamskew detect --labels``) uses: requests and labels go to one
:class:`~streamskew.performance.join.LabelJoin`, whose sealed panes go straight to one
:class:`~streamskew.performance.windows.PerformanceWindows`. A deployment with several
processes runs a join per shard and the windows once, wired by the same calls (see the
README, "Performance skew").

>>> import random
>>> from streamskew import Baseline, Config
>>> rng = random.Random(1)
>>> rows = [rng.random() for _ in range(4000)]
>>> labels = [int(rng.random() < p) for p in rows]
>>> baseline = Baseline.from_columns({"prediction": rows, "y": labels}, label="y")
>>> config = Config.from_dict({"window": {"size": "10m", "pane": "10m"},
...                            "labels": {"max_delay": "1m", "min_labels": 100}})
>>> monitor = PerformanceMonitor(config, {"default": baseline})
>>> t0 = 1_764_324_000_000
>>> requests = [{"request_id": f"r{i}", "timestamp": t0 + i * 500,
...              "features": {}, "prediction": 1 - rows[i]} for i in range(3000)]
>>> events = monitor.add_requests(requests)  # scores inverted: a broken model
>>> events += monitor.add_labels([{"request_id": f"r{i}", "label": labels[i],
...                                "timestamp": t0 + i * 500 + 20_000} for i in range(3000)])
>>> events += monitor.finish()
>>> sorted({(e.check, e.metric) for e in events})[:2]  # CBPE cannot see it: the scores
[('performance', 'accuracy'), ('performance', 'f1')]
>>> monitor.counts.matched  # ... look as they did in validation; the labels tell
3000
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from ..baseline import Baseline
from ..config import Config
from ..detector.events import SkewEvent
from ..errors import StreamskewError
from ..records import BadRecord
from .join import JoinCounts, LabelJoin
from .windows import PerformanceWindow, PerformanceWindows

if TYPE_CHECKING:
    from .shipping import LabelArrays, RequestArrays

__all__ = ["LOCAL_SHARD", "PerformanceMonitor", "references_of"]

LOCAL_SHARD = "local"


def references_of(baselines: Mapping[str, Baseline]) -> dict[str, Any]:
    """Model -> reference performance, for the baselines that have one."""
    return {model: b.performance for model, b in baselines.items() if b.performance is not None}


class PerformanceMonitor:
    """One label join and its performance windows (module docs)."""

    def __init__(self, config: Config, baselines: Mapping[str, Baseline],
                 on_window: Callable[[PerformanceWindow], None] | None = None,
                 on_bad_label: Callable[[BadRecord], None] | None = None) -> None:
        references = references_of(baselines)
        if not references:
            raise StreamskewError("labels need a baseline with a reference performance: "
                                  "rebuild it on the validation set with `streamskew baseline "
                                  "build --label COL [--prediction COL]`")
        self.join = LabelJoin(config, references)
        self.windows = PerformanceWindows(config, baselines, on_window=on_window)
        self.windows.expect([LOCAL_SHARD])
        self.on_bad_label = on_bad_label
        self.label_ids = 0  # running number of label records (positions of bad ones)

    @property
    def counts(self) -> JoinCounts:
        return self.join.counts

    def add_requests(self, messages: Sequence[bytes | str | Mapping[str, Any]],
                     timestamps: Sequence[int] | np.ndarray | None = None,
                     source: str = "input") -> list[SkewEvent]:
        self.join.add_requests(messages, timestamps, source)
        return self._drain()

    def add_labels(self, records: Sequence[bytes | str | Mapping[str, Any]],
                   timestamps: Sequence[int] | np.ndarray | None = None,
                   ids: Sequence[int] | np.ndarray | None = None,
                   source: str = "labels") -> list[SkewEvent]:
        bad = self.join.add_labels(records, timestamps, source)
        if self.on_bad_label is not None:
            for record in bad:
                position = int(ids[record.position]) if ids is not None \
                    else self.label_ids + record.position
                self.on_bad_label(BadRecord(position, record.reason, record.detail,
                                            record.raw))
        self.label_ids += len(records)
        return self._drain()

    def add_request_keys(self, arrays: RequestArrays, source: str) -> list[SkewEvent]:
        """Requests as a Kafka source stage ships them (:mod:`.shipping`)."""
        self.join.add_request_keys(arrays.times, arrays.names, arrays.values, arrays.has_id,
                                   arrays.keys, source)
        return self._drain()

    def add_label_keys(self, arrays: LabelArrays, source: str) -> list[SkewEvent]:
        """Labels as a Kafka source stage ships them (:mod:`.shipping`)."""
        self.join.add_label_keys(arrays.keys, arrays.times, arrays.values, source, arrays.bad)
        return self._drain()

    def source_state(self, source: str, idle: bool, final: bool, labels: bool
                     ) -> list[SkewEvent]:
        """A source's heartbeat: idle (stops holding its clock back) or final; once every
        source is final, the input has ended (:meth:`finish`)."""
        if final:
            self.join.set_final(source, labels)
        else:
            self.join.set_idle(source, idle, labels)
        if self.join.all_final and not self.join.finished:
            return self.finish()
        return self._drain()

    def advance_requests(self, source: str, watermark: int) -> list[SkewEvent]:
        self.join.advance_requests(source, watermark)
        return self._drain()

    def finish(self) -> list[SkewEvent]:
        self.join.finish()
        return self._drain() + self.windows.flush()

    def _drain(self) -> list[SkewEvent]:
        for sealed in self.join.take():
            self.windows.add(sealed)
        return self.windows.progress(LOCAL_SHARD, *self.join.progress)

    def snapshot(self) -> bytes:
        """The join and the windows, to continue elsewhere (``restore``)."""
        join, windows = self.join.snapshot(), self.windows.snapshot()
        return orjson.dumps({"label_ids": self.label_ids, "join": len(join)}) + b"\n" + \
            join + windows

    def restore(self, data: bytes) -> None:
        head, _, body = data.partition(b"\n")
        header = orjson.loads(head)
        self.label_ids = header["label_ids"]
        self.join.restore(body[:header["join"]])
        self.windows.restore(body[header["join"]:])
