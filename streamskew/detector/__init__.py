"""The engine: event time, panes, sliding windows, checks, hysteresis and events.

Per source, :class:`SourceClock` decides what each record is (on time, late, held) and
:class:`PaneBuilder` folds records into event-time panes and seals them. The
:class:`SourceCoordinator` decides, over every source, when a pane is complete and hands it
to the :class:`Evaluator` (panes -> windows -> checks -> events). :class:`Detector` is the
in-process front door.
"""

from .builder import DEFAULT_MODEL, PaneBuilder, SealedPane
from .clock import SourceClock
from .engine import DEFAULT_SOURCE, Detector, DetectorStats
from .evaluator import Evaluator, WindowResult
from .events import SkewEvent
from .sources import SourceCoordinator, SourceMark
from .window import BaselineMismatch

__all__ = ["DEFAULT_MODEL", "DEFAULT_SOURCE", "BaselineMismatch", "Detector", "DetectorStats",
           "Evaluator", "PaneBuilder", "SealedPane", "SkewEvent", "SourceClock",
           "SourceCoordinator", "SourceMark", "WindowResult"]
