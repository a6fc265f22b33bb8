"""Baselines: the training data's per-feature summary (:mod:`.model`) and how it is built
from files or columns (:mod:`.build`, imported only when building)."""

from .model import (
    SCHEMA,
    Baseline,
    BaselineError,
    CategoricalBaseline,
    FeatureBaseline,
    NumericBaseline,
)

__all__ = ["SCHEMA", "Baseline", "BaselineError", "CategoricalBaseline", "FeatureBaseline",
           "NumericBaseline"]
