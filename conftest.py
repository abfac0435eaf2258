"""Environment for the whole test run (tests/ and the nbval notebooks), set before any kernel starts."""
import functools
import json
import os
import resource
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("FSSLIB_DATA", str(Path(tempfile.gettempdir()) / "fsslib-test-data"))
os.environ["FSSLIB_SMOKE"] = "1"  # the papermill grid tests pick tiny settings; the lessons do not (below)
os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may download
for name in ("FSSLIB_ZOO", "FSSLIB_WEIGHTS"):  # a user's own zoo or weights would change what the tests load
    os.environ.pop(name, None)
os.environ.setdefault("MPLBACKEND", "Agg")
if "PYTEST_XDIST_WORKER" in os.environ:  # `make test` runs one worker per core: one thread each
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"


def pytest_xdist_make_scheduler(config, log):
    """Under ``pytest -n N``: each notebook's nbval cells go to one worker, in order (they share one
    kernel); every other test is a unit of its own, as in ``--dist load``. (``--dist loadgroup`` with
    ``xdist_group`` marks did not group with pytest 9.2 and pytest-xdist 3.8.)"""
    from xdist.scheduler import LoadScopeScheduling

    class NotebookScopes(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return nodeid.split("::")[0] if ".ipynb::" in nodeid else nodeid

    return NotebookScopes(config, log)


def pytest_collection_modifyitems(config, items):
    """Slow tests first, then the notebooks, then the rest (a stable sort: a notebook's cells keep their order).
    Under ``-n N`` the workers take the long units first and the short ones fill in at the end, so both
    finish together instead of one waiting on a long test picked up last.

    A test with a time budget gets a hang guard of ``HANG_FACTOR`` times it (at least ``HANG_FLOOR_S``); every
    other test has the ini file's ``timeout``. Only a hang reaches these: a busy machine makes tests two or
    three times slower, never ten."""
    def rank(item) -> int:
        if item.get_closest_marker("slow"):
            return 0
        return 1 if ".ipynb::" in item.nodeid else 2

    items.sort(key=rank)
    for item in items:
        budget = item.get_closest_marker("budget")
        if budget is not None and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(max(HANG_FACTOR * budget.args[0], HANG_FLOOR_S)))


HANG_FACTOR = 10
HANG_FLOOR_S = 300  # a test past its budget 25 times on a busy machine is still no hang
OVER_BUDGET: list[tuple[str, float, float]] = []  # (test, seconds, budget), collected on the controller


def pytest_runtest_logreport(report):
    """Collect the tests that ran past their budget (tests/conftest.py's ``budget`` fixture marks them); under
    xdist the workers' reports arrive here with their ``user_properties``."""
    if report.when == "teardown":
        OVER_BUDGET.extend((report.nodeid, *value) for key, value in report.user_properties if key == "over_budget")


def pytest_terminal_summary(terminalreporter):
    """List the tests over their time budget: information about the machine's load or a test grown slow, not
    a failure (the exit status is unchanged)."""
    if OVER_BUDGET:
        terminalreporter.section("tests over their time budget (information, not a failure)")
        for nodeid, elapsed, budget in sorted(OVER_BUDGET, key=lambda row: row[2] - row[1]):
            terminalreporter.write_line(f"{elapsed:6.1f} s  (budget {budget:g} s)  {nodeid}")


KERNEL_START_TRIES = 2


def pytest_configure(config):
    """nbval's kernels start through :func:`start_kernel_retrying`."""
    try:
        import nbval.kernel
    except ImportError:  # a run without nbval: nothing to guard
        return
    if not hasattr(nbval.kernel.start_new_kernel, "__wrapped__"):
        nbval.kernel.start_new_kernel = start_kernel_retrying(nbval.kernel.start_new_kernel)


def start_kernel_retrying(start: Callable, tries: int = KERNEL_START_TRIES) -> Callable:
    """nbval's ``start_new_kernel``, tried again when the kernel does not answer in time. nbval starts a notebook's
    kernel once and fails every cell if it has not replied within 60 s; it then shuts that kernel down. Once, a
    kernel stayed alive and silent for 60 s on a quiet machine with a core idle (its stderr is discarded, so the
    cause is unknown): no behaviour of the lesson was wrong. A kernel that never answers still fails, after
    ``tries`` starts; each retry is reported as a warning."""
    @functools.wraps(start)
    def start_new_kernel(*args, **kwargs):
        for attempt in range(1, tries + 1):
            try:
                return start(*args, **kwargs)
            except RuntimeError as error:  # "Kernel didn't respond in 60 seconds": that kernel is shut down
                if attempt == tries:
                    raise
                warnings.warn(f"a notebook's kernel did not start ({error}); it was started again", stacklevel=2)
    return start_new_kernel


def timeline_folder() -> str | None:
    """The folder of ``FSSLIB_TEST_TIMELINE`` (benchmarks/suite_timeline.py reads where time went) for the outermost
    test session and its xdist workers; None for a pytest that a test starts (it inherits the variable)."""
    folder = os.environ.get("FSSLIB_TEST_TIMELINE")
    session = os.environ.get("FSSLIB_TEST_TIMELINE_SESSION")
    if not folder:
        return None
    if session is None:  # the outermost session: its workers inherit its pid
        os.environ["FSSLIB_TEST_TIMELINE_SESSION"] = str(os.getpid())
        return folder
    return folder if "PYTEST_XDIST_WORKER" in os.environ and session == str(os.getppid()) else None


TIMELINE = timeline_folder()


def cpu_seconds() -> float:
    """User and system CPU seconds of this process and of the child processes it has waited for."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """With ``FSSLIB_TEST_TIMELINE`` set, each test's start and end (setup to teardown) and the CPU seconds it used
    (:func:`cpu_seconds`: a notebook's kernel counts when it ends, at the notebook's last cell) go to
    ``<folder>/<worker>.jsonl``, where the test ran (observation only: the test is unchanged)."""
    start, cpu_before = time.time(), cpu_seconds() if TIMELINE else 0.0
    yield
    if TIMELINE:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        record = {"test": item.nodeid, "start": start, "end": time.time(), "cpu": cpu_seconds() - cpu_before}
        with open(Path(TIMELINE) / f"{worker}.jsonl", "a") as log:
            log.write(json.dumps(record) + "\n")


# 90_train_eval is the grids' parameterised template, run by the grid tests; nbval runs the lessons and solutions
collect_ignore = ["notebooks/90_train_eval.ipynb"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    """A notebook's kernel starts at the setup of its first cell: without ``FSSLIB_SMOKE``, so that nbval runs the
    lesson at the full settings its committed outputs were made at (``python -m fsslib.lessons``) and compares
    them; the variable is back for the tests that follow on this worker."""
    saved = os.environ.pop("FSSLIB_SMOKE", None) if ".ipynb::" in item.nodeid else None
    try:
        yield
    finally:
        if saved is not None:
            os.environ["FSSLIB_SMOKE"] = saved
