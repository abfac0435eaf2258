"""What a run records about the machine that made it (fsslib.provenance)."""
from __future__ import annotations

import platform
from pathlib import Path

import pytest
import torch

from fsslib.provenance import (cpu_model, first_epochs_processor, hardware, trained_on, trained_on_processors,
                               vector_instructions)


def test_the_cpu_model_is_read_from_cpuinfo_and_falls_back_to_platform(tmp_path: Path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
                       "model name\t: AMD EPYC 9R14\nflags\t\t: fpu avx2\n\n"
                       "processor\t: 1\nmodel name\t: AMD EPYC 9R14\n")
    assert cpu_model(cpuinfo) == "AMD EPYC 9R14 (AuthenticAMD cpu family 25 model 17)"
    assert cpu_model(tmp_path / "missing") == (platform.processor() or platform.machine())
    assert vector_instructions(cpuinfo) == ["avx2"] and vector_instructions(tmp_path / "missing") == []


def test_hardware_names_the_cpu_and_the_instruction_set_torch_uses():
    record = hardware(note="x")
    assert record["processor"] == cpu_model() and record["note"] == "x"
    assert record["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert record["vector_instructions"] == vector_instructions()
    assert record["torch_threads"] == torch.get_num_threads() and record["torch"] == torch.__version__


AMD, XEON = "AMD EPYC 9R14 (AuthenticAMD cpu family 25 model 17)", "Intel(R) Xeon(R) Processor (GenuineIntel ...)"


def test_trained_on_grows_a_span_on_the_same_cpu_and_starts_one_on_another():
    spans = trained_on(trained_on([], 1, AMD), 2, AMD)
    assert spans == [{"processor": AMD, "epochs": [1, 2]}]
    spans = trained_on(trained_on(spans, 3, XEON), 4, XEON)  # resumed on another machine
    assert spans == [{"processor": AMD, "epochs": [1, 2]}, {"processor": XEON, "epochs": [3, 4]}]
    assert trained_on(spans, 5, AMD)[-1] == {"processor": AMD, "epochs": [5, 5]}  # and back: a third span
    assert trained_on([], 7) == [{"processor": cpu_model(), "epochs": [7, 7]}]  # this machine's by default
    with pytest.raises(ValueError, match="does not follow"):
        trained_on(spans, 6, XEON)


def test_a_record_names_the_cpu_of_its_first_epochs_and_every_cpu_that_trained_it():
    mixed = {"hardware": {"processor": XEON},
             "trained_on": [{"processor": AMD, "epochs": [1, 2]}, {"processor": XEON, "epochs": [3, 4]}]}
    assert first_epochs_processor(mixed) == AMD and trained_on_processors(mixed) == [AMD, XEON]
    one_sitting = {"hardware": {"processor": XEON}}  # before runs recorded their spans
    assert first_epochs_processor(one_sitting) == XEON and trained_on_processors(one_sitting) == [XEON]
    resumed_from_older = {"hardware": {"processor": XEON}, "trained_on": [{"processor": XEON, "epochs": [5, 9]}]}
    assert first_epochs_processor(resumed_from_older) is None  # epochs 1-4: no record says where
    assert first_epochs_processor({}) is None and trained_on_processors({}) == []
