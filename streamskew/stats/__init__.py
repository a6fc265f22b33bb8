"""Distances between a serving window and the baseline, and the sampling-noise floor."""

from .distances import DISTANCES, distance
from .noise import NoiseFloors, rate_floor

__all__ = ["DISTANCES", "NoiseFloors", "distance", "rate_floor"]
