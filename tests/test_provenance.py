"""What a run records about the machine that made it (fsslib.provenance)."""
from __future__ import annotations

import platform
from pathlib import Path

import torch

from fsslib.provenance import cpu_model, hardware, vector_instructions


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
