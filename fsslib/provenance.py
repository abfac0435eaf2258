"""Where and from which code a shipped checkpoint was made (recorded in its metadata JSON)."""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch

from fsslib.paths import PACKAGE_DIR


def git_commit() -> str:
    """``git rev-parse HEAD`` of the source tree, or "uncommitted".

    Flagged when fsslib/ has local changes; the shipped checkpoints (which a training run
    rewrites as it goes) do not count.
    """
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=PACKAGE_DIR.parent, capture_output=True, text=True, timeout=10)

    try:
        head, status = git("rev-parse", "HEAD"), git("status", "--porcelain", "--", "fsslib", ":(exclude)fsslib/checkpoints")
    except (OSError, subprocess.TimeoutExpired):
        return "uncommitted"
    if head.returncode != 0:
        return "uncommitted"
    return head.stdout.strip() + (" + uncommitted changes in fsslib/" if status.stdout.strip() else "")


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name with its vendor, family and model numbers (Linux's ``cpuinfo``, e.g. "AMD EPYC 9R14
    (AuthenticAMD family 25 model 17)": virtual machines often show a generic name), else what :mod:`platform`
    reports."""
    try:
        lines = cpuinfo.read_text().split("\n\n")[0].splitlines()  # the first processor's block
    except OSError:
        lines = []
    fields = {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in lines)}
    if "model name" not in fields:
        return platform.processor() or platform.machine()
    numbers = " ".join(f"{key} {fields[key]}" for key in ("cpu family", "model") if key in fields)
    return f"{fields['model name']} ({' '.join(filter(None, [fields.get('vendor_id'), numbers]))})"


def hardware(**extra: str) -> dict:
    """Where a run happened: platform, CPU model and the instruction set torch's kernels use (a same-seed run
    repeats bitwise only on the same kind of CPU), CPU cores and torch threads, torch and Python versions
    (+ ``extra``)."""
    return {"platform": platform.platform(), "processor": cpu_model(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), **extra}


def run_provenance(device: torch.device | str) -> dict:
    """What produced a result: torch version, fsslib commit (flagged when fsslib/ has local changes), device."""
    return {"torch": torch.__version__, "commit": git_commit(), "device": str(device)}
