"""The suite's own guards (conftest.py, tests/conftest.py): a test past its time budget is listed after the run and
still passes; a hung test fails at its timeout, which for a test with a budget is ten times the budget. Run as an
inner pytest session under xdist, as ``make test`` runs the suite."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

INNER_TESTS = '''
import time

import pytest


@pytest.mark.budget(0.01)
def test_past_its_budget():
    time.sleep(0.2)


@pytest.mark.budget(40)
def test_within_its_budget_has_a_hang_guard_ten_times_it(request):
    assert request.node.get_closest_marker("timeout").args[0] == 400


@pytest.mark.budget(5)
def test_a_short_budget_has_the_hang_guard_s_floor(request):
    assert request.node.get_closest_marker("timeout").args[0] == 300


@pytest.mark.timeout(1)
def test_that_hangs():
    time.sleep(60)
'''


@pytest.mark.budget(30)
def test_a_slow_test_is_listed_not_failed_and_a_hang_fails(tmp_path):
    shutil.copy(REPO / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "tests").mkdir()
    shutil.copy(REPO / "tests" / "conftest.py", tmp_path / "tests" / "conftest.py")
    (tmp_path / "tests" / "test_inner.py").write_text(INNER_TESTS)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    budget(seconds): a time budget\n    slow: slow\n")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "2", "-p", "no:cacheprovider", "tests"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output  # the hang, and nothing else
    assert "1 failed, 3 passed" in output, output
    assert "FAILED tests/test_inner.py::test_that_hangs" in output and "Timeout" in output, output
    section = output.split("tests over their time budget (information, not a failure)")[1]
    assert "(budget 0.01 s)  tests/test_inner.py::test_past_its_budget" in section, output
    assert "test_within_its_budget" not in section, output


def test_a_notebook_kernel_that_does_not_answer_is_started_again_then_fails():
    """conftest.py wraps nbval's kernel start: a kernel that did not answer is started once more (with a warning),
    and one that never answers still fails the notebook."""
    import importlib.util

    import nbval.kernel

    assert hasattr(nbval.kernel.start_new_kernel, "__wrapped__")  # installed in this session by pytest_configure
    spec = importlib.util.spec_from_file_location("root_conftest", REPO / "conftest.py")
    root = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(root)
    starts = []

    def silent_once(**kwargs):
        starts.append(kwargs)
        if len(starts) == 1:
            raise RuntimeError("Kernel didn't respond in 60 seconds")
        return "manager", "client"

    with pytest.warns(UserWarning, match="it was started again"):
        assert root.start_kernel_retrying(silent_once)(kernel_name="python3") == ("manager", "client")
    assert starts == [{"kernel_name": "python3"}] * 2

    def silent(**kwargs):
        raise RuntimeError("Kernel didn't respond in 60 seconds")

    with pytest.raises(RuntimeError, match="didn't respond"), pytest.warns(UserWarning):
        root.start_kernel_retrying(silent)()
