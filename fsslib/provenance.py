"""Where and from which code a shipped checkpoint was made (recorded in its metadata JSON)."""
from __future__ import annotations

import os
import platform
import re
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


# The CPU's instruction sets that MKL (matrix products) and oneDNN (convolutions) choose their kernels by
VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")


def cpu_fields(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, str]:
    """The first processor's fields of Linux's ``cpuinfo`` (empty elsewhere)."""
    try:
        lines = cpuinfo.read_text().split("\n\n")[0].splitlines()
    except OSError:
        return {}
    return {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in lines)}


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name with its vendor, family and model numbers (Linux's ``cpuinfo``, e.g. "AMD EPYC 9R14
    (AuthenticAMD cpu family 25 model 17)": virtual machines often show a generic name), else what :mod:`platform`
    reports."""
    fields = cpu_fields(cpuinfo)
    if "model name" not in fields:
        return platform.processor() or platform.machine()
    numbers = " ".join(f"{key} {fields[key]}" for key in ("cpu family", "model") if key in fields)
    return f"{fields['model name']} ({' '.join(filter(None, [fields.get('vendor_id'), numbers]))})"


def cpu_line(model: str) -> str:
    """The product line of a :func:`cpu_model` string (``AMD EPYC``, ``Intel Xeon``), else the string itself."""
    return next((line for line in ("AMD EPYC", "Intel Xeon") if line.split()[1] in model), model)


def vector_instructions(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """Which of :data:`VECTOR_FLAGS` the CPU offers (Linux's ``cpuinfo``; empty elsewhere)."""
    offered = set(cpu_fields(cpuinfo).get("flags", "").split())
    return [flag for flag in VECTOR_FLAGS if flag in offered]


def cpu_kind(model: str) -> str:
    """A :func:`cpu_model` string as pages and logs group machines: the CPU's line and, where ``/proc/cpuinfo``
    gives them, its family and model (two EPYCs of other generations differ in speed), e.g. "AMD EPYC (family 26
    model 2)"."""
    line = cpu_line(model)
    generation = re.search(r"family (\d+) model (\d+)", model)
    return f"{line} (family {generation[1]} model {generation[2]})" if generation and line != model else line


def hardware(**extra: str) -> dict:
    """Where a run happened: platform; the CPU's model, the vector instruction sets it offers (MKL's and oneDNN's
    kernels depend on them) and the one torch's own kernels use (a same-seed run is sure to repeat bitwise only on
    the same kind of CPU); CPU cores and torch threads; torch and Python versions (+ ``extra``)."""
    return {"platform": platform.platform(), "processor": cpu_model(), "vector_instructions": vector_instructions(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), **extra}


def trained_on(spans: list[dict], epoch: int, processor: str | None = None) -> list[dict]:
    """``spans`` (which CPU trained which epochs of a run, in order: ``{"processor", "epochs": [first, last]}``) with
    epoch ``epoch`` added as trained on ``processor`` (this machine's :func:`cpu_model` unless given): the last span
    grows when the same CPU continues it, else a new span starts. A run resumed on another machine (a sitting on
    another kind of CPU) so records where each part of it trained. The epoch must follow the last span's."""
    processor = processor or cpu_model()
    if spans and epoch != spans[-1]["epochs"][1] + 1:
        raise ValueError(f"epoch {epoch} does not follow the recorded epochs {spans[-1]['epochs']}")
    if spans and spans[-1]["processor"] == processor:
        return [*spans[:-1], {"processor": processor, "epochs": [spans[-1]["epochs"][0], epoch]}]
    return [*spans, {"processor": processor, "epochs": [epoch, epoch]}]


def first_epochs_processor(record: dict) -> str | None:
    """The CPU that trained a run's first epoch, from its record: its ``trained_on`` spans where they start at
    epoch 1, else (a record of one sitting, or from before runs recorded the spans) its ``hardware``; None when
    neither says (a run resumed from a checkpoint that predates the spans)."""
    spans = record.get("trained_on")
    if spans:
        return spans[0]["processor"] if spans[0]["epochs"][0] == 1 else None
    return record.get("hardware", {}).get("processor")


def trained_on_processors(record: dict) -> list[str]:
    """Every CPU that trained a run, in the order of its epochs (``trained_on``; else its ``hardware``; else none)."""
    spans = record.get("trained_on")
    if spans:
        return list(dict.fromkeys(span["processor"] for span in spans))
    processor = record.get("hardware", {}).get("processor")
    return [processor] if processor else []


def run_provenance(device: torch.device | str) -> dict:
    """What produced a result: torch version, fsslib commit (flagged when fsslib/ has local changes), device and the
    machine's CPU (a same-seed run is sure to repeat bitwise only on the same kind)."""
    return {"torch": torch.__version__, "commit": git_commit(), "device": str(device), "processor": cpu_model()}
