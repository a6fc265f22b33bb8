"""streamskew: catch training-serving skew in production ML as it happens.

The in-process API::

    from streamskew import Baseline, Config, Detector

    baseline = Baseline.build(["train.csv"])            # or Baseline.load("baseline.json")
    detector = Detector(Config.from_toml("streamskew.toml"), baseline)
    events = detector.process(messages)                  # bytes, JSON text or dicts
    events += detector.flush()                           # end of input
"""

from .baseline import Baseline, BaselineError
from .config import Config, ConfigError
from .detector import Detector, SkewEvent
from .records import BadRecord

__all__ = ["BadRecord", "Baseline", "BaselineError", "Config", "ConfigError", "Detector",
           "SkewEvent"]
__version__ = "0.1.0"
