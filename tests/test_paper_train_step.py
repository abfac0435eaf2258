"""The paper-tier speed benchmark's FLOP count and share of peak (benchmarks/paper_train_step.py); its timings
need a GPU and are not tested here."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "paper_train_step.py"
spec = importlib.util.spec_from_file_location("paper_train_step", SCRIPT)
paper_train_step = importlib.util.module_from_spec(spec)
spec.loader.exec_module(paper_train_step)


def test_a_step_s_flops_count_the_forward_and_backward_products():
    layer = torch.nn.Linear(32, 16, bias=False)
    inputs = torch.randn(8, 32)

    def step() -> None:
        layer(inputs).sum().backward()

    # forward 2 N in out; backward: the weight's gradient only (the input needs none), 2 N in out
    assert paper_train_step.step_flops(step) == 2 * (2 * 8 * 32 * 16)


def test_the_peak_is_known_for_h100_and_h200_only():
    assert paper_train_step.peak_tflops("NVIDIA H200", "bf16") == 989.0
    assert paper_train_step.peak_tflops("CPU", "bf16") is None


def test_a_float32_step_is_held_to_the_tf32_peak_where_torch_lets_its_convolutions_use_tf32():
    """cuDNN runs float32 convolutions on TF32 tensor cores by default: against the plain fp32 peak such a step's
    share passed 100%. Where torch forbids TF32 for both kinds of product, the fp32 peak holds."""
    assert torch.backends.cudnn.allow_tf32  # torch's default
    assert paper_train_step.peak_tflops("NVIDIA H200", "fp32") == 495.0
    matmul_tf32 = torch.backends.cuda.matmul.allow_tf32
    try:
        with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, allow_tf32=False):
            torch.backends.cuda.matmul.allow_tf32 = False
            assert paper_train_step.peak_tflops("NVIDIA H100 80GB HBM3", "fp32") == 67.0
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul_tf32


GPU_SPEED = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_speed.py"
speed_spec = importlib.util.spec_from_file_location("gpu_speed", GPU_SPEED)
gpu_speed = importlib.util.module_from_spec(speed_spec)
sys.modules["gpu_speed"] = gpu_speed  # its dataclass looks its module up
speed_spec.loader.exec_module(gpu_speed)


def test_the_gpu_speed_plan_runs_eager_rows_first_and_compiles_last():
    plan = gpu_speed.ordered_plan(["pfenet", "hdmnet"], list(gpu_speed.LEVERS))
    assert plan[:8] == [("pfenet", lever) for lever in gpu_speed.EAGER_LEVERS] + [("hdmnet", "today"), ("hdmnet", "fp32")]
    assert plan[-8:] == [("pfenet", "all"), ("hdmnet", "all"), ("pfenet", "compile_graphs"), ("hdmnet", "compile_graphs"),
                         ("pfenet", "compile"), ("hdmnet", "compile"), ("pfenet", "today_end"), ("hdmnet", "today_end")]
    assert gpu_speed.ordered_plan(["bam"], ["today"]) == [("bam", "today")]  # nothing to compare: no second reference
    assert gpu_speed.settings("all") == {"compile": True, "channels_last": True, "fused": True}
    assert gpu_speed.settings("compile_graphs")["compile_mode"] == "reduce-overhead"  # CUDA graphs of the regions
    assert gpu_speed.loop_of("trainer") == "trainer" and gpu_speed.loop_of("all") == "pinned"


def test_gpu_speed_smoke_times_the_eager_levers_of_a_toy_hdmnet(monkeypatch, capsys, tmp_path):
    """The whole script on a toy HDMNet (the paper models cost minutes of this CPU): every eager row, its output
    check and the table; the compiled rows past a zero budget are skipped, and said so. The report holds the
    printed table, the command and the machine."""
    from fsslib.config import make_config
    from fsslib.methods import build_method

    def toy(method, batch_size, shots, image_size, device, heads):
        cfg = make_config(method=method, smoke=True, batch_size=batch_size, shots=shots, image_size=image_size,
                          device="cpu", options={"base_learner": "random"})
        torch.manual_seed(0)
        return cfg, build_method(cfg)

    monkeypatch.setattr(gpu_speed, "build", toy)
    monkeypatch.setattr(gpu_speed, "COMPILE_S", 1e9)  # every compiled row past the budget
    gpu_speed.main(["--device", "cpu", "--image-size", "64", "--steps", "1", "--warmup", "0", "--batch-size", "2",
                    "--methods", "hdmnet", "--out", str(tmp_path / "speed.md")])
    out = capsys.readouterr().out
    report = (tmp_path / "speed.md").read_text()
    assert [line for line in report.splitlines() if line.startswith("| hdmnet |")] == [
        line for line in out.splitlines() if line.startswith("| hdmnet |")]
    assert "Made by `python benchmarks/gpu_speed.py --device cpu" in report
    assert "device cpu, CPU " in report.splitlines()[-1]
    table = [line for line in out.splitlines() if line.startswith("| hdmnet |")]
    assert [line.split(" | ")[1] for line in table] == list(gpu_speed.LEVERS)
    today, *levers, today_end = [line.split(" | ") for line in table]
    for reference in (today, today_end):  # the same step timed first and last; ratios are to their mean
        assert float(reference[2]) > 0 and float(reference[4]) > 0 and reference[7] == "0.0e+00"
    mean_ms = (float(today[2]) + float(today_end[2])) / 2
    for lever in levers[:5]:  # fp32, trainer, no_syncs, channels_last, fused_attention: timed and checked
        assert float(lever[2]) > 0 and float(lever[7]) <= 0.03
        assert float(lever[3]) == pytest.approx(float(lever[2]) / mean_ms, abs=0.01)
    assert all("skipped" in lever[8] for lever in levers[5:])  # compile, all
    assert "today's step" in out and "ratios are to their mean" in out


def test_a_lever_that_breaks_is_a_failed_row_and_the_run_goes_on(monkeypatch, capsys, tmp_path):
    """A compiler error or an out-of-memory in one row must not lose the rows measured before and after it: the row
    says why it failed, the table is printed, and the run exits with an error naming it."""
    def build(method, batch_size, shots, image_size, device, heads):
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 1)
        model.loss = lambda episodes: model(episodes.query_images.flatten(1)[:, :4]).square().mean()
        return SimpleNamespace(image_size=8), model

    real_time_row = gpu_speed.time_row

    def time_row(method, lever, *args):
        if lever == "no_syncs":
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_time_row(method, lever, *args)

    monkeypatch.setattr(gpu_speed, "build", build)
    monkeypatch.setattr(gpu_speed, "time_row", time_row)
    monkeypatch.setattr(gpu_speed, "step_flops", lambda *args: 1e9)
    monkeypatch.setattr(gpu_speed, "make_optimizer", lambda cfg, model: torch.optim.SGD(model.parameters(), lr=0.1))
    monkeypatch.setattr(gpu_speed, "eval_outputs", lambda model, *args: model.weight.detach().clone())
    with pytest.raises(SystemExit, match="no_syncs.*out of memory"):
        gpu_speed.main(["--device", "cpu", "--image-size", "8", "--steps", "1", "--warmup", "0", "--batch-size", "2",
                        "--methods", "pfenet", "--levers", "today", "no_syncs", "channels_last", "--profile",
                        "--out", str(tmp_path / "speed.md")])
    lines = capsys.readouterr().out.splitlines()
    report = (tmp_path / "speed.md").read_text()  # written before the exit: the failed row is a result too
    assert "failed: RuntimeError" in report and "Rows that fail their check: pfenet/no_syncs" in report
    rows = {line.split(" | ")[1]: line for line in lines if line.startswith("| pfenet |")}
    assert list(rows) == ["today", "no_syncs", "channels_last", "today_end"]
    assert "failed: RuntimeError" in rows["no_syncs"] and float(rows["channels_last"].split(" | ")[2]) > 0
    profile = next(line for line in lines if line.startswith("### pfenet:"))  # --profile's report, after the table
    assert "ms / step under the profiler" in profile and "synchronising CUDA calls / step" in profile
    assert any("aten::" in line for line in lines[lines.index(profile):])  # the top ops


def test_a_lever_may_differ_from_today_by_twice_the_bf16_rounding_that_the_fp32_row_measures(
        monkeypatch, capsys, tmp_path):
    """Today's bf16 outputs and a lever's are two roundings of the fp32 ones: a lever passes within twice the fp32
    row's distance (or --tolerance, if larger), and fails beyond it."""
    differences = {"today": 0.0, "fp32": 0.04, "channels_last": 0.07, "no_syncs": 0.09, "today_end": 0.0}

    def time_row(method, lever, *args):
        return gpu_speed.Row(method, lever, ms=10.0, difference=differences[lever])

    monkeypatch.setattr(gpu_speed, "build", lambda *args: (SimpleNamespace(image_size=8), torch.nn.Linear(4, 1)))
    monkeypatch.setattr(gpu_speed, "time_row", time_row)
    monkeypatch.setattr(gpu_speed, "step_flops", lambda *args: 1e9)
    monkeypatch.setattr(gpu_speed, "eval_outputs", lambda model, *args: model.weight.detach().clone())
    with pytest.raises(SystemExit) as failure:
        gpu_speed.main(["--device", "cpu", "--image-size", "8", "--batch-size", "2", "--methods", "bam",
                        "--levers", "today", "fp32", "channels_last", "no_syncs", "--out", str(tmp_path / "r.md")])
    assert "bam/no_syncs (outputs differ by 9.0e-02, more than 8.0e-02)" in str(failure.value)
    assert "channels_last" not in str(failure.value) and "fp32" not in str(failure.value)
    assert "bam: fp32 outputs 4.0e-02 from today's bf16 ones" in capsys.readouterr().out


def test_check_compiled_compares_a_compiled_row_s_outputs_before_its_steps(monkeypatch, capsys, tmp_path):
    """A compiled row's outputs are compared with today's only with --check-compiled (it compiles the eval graphs),
    before its steps train the row's copy: the table shows '-' without it and the distance with it. Compiling
    itself is left out (a stand-in applies no setting), so the test times no compiler and the distance is 0."""
    class Tiny(torch.nn.Linear):  # its loss is a method: a row's deep copy trains itself, not the reference
        def loss(self, episodes):
            return self(episodes.query_images.flatten(1)[:, :4]).square().mean()

    def build(method, batch_size, shots, image_size, device, heads):
        torch.manual_seed(0)
        return SimpleNamespace(image_size=8), Tiny(4, 1)

    monkeypatch.setattr(gpu_speed, "build", build)
    monkeypatch.setattr(gpu_speed, "apply_speed_settings", lambda model, **settings: {})
    monkeypatch.setattr(gpu_speed, "step_flops", lambda *args: 1e9)
    monkeypatch.setattr(gpu_speed, "make_optimizer", lambda cfg, model: torch.optim.SGD(model.parameters(), lr=0.1))
    evaluations: list[int] = []

    def eval_outputs(model, *args):
        evaluations.append(id(model))
        return model.weight.detach().clone()

    monkeypatch.setattr(gpu_speed, "eval_outputs", eval_outputs)
    command = ["--device", "cpu", "--image-size", "8", "--steps", "1", "--warmup", "0", "--batch-size", "2",
               "--methods", "bam", "--levers", "today", "compile", "--budget-s", "1e9"]
    for extra, expected in (([], "-"), (["--check-compiled"], "0.0e+00")):  # after its steps: 2.4e-01
        gpu_speed.main(command + extra + ["--out", str(tmp_path / "r.md")])
        row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| bam | compile |"))
        assert row.split(" | ")[7] == expected
    # each run evaluates the reference, today and today_end once; the checked compiled row three times (its graphs
    # replayed), the unchecked one never
    assert len(evaluations) == 3 + (3 + 3)
    assert gpu_speed.estimate_s("bam", "compile", 1, 0, 10.0, check_compiled=True) == pytest.approx(
        gpu_speed.estimate_s("bam", "compile", 1, 0, 10.0) + 10.0)


LOADER = Path(__file__).resolve().parent.parent / "benchmarks" / "paper_loader.py"
loader_spec = importlib.util.spec_from_file_location("paper_loader", LOADER)
paper_loader = importlib.util.module_from_spec(loader_spec)
loader_spec.loader.exec_module(paper_loader)


def test_the_loader_benchmark_reads_its_fabricated_pascal_root(tmp_path):
    root = paper_loader.fabricate(tmp_path / "VOC2012", 12)
    wall, per_cpu = paper_loader.loader_rates(root, 0, episodes=4, shots=1, image_size=64, batch_size=2)
    assert wall > 0 and per_cpu > 0


def calls_of_a_gpu_script(script: str, tmp_path: Path, **env: str) -> list[list[str]]:
    """The python3 calls a GPU script makes, each as its arguments: a stand-in python3 on the PATH records them
    (the scripts run on a lent GPU only); ``env`` adds to the environment (``OUT`` is tmp_path / "out")."""
    import os
    import subprocess

    calls = tmp_path / "calls.txt"
    stand_in = tmp_path / "bin" / "python3"
    stand_in.parent.mkdir()
    stand_in.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    stand_in.chmod(0o755)
    subprocess.run(["bash", str(GPU_SPEED.parent / script)], check=True, capture_output=True,
                   env={**os.environ, "PATH": f"{stand_in.parent}:{os.environ['PATH']}", "OUT": str(tmp_path / "out"),
                        **env})
    return [line.split() for line in calls.read_text().splitlines()]


def declared_options(path: Path) -> set[str]:
    """The options a benchmark script declares, and the report's (benchmarks/timing.py) where it adds them."""
    import re

    text = path.read_text()
    shared = GPU_SPEED.parent / "timing.py" if "add_report_options(" in text else None
    return set(re.findall(r'add_argument\("(--[a-z-]+)"', text + (shared.read_text() if shared else "")))


def test_the_cuda_graph_check_runs_each_method_in_its_own_process_with_options_it_has(tmp_path):
    """benchmarks/gpu_graphs_check.sh is run on a lent GPU only: on the CPU, a stand-in python3 records its calls,
    one per method, each checking the compiled outputs and writing its own report into OUT."""
    recorded = calls_of_a_gpu_script("gpu_graphs_check.sh", tmp_path)
    assert [call[call.index("--methods") + 1] for call in recorded] == ["hdmnet", "bam", "piclip", "pfenet"]
    assert all(call[0] == "benchmarks/gpu_speed.py" and "--check-compiled" in call and "compile_graphs" in call
               for call in recorded)
    assert [call[call.index("--out") + 1] for call in recorded] == [
        str(tmp_path / "out" / f"graphs_{method}.md") for method in ("hdmnet", "bam", "piclip", "pfenet")]
    assert all({a for a in call if a.startswith("--")} <= declared_options(GPU_SPEED) for call in recorded)


def test_the_gpu_session_calls_its_scripts_with_options_they_have(tmp_path):
    """benchmarks/gpu_session.sh is run on a lent GPU only: on the CPU, a stand-in python3 records its six calls,
    and every option it passes is one its script declares."""
    recorded = calls_of_a_gpu_script("gpu_session.sh", tmp_path, OFFICIAL="/official")
    assert [call[0] for call in recorded] == ["benchmarks/gpu_speed.py", "benchmarks/official_speed.py",
                                              "benchmarks/official_hdmnet_speed.py", "benchmarks/paper_loader.py",
                                              "benchmarks/qgnet_prior_step.py", "benchmarks/qgnet_prior_loader.py"]
    assert recorded[1][recorded[1].index("--official") + 1] == "/official/PFENet"
    assert [call[call.index("--out") + 1] for call in recorded] == [  # each script writes its report into OUT
        str(tmp_path / "out" / name) for name in ("gpu_speed.md", "official_pfenet.md", "official_hdmnet.md",
                                                  "paper_loader.md", "qgnet_prior_step.md", "qgnet_prior_loader.md")]
    for script, *arguments in recorded:
        declared = declared_options(GPU_SPEED.parents[1] / script)
        if "official" in script:  # the official comparisons' options live in official_speed.py
            declared |= declared_options(GPU_SPEED.parent / "official_speed.py")
        assert {a for a in arguments if a.startswith("--")} <= declared, script
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [
        "gpu_speed.txt", "official_hdmnet.txt", "official_pfenet.txt", "paper_loader.txt", "qgnet_prior_loader.txt",
        "qgnet_prior_step.txt"]
