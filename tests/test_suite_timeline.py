"""The suite's timeline (benchmarks/suite_timeline.py and conftest.py's FSSLIB_TEST_TIMELINE records)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "suite_timeline.py"
spec = importlib.util.spec_from_file_location("suite_timeline", SCRIPT)
suite_timeline = importlib.util.module_from_spec(spec)
spec.loader.exec_module(suite_timeline)


def test_the_report_sums_a_notebook_s_cells_and_names_units_running_while_idle():
    tests = [{"test": "notebooks/01.ipynb::Cell 0", "start": 0.0, "end": 4.0, "worker": "gw0"},
             {"test": "notebooks/01.ipynb::Cell 1", "start": 4.0, "end": 10.0, "worker": "gw0"},
             {"test": "tests/test_a.py::test_waits", "start": 0.0, "end": 6.0, "worker": "gw1"},
             {"test": "tests/test_a.py::test_b", "start": 6.0, "end": 8.0, "worker": "gw1"}]
    samples = [(1.0, 2.0), (3.0, 1.2), (5.0, 1.4), (7.0, 2.0), (9.0, 1.0), (11.0, 0.1)]  # the last after the tests
    lines = suite_timeline.summarize(tests, samples, cores=2)
    assert "| tests run from first start to last end | 10 s |" in lines
    assert "| cores busy while tests ran (mean, of 2) | 1.52 |" in lines  # the 5 samples inside the run
    assert "| seconds with at least half a core idle while tests ran | 3 |" in lines
    assert "| worker gw0: tests, seconds in tests, last end after the first start | 2, 10 s, 10 s |" in lines
    assert lines.index("| notebooks/01.ipynb | 10.0 |") < lines.index("| tests/test_a.py::test_waits | 6.0 |")
    assert lines[-1] == "notebooks/01.ipynb (3), tests/test_a.py::test_waits (2)"


def test_conftest_records_each_test_where_it_ran_when_asked(tmp_path):
    test = "tests/test_suite_timeline.py::test_the_report_sums_a_notebook_s_cells_and_names_units_running_while_idle"
    env = {**os.environ, "FSSLIB_TEST_TIMELINE": str(tmp_path)}
    env.pop("PYTEST_XDIST_WORKER", None)
    ran = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test], cwd=REPO, env=env,
                         capture_output=True, text=True)
    assert ran.returncode == 0, ran.stdout[-2000:]
    records = [json.loads(line) for line in (tmp_path / "main.jsonl").read_text().splitlines()]
    assert [r["test"] for r in records] == [test] and records[0]["start"] <= records[0]["end"]
