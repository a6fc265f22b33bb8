"""Raise/resolve hysteresis, so a value hovering at the threshold does not flap."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Hysteresis"]


@dataclass
class Hysteresis:
    """State of one check: raise after ``raise_after`` windows above the threshold, resolve
    after ``resolve_after`` windows below ``resolve_ratio * threshold``.

    >>> h = Hysteresis(raise_after=1, resolve_after=2, resolve_ratio=0.8)
    >>> [h.observe(v, 0.1) for v in (0.05, 0.12, 0.09, 0.07, 0.07)]
    [None, 'skew_detected', None, None, 'skew_resolved']
    """

    raise_after: int = 1
    resolve_after: int = 2
    resolve_ratio: float = 0.8
    active: bool = False
    streak: int = 0

    def observe(self, value: float, threshold: float) -> str | None:
        """Feed one judged window; returns the event type when the state changes."""
        if not self.active:
            self.streak = self.streak + 1 if value > threshold else 0
            if self.streak >= self.raise_after:
                self.active, self.streak = True, 0
                return "skew_detected"
            return None
        self.streak = self.streak + 1 if value < threshold * self.resolve_ratio else 0
        if self.streak >= self.resolve_after:
            self.active, self.streak = False, 0
            return "skew_resolved"
        return None
