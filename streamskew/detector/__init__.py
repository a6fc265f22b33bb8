"""The engine: event-time panes, sliding windows, checks, hysteresis and events.

Stage 1, :class:`PaneBuilder`: one source's records -> sealed panes. Stage 2,
:class:`Evaluator`: sealed panes of all sources -> windows -> events. :class:`Detector` wires
the two for a single source.
"""

from .builder import DEFAULT_MODEL, PaneBuilder, SealedPane
from .engine import Detector, DetectorStats
from .evaluator import Evaluator, WindowResult
from .events import SkewEvent

__all__ = ["DEFAULT_MODEL", "Detector", "DetectorStats", "Evaluator", "PaneBuilder",
           "SealedPane", "SkewEvent", "WindowResult"]
