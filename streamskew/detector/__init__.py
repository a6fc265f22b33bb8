"""The engine: event-time panes, sliding windows, checks, hysteresis and events."""

from .engine import DEFAULT_MODEL, Detector, DetectorStats, WindowResult
from .events import SkewEvent

__all__ = ["DEFAULT_MODEL", "Detector", "DetectorStats", "SkewEvent", "WindowResult"]
