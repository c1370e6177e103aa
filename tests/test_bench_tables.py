"""The benchmark tables of README.md and docs/benchmarks.md are generated
from the committed JSON under benchmarks/results/ (benchmarks/make_tables.py),
and cite only lab methods and columns that the `fastio` command prints.

These tests never time anything: they check that the markdown is what the
generator makes of the committed figures, and that the figures carry their
conditions and spread.
"""
import glob
import importlib.util
import json
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")
RESULTS = os.path.join(BENCH, "results")


def _make_tables():
    spec = importlib.util.spec_from_file_location("make_tables",
                                                  os.path.join(BENCH, "make_tables.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def mt():
    return _make_tables()


def _block(text, mt):
    assert mt.BEGIN in text and mt.END in text
    return text.split(mt.BEGIN, 1)[1].split(mt.END, 1)[0]


def test_markdown_is_what_make_tables_generates(mt):
    for path, text in mt.generate(ROOT).items():
        with open(path) as fh:
            committed = fh.read()
        assert committed == text, (
            f"{os.path.relpath(path, ROOT)} differs from what benchmarks/make_tables.py "
            "generates from benchmarks/results/*.json: run `python benchmarks/make_tables.py` "
            "(and never edit the tables by hand)")


def test_results_carry_conditions_and_spread():
    files = sorted(glob.glob(os.path.join(RESULTS, "*.json")))
    scripts = [f for f in files if os.path.basename(f) != "lab.json"]
    assert scripts, "no committed benchmark results"
    for f in scripts:
        with open(f) as fh:
            d = json.load(fh)
        name = os.path.basename(f)
        for key in ("command", "date", "machine", "cache", "params", "figures", "ratios"):
            assert key in d, (name, key)
        for key in ("cpu", "cpus", "kernel", "loadavg", "python", "numpy", "fastio"):
            assert key in d["machine"], (name, key)
        assert d["command"].startswith("python benchmarks/"), (name, d["command"])
        assert d["figures"], name
        for fid, fig in d["figures"].items():
            assert fig["values"], (name, fid)
            assert fig["min"] <= fig["median"] <= fig["max"], (name, fid)
        for rid, r in d["ratios"].items():
            assert r["fastio"] in d["figures"] and r["baseline"] in d["figures"], (name, rid)
            assert r["per_round"] and r["min"] <= r["median"] <= r["max"], (name, rid)


def test_readme_rows_name_what_the_lab_prints(mt):
    """README's lab rows name methods of fastio.lab's registry and columns of
    the table that `fastio` prints (its header, from fastio.lab.results, on
    the committed lab JSON): renaming either fails here until the table is
    regenerated."""
    from fastio import lab
    lab_json = os.path.join(RESULTS, "lab.json")
    assert os.path.exists(lab_json), "benchmarks/results/lab.json (fastio --json) is missing"
    with open(lab_json) as fh:
        res = lab.Results.from_json(fh.read())
    header = mt.lab_header(res)
    with open(os.path.join(ROOT, "README.md")) as fh:
        block = _block(fh.read(), mt)
    rows = [line for line in block.splitlines() if "the lab's default run" in line]
    assert rows, "README's table has no row from the lab's JSON"
    for line in rows:
        cols = re.search(r"\(columns ([^)]*)\)", line)
        assert cols, line
        for col in cols.group(1).split(", "):
            assert col in header, f"README cites column {col!r}; the CLI prints {header}"
        cells = [c.strip() for c in line.strip("|").split("|")]
        for cell in cells[2:4]:  # baseline, fastio: method names in backticks
            name = cell.strip("`")
            assert name in lab.METHODS, f"README cites lab method {name!r}, which is gone"
    with open(os.path.join(ROOT, "docs", "benchmarks.md")) as fh:
        block = _block(fh.read(), mt)
    for line in block.splitlines():
        m = re.match(r"\| ([\w.]+) \| ([\w.]+) \| ", line)
        if m and "." in line and line.count("|") == 6 and m.group(1) != "method":
            assert m.group(1) in lab.METHODS and m.group(2) in lab.METHODS, line


def test_scripts_use_the_installed_fastio_and_write_json():
    for path in glob.glob(os.path.join(BENCH, "*.py")):
        with open(path) as fh:
            src = fh.read()
        assert "sys.path.insert" not in src and "sys.path.append" not in src, path
        if os.path.basename(path).startswith("bench_") and \
                os.path.basename(path) != "bench_lab_isolation.py":
            assert "add_json_argument(" in src, f"{path} writes no JSON"
