"""Performance skew: delayed labels joined on the stream, and performance estimated before
they come.

- :mod:`.reference`: the validation performance stored in the baseline file;
- :mod:`.summary`, :mod:`.metrics`, :mod:`.cbpe`: mergeable pane summaries and the metrics
  (realized, and CBPE's expected ones) computed from them;
- :mod:`.floors`: the sampling-noise floors of every metric;
- :mod:`.join` (with :mod:`.table`, :mod:`.readers`): the bounded, hash-sampled label join;
- :mod:`.windows`: performance windows -> ``performance`` / ``estimated_performance`` events;
- :mod:`.monitor`: the two wired together in one process (what ``Detector`` uses).
"""

from .join import JoinCounts, LabelJoin, SealedPerformance
from .monitor import PerformanceMonitor
from .reference import ReferencePerformance
from .summary import PerformancePane
from .windows import ESTIMATED, PERFORMANCE, MetricResult, PerformanceWindow, PerformanceWindows

__all__ = ["ESTIMATED", "PERFORMANCE", "JoinCounts", "LabelJoin", "MetricResult",
           "PerformanceMonitor", "PerformancePane", "PerformanceWindow", "PerformanceWindows",
           "ReferencePerformance", "SealedPerformance"]
