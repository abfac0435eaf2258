"""The suite's timeline (benchmarks/suite_timeline.py and conftest.py's FSSLIB_TEST_TIMELINE records)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
    assert "| seconds in tests, all workers | 18 |" in lines and "| the workers' last ends, apart | 2 s |" in lines
    assert lines.index("| notebooks/01.ipynb | 10.0 |") < lines.index("| tests/test_a.py::test_waits | 6.0 |")
    by_file = lines.index("| file | seconds |") + 2
    assert lines[by_file:by_file + 2] == ["| notebooks/01.ipynb | 10.0 |", "| tests/test_a.py | 8.0 |"]
    assert "The files with the most test-seconds (of 18):" in lines
    assert "| seconds in their cells | 10 |" in lines
    assert "| seconds in their first cells (the kernel's imports) | 4 |" in lines
    assert lines[-1] == "notebooks/01.ipynb (3), tests/test_a.py::test_waits (2)"
    assert not any("CPU" in line for line in lines)  # records without CPU seconds: no CPU rows
    for test, cpu in zip(tests, (3.0, 1.0, 6.0, 1.5)):
        test["cpu"] = cpu
    lines = suite_timeline.summarize(tests, samples, cores=2)
    assert "| CPU seconds in tests, all workers (with the processes they started) | 12 |" in lines
    assert "| that CPU over the 2 cores: the least time the tests could take here | 6 s |" in lines
    by_cpu = lines.index("| unit | CPU seconds |") + 2
    assert lines[by_cpu:by_cpu + 3] == ["| tests/test_a.py::test_waits | 6.0 |", "| notebooks/01.ipynb | 4.0 |",
                                        "| tests/test_a.py::test_b | 1.5 |"]


def test_conftest_records_the_outer_session_s_tests_and_not_a_pytest_a_test_starts(tmp_path):
    (tmp_path / "test_one.py").write_text("def test_one():\n    pass\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FSSLIB_TEST_TIMELINE", "PYTEST_XDIST"))}

    def pytest_with_the_repository_s_conftest(folder: Path, **variables: str) -> None:
        folder.mkdir()
        ran = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "conftest",
                              str(tmp_path / "test_one.py")], cwd=REPO, capture_output=True, text=True,
                             env={**env, "FSSLIB_TEST_TIMELINE": str(folder), **variables})
        assert ran.returncode == 0, ran.stdout[-2000:]

    pytest_with_the_repository_s_conftest(tmp_path / "outer")
    records = [json.loads(line) for line in (tmp_path / "outer" / "main.jsonl").read_text().splitlines()]
    assert [r["test"].split("::")[-1] for r in records] == ["test_one"] and records[0]["start"] <= records[0]["end"]
    assert 0 <= records[0]["cpu"] < 60  # the CPU seconds of a test that does nothing
    pytest_with_the_repository_s_conftest(tmp_path / "nested", FSSLIB_TEST_TIMELINE_SESSION=str(os.getpid()))
    assert not list((tmp_path / "nested").iterdir())  # started by a test of another session: it writes nothing


FAKE_SUITE = """
import json, os, time
with open(os.path.join(os.environ["FSSLIB_TEST_TIMELINE"], "gw0.jsonl"), "w") as log:
    log.write(json.dumps({"test": "tests/test_x.py::test_x", "start": time.time(), "end": time.time()}) + "\\n")
print("  12.0 s  (budget 5 s)  tests/test_x.py::test_x")
print("3 passed, 1 skipped, 2 warnings in 93.00s (0:01:33)")
"""


def test_log_appends_the_run_to_the_quiet_or_the_under_load_log(tmp_path, monkeypatch):
    """``--log`` writes the host, commit, conditions, pytest's counts and the times; ``--busy`` sends the row to the
    under-load log with the number of tests past their budgets."""
    script = tmp_path / "fake_suite.py"
    script.write_text(FAKE_SUITE)
    quiet, loaded = tmp_path / "suite_runs.md", tmp_path / "suite_under_load.md"
    monkeypatch.setattr(suite_timeline, "QUIET_LOG", quiet)
    monkeypatch.setattr(suite_timeline, "LOAD_LOG", loaded)
    monkeypatch.setattr(suite_timeline, "REPO", tmp_path.parent)
    monkeypatch.setattr(suite_timeline, "host_speed", lambda: 1.5)  # five torch imports: measured below on "pass"
    command = f"{sys.executable} {script}"
    suite_timeline.main(["--command", command, "--out", str(tmp_path / "t.md"), "--log", "quiet, a test"])
    suite_timeline.main(["--command", command, "--out", str(tmp_path / "t.md"), "--log", "a test", "--busy", "1"])
    assert f"| host | {suite_timeline.cpu_kind(suite_timeline.cpu_model())} |" in (tmp_path / "t.md").read_text()
    (row,) = quiet.read_text().splitlines()
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[2:6] == ["quiet, a test", "3 passed, 1 skipped", "1.6", "93"] and cells[-2:] == ["the command", "1.50"]
    (row,) = loaded.read_text().splitlines()
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[2:5] == ["1 CPU-bound process, a test", "3 passed, 1 skipped", "1.6"] and cells[-1] == "1"
    script.write_text(FAKE_SUITE + "raise SystemExit(1)\n")  # a failing suite: the run is logged, and fails
    with pytest.raises(SystemExit) as failed:
        suite_timeline.main(["--command", command, "--out", str(tmp_path / "t.md"), "--log", "failing"])
    assert failed.value.code == 1 and quiet.read_text().splitlines()[-1].split(" | ")[2] == "failing"
    intel = "Intel(R) Xeon(R) Processor (GenuineIntel cpu family 6 model 167)"
    assert suite_timeline.cpu_kind(intel) == "Intel Xeon (family 6 model 167)"
    amd = "AMD EPYC 9R14 (AuthenticAMD cpu family 25 model 17)"
    assert suite_timeline.cpu_kind(amd) == "AMD EPYC (family 25 model 17)"
    assert suite_timeline.cpu_kind("AMD EPYC") == "AMD EPYC" and suite_timeline.cpu_kind("arm64") == "arm64"


def test_the_host_s_speed_is_the_median_cpu_time_of_fresh_interpreters():
    """Interpreters that do nothing take a positive median CPU time, less than those that also spin 0.3 CPU-seconds."""
    idle = suite_timeline.host_speed("pass", repeats=3)
    spin = "import time\nstart = time.process_time()\nwhile time.process_time() - start < 0.3: pass"
    busy = suite_timeline.host_speed(spin, repeats=3)
    assert 0 < idle < busy and busy >= 0.3
