"""Baselines: every input format, kind inference, exact bins, the KLL path for columns with
many distinct values, bad lines, and the file round trip."""

from __future__ import annotations

import csv
import gzip
import json

import numpy as np
import pytest

from streamskew import Baseline, BaselineError, Config
from streamskew.baseline import build as baseline_module


def rows(n: int = 2000, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        out.append({"amount": round(float(rng.lognormal(3, 1)), 4),
                    "age": int(rng.integers(18, 90)),
                    "country": ["DE", "FR", "US", "NL"][int(rng.integers(0, 4))],
                    "zip": int(rng.integers(10000, 10050)),
                    "note": None if i % 10 == 0 else "ok"})
    return out


def write_csv(path, data):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(data[0]))
        writer.writeheader()
        for row in data:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})


def test_csv_jsonl_parquet_and_gzip_give_the_same_baseline(tmp_path):
    data = rows()
    write_csv(tmp_path / "t.csv", data)
    with gzip.open(tmp_path / "t.csv.gz", "wt", newline="") as handle:
        handle.write((tmp_path / "t.csv").read_text())
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r) for r in data) + "\n")
    envelope = [{"timestamp": 1, "model": "m", "features": r} for r in data]
    (tmp_path / "e.jsonl").write_text("\n".join(json.dumps(r) for r in envelope))
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(data), tmp_path / "t.parquet")
    built = {name: Baseline.build([tmp_path / name]) for name in
             ("t.csv", "t.csv.gz", "t.jsonl", "e.jsonl", "t.parquet")}
    ids = {name: b.id for name, b in built.items()}
    assert len(set(ids.values())) == 1, ids
    reference = built["t.csv"]
    assert reference.schema == {"amount": "numeric", "age": "numeric",
                                "country": "categorical", "zip": "numeric",
                                "note": "categorical"}
    assert reference.features["note"].missing_rate == pytest.approx(0.1)


def test_bins_are_exact_equal_mass_quantile_bins():
    rng = np.random.default_rng(1)
    values = rng.normal(0, 1, 20_000)
    baseline = Baseline.from_columns({"x": values.tolist()})
    feature = baseline.features["x"]
    assert len(feature.edges) == 101
    np.testing.assert_array_equal(feature.edges, np.quantile(values, np.linspace(0, 1, 101),
                                                             method="lower"))
    counts = feature.bin_counts
    assert counts[0] == counts[-1] == 0 and counts.sum() == 20_000
    inner, last = np.histogram(values, feature.edges)[0], counts[1:-1]
    np.testing.assert_array_equal(inner, last)
    assert counts[1:-1].max() <= 201  # equal mass: 200 per bin, +1 for the closed last edge
    assert feature.minimum == values.min() and feature.maximum == values.max()
    assert feature.mean == pytest.approx(values.mean(), rel=1e-12)
    assert feature.std == pytest.approx(values.std(ddof=1), rel=1e-9)


def test_many_distinct_values_use_kll_and_a_second_exact_pass(tmp_path, monkeypatch):
    """Past MAX_DISTINCT distinct values the edges come from KLL (normalized rank error
    ~0.33% at k=400, so each edge's rank is within ~1% of its target with overwhelming
    probability) while the bin counts stay exact (second pass)."""
    monkeypatch.setattr(baseline_module, "MAX_DISTINCT", 500)
    rng = np.random.default_rng(2)
    values = rng.lognormal(0, 1, 30_000)
    path = tmp_path / "big.csv"
    write_csv(path, [{"x": v} for v in values])
    config = Config.from_dict({"build": {"chunk_rows": 7000}})
    feature = Baseline.build([path], config).features["x"]
    np.testing.assert_array_equal(feature.bin_counts[1:-1],
                                  np.histogram(values, feature.edges)[0])
    ranks = np.searchsorted(np.sort(values), feature.edges) / len(values)
    targets = np.linspace(0, 1, len(feature.edges))
    assert np.abs(ranks - targets).max() < 0.01
    assert feature.minimum == values.min() and feature.maximum == values.max()


def test_kind_inference_and_overrides():
    columns = {"zip": [10115, 10117, 80331] * 100, "flag": [True, False, True] * 100,
               "mostly_numbers": ["1.5"] * 297 + ["n/a?", "2", "3"],
               "words": ["a", "b", "c"] * 100}
    inferred = Baseline.from_columns(columns).schema
    assert inferred == {"zip": "numeric", "flag": "categorical",
                        "mostly_numbers": "numeric", "words": "categorical"}
    config = Config.from_dict({"features": {"zip": {"kind": "categorical"},
                                            "words": {"ignore": True}}})
    configured = Baseline.from_columns(columns, config)
    assert configured.schema == {"zip": "categorical", "flag": "categorical",
                                 "mostly_numbers": "numeric"}
    assert configured.features["zip"].vocabulary == ("10115", "10117", "80331")
    assert Baseline.from_columns(columns).features["mostly_numbers"].invalid == 1


def test_categorical_vocabulary_tail_and_good_turing():
    values = ["a"] * 50 + ["b"] * 30 + ["c"] * 5 + ["d", "e", "f"]
    config = Config.from_dict({"build": {"max_categories": 2}})
    feature = Baseline.from_columns({"v": values}, config).features["v"]
    assert feature.vocabulary == ("a", "b")
    assert feature.vocabulary_counts.tolist() == [50, 30]
    assert feature.other_count == 8 and feature.known_tail == {"c", "d", "e", "f"}
    assert feature.singletons == 3 and feature.unseen_rate == pytest.approx(3 / 88)


def test_bad_lines_are_reported_with_file_and_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"x": 1}\n{"x": 2\n[1]\n\n{"x": 3}\n')
    baseline = Baseline.build([path])
    assert baseline.features["x"].count == 2
    assert baseline.skipped.counts == {"invalid JSON": 1, "not a JSON object": 1}
    assert any(e.startswith(f"{path}:2:") for e in baseline.skipped.examples)
    assert any(e.startswith(f"{path}:3:") for e in baseline.skipped.examples)


def test_csv_with_ragged_rows(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,x\n2\n3,y\n")
    baseline = Baseline.build([path])
    assert baseline.features["a"].count == 2
    assert baseline.skipped.examples == [
        f"{path}:3: wrong number of fields (1 where the header has 2)"]


@pytest.mark.parametrize(("name", "content", "message"), [
    ("t.txt", "a\n1\n", "unknown file type"),
    ("t.csv", "", "empty file"),
    ("t.csv", "a,a\n1,2\n", "names 'a' more than once"),
    ("t.csv", "a,,b\n1,2,3\n", "column 2 of the header row has no name"),
    ("t.parquet", "not parquet", "not a readable Parquet file"),
])
def test_unusable_files_say_what_to_do(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(BaselineError, match=message):
        Baseline.build([path])


def test_save_load_round_trip_and_bad_baseline_files(tmp_path):
    baseline = Baseline.from_columns({"x": list(range(500)), "c": ["a", "b"] * 250})
    path = tmp_path / "b.json"
    baseline.save(path)
    loaded = Baseline.load(path)
    assert loaded.id == baseline.id and loaded.schema == baseline.schema
    np.testing.assert_array_equal(loaded.features["x"].bin_counts,
                                  baseline.features["x"].bin_counts)
    assert loaded.features["c"].vocabulary == ("a", "b")
    assert "x" in loaded.describe() and "c" in loaded.describe()
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(BaselineError, match="streamskew baseline build"):
        Baseline.load(tmp_path / "bad.json")
    (tmp_path / "junk.json").write_text("{")
    with pytest.raises(BaselineError, match="invalid JSON"):
        Baseline.load(tmp_path / "junk.json")


def test_same_data_gives_the_same_baseline_id():
    data = {"x": np.random.default_rng(4).normal(size=5000).tolist()}
    assert Baseline.from_columns(data).id == Baseline.from_columns(data).id


def test_kll_edges_span_the_exact_training_range(monkeypatch):
    """The outer edges are the exact min and max even on the KLL path, so no training value
    lands in the under/overflow bins (those mean "out of range" when serving)."""
    monkeypatch.setattr(baseline_module, "MAX_DISTINCT", 100)
    values = np.random.default_rng(8).normal(10, 2, 50_000)
    feature = Baseline.from_columns({"x": values}).features["x"]
    assert feature.edges[0] == values.min() and feature.edges[-1] == values.max()
    assert feature.bin_counts[0] == feature.bin_counts[-1] == 0
    assert feature.bin_counts.sum() == len(values)
